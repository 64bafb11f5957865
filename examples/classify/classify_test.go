package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDataset(t *testing.T) {
	a, b := Dataset(300, 7), Dataset(300, 7)
	if len(a) != 300 {
		t.Fatalf("got %d items, want 300", len(a))
	}
	seen := map[string]int{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("item %d differs between two runs of the same seed: %+v, %+v", i, a[i], b[i])
		}
		if a[i].ID != i || a[i].Text == "" {
			t.Errorf("item %d: %+v", i, a[i])
		}
		seen[a[i].Label]++
	}
	for _, l := range labels {
		if seen[l] < 50 {
			t.Errorf("%d %s items of 300, want a fair share", seen[l], l)
		}
	}
	if Dataset(300, 8)[0] == a[0] && Dataset(300, 8)[1] == a[1] {
		t.Error("another seed gave the same texts")
	}
}

func TestScore(t *testing.T) {
	tests := []struct {
		give string
		want string
	}{
		{give: "The kettle was great.", want: Positive},
		{give: "I love this coffee.", want: Positive},
		{give: "Not terrible at all: the jacket was lovely.", want: Positive},
		{give: "The laptop was awful.", want: Negative},
		{give: "The pizza was not great, quite slow really.", want: Negative},
		{give: "The jacket is blue.", want: Neutral},
		{give: "My delivery arrived on Monday.", want: Neutral},
		// Known misses of a lexicon: words it lacks, and mixed praise.
		{give: "The museum tour was stellar.", want: Neutral},
		{give: "The app update looked great, but it was terrible.", want: Neutral},
	}
	for _, tt := range tests {
		if got := labelOf(Score(tt.give)); got != tt.want {
			t.Errorf("%q: got %s (score %v), want %s", tt.give, got, Score(tt.give), tt.want)
		}
	}
}

func TestParseLabel(t *testing.T) {
	tests := []struct {
		give string
		want string
	}{
		{give: "positive", want: Positive},
		{give: "Positive.", want: Positive},
		{give: "  NEGATIVE\n", want: Negative},
		{give: "neutral, mostly", want: Neutral},
		{give: "I would say positive", want: Unclear},
		{give: "", want: Unclear},
	}
	for _, tt := range tests {
		if got := parseLabel(tt.give); got != tt.want {
			t.Errorf("parseLabel(%q) = %s, want %s", tt.give, got, tt.want)
		}
	}
}

func TestLexicon(t *testing.T) {
	item := Item{ID: 3, Text: "The kettle was great.", Label: Positive}
	t.Run("sleeps a simulated latency, the same for the same query", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := &Lexicon{Latency: 40 * time.Millisecond, Seed: 1}
			var took []time.Duration
			for _, sample := range []int{1, 1, 2} {
				start := time.Now()
				got, err := l.Classify(t.Context(), Query{Item: item, Sample: sample, Try: 1})
				if err != nil || got != Positive {
					t.Fatalf("got %q, %v; want positive", got, err)
				}
				took = append(took, time.Since(start))
			}
			for _, d := range took {
				if d < 20*time.Millisecond || d >= 60*time.Millisecond {
					t.Errorf("took %v, want 20 ms to 60 ms", d)
				}
			}
			if took[0] != took[1] {
				t.Errorf("the same query took %v, then %v", took[0], took[1])
			}
		})
	})
	t.Run("returns when the context ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := &Lexicon{Latency: time.Hour}
			ctx, cancel := context.WithTimeoutCause(t.Context(), time.Second, fanout.ErrTaskTimeout)
			defer cancel()
			_, err := l.Classify(ctx, Query{Item: item, Sample: 1, Try: 1})
			if !errors.Is(err, fanout.ErrTaskTimeout) {
				t.Errorf("got %v, want the context's cause", err)
			}
		})
	})
	t.Run("fails only first tries", func(t *testing.T) {
		l := &Lexicon{FailRate: 1}
		if _, err := l.Classify(t.Context(), Query{Item: item, Sample: 1, Try: 1}); !errors.Is(err, ErrOverloaded) {
			t.Errorf("first try: got %v, want ErrOverloaded", err)
		}
		if _, err := l.Classify(t.Context(), Query{Item: item, Sample: 1, Try: 2}); err != nil {
			t.Errorf("second try: %v", err)
		}
	})
	t.Run("noise makes samples of an unclear text disagree", func(t *testing.T) {
		l := &Lexicon{Noise: 0.5}
		unclear := Item{ID: 9, Text: "The jacket is blue."}
		got := map[string]int{}
		for s := 1; s <= 200; s++ {
			label, _ := l.Classify(t.Context(), Query{Item: unclear, Sample: s, Try: 1})
			got[label]++
		}
		if got[Neutral] < 100 || got[Neutral] == 200 {
			t.Errorf("labels of 200 samples: %v; want mostly, not only, neutral", got)
		}
	})
}

// script answers each sample of a text as told, after the sample's number
// in milliseconds, and counts the calls.
type script struct {
	mu      sync.Mutex
	answers map[int]string // by sample; "fail" fails
	calls   int
}

func (s *script) Classify(ctx context.Context, q Query) (string, error) {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	select {
	case <-time.After(time.Duration(q.Sample) * time.Millisecond):
	case <-ctx.Done():
		return "", context.Cause(ctx)
	}
	if a := s.answers[q.Sample]; a != "fail" {
		return a, nil
	}
	return "", errors.New("no answer")
}

func (s *script) Name() string { return "script" }

func TestVoter(t *testing.T) {
	item := Item{ID: 1, Text: "text", Label: Positive}
	tests := []struct {
		name        string
		inFlight    int
		answers     map[int]string
		wantLabel   string
		wantStarted int
		wantStopped int
		wantErr     bool
	}{
		{name: "three alike decide, two samples are saved", inFlight: 1,
			answers:   map[int]string{1: "Positive", 2: "positive.", 3: "positive", 4: "negative", 5: "negative"},
			wantLabel: Positive, wantStarted: 3, wantStopped: 2},
		{name: "a dissent costs one more sample", inFlight: 1,
			answers:   map[int]string{1: "positive", 2: "negative", 3: "positive", 4: "positive", 5: "negative"},
			wantLabel: Positive, wantStarted: 4, wantStopped: 1},
		{name: "a split goes to the end", inFlight: 1,
			answers:   map[int]string{1: "positive", 2: "negative", 3: "neutral", 4: "negative", 5: "positive"},
			wantLabel: Positive, wantStarted: 5, wantStopped: 0}, // a tie goes to the earliest sample
		{name: "all at once, the samples still running are cancelled", inFlight: 5,
			answers:   map[int]string{1: "negative", 2: "negative", 3: "negative", 4: "positive", 5: "positive"},
			wantLabel: Negative, wantStarted: 5, wantStopped: 2},
		{name: "failed samples cast no vote", inFlight: 1,
			answers:   map[int]string{1: "fail", 2: "neutral", 3: "fail", 4: "fail", 5: "positive"},
			wantLabel: Neutral, wantStarted: 5, wantStopped: 0},
		{name: "with no vote at all, the text fails", inFlight: 2,
			answers: map[int]string{1: "fail", 2: "fail", 3: "fail", 4: "fail", 5: "fail"},
			wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &script{answers: tt.answers}
				// Gather's worker may claim the next sample before the vote
				// has counted the last one. A rate limiter, as the example
				// has, makes the claimed sample wait, and in the bubble the
				// vote always decides before that wait is over, so the
				// sample is skipped rather than started.
				limiter := rate.NewLimiter(rate.Every(10*time.Millisecond), tt.inFlight)
				v := &Voter{Classifier: s, Samples: 5, InFlight: tt.inFlight,
					Options: []fanout.Option{fanout.WithRateLimit(limiter)}}
				got, err := v.Classify(t.Context(), item)
				if tt.wantErr {
					if err == nil || !strings.Contains(err.Error(), "text 1") {
						t.Fatalf("got %v, want an error naming the text", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if got.Label != tt.wantLabel || got.Started != tt.wantStarted || got.Tally.Stopped != tt.wantStopped {
					t.Errorf("got label %s, %d started, %d stopped; want %s, %d, %d",
						got.Label, got.Started, got.Tally.Stopped, tt.wantLabel, tt.wantStarted, tt.wantStopped)
				}
				if s.calls != got.Started {
					t.Errorf("%d calls, %d samples started", s.calls, got.Started)
				}
			})
		})
	}
}

// TestRun classifies 200 texts offline, in fake time: the outer run holds
// 8 texts at once, each with a vote of 3 samples at once nested inside.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := config{n: 200, samples: 5, inFlight: 3, limit: 8, rps: 100, seed: 1}
		clf := &Lexicon{Noise: 0.5, Latency: 40 * time.Millisecond, FailRate: 0.05, Seed: 1}
		var progress bytes.Buffer
		rep, err := run(t.Context(), c, clf, &progress)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Failed) != 0 {
			t.Fatalf("failed: %v", rep.Failed)
		}
		got := 0
		for _, n := range rep.Got {
			got += n
		}
		if got != 200 {
			t.Errorf("%d labels voted, want 200", got)
		}
		if rep.Correct < 150 {
			t.Errorf("%d of 200 right; the lexicon does better than that", rep.Correct)
		}
		if rep.Started+rep.Saved() != 1000 || rep.Saved() == 0 {
			t.Errorf("%d started + %d saved, want 1000 with some saved", rep.Started, rep.Saved())
		}
		if rep.Calls <= rep.Started || rep.Retries == 0 {
			t.Errorf("%d calls, %d samples started, %d retries: want retries on top", rep.Calls, rep.Started, rep.Retries)
		}
		// The rate limit, 100 calls a second, bounds the wall time.
		if min := time.Duration(rep.Calls-5) * 10 * time.Millisecond; rep.Wall < min {
			t.Errorf("took %v for %d calls at 100/s, want at least %v", rep.Wall, rep.Calls, min)
		}
		wantLine := fmt.Sprintf("classify: 200/200 done, 0 failed, 0 skipped, %d calls, %d retries, 0 hedges in ", rep.Calls, rep.Retries)
		if !strings.HasPrefix(progress.String(), wantLine) || strings.Count(progress.String(), "\n") != 1 {
			t.Errorf("progress wrote %q, want one line starting %q", progress.String(), wantLine)
		}
		var out bytes.Buffer
		rep.Print(&out)
		for _, want := range []string{"200 texts × 5 samples", "accuracy", "saved by early stopping", "wall time"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("summary lacks %q:\n%s", want, out.String())
			}
		}
	})
}
