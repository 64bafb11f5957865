package main

import (
	"bytes"
	"context"
	"errors"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// startFake starts fake for the test, with polls a few milliseconds apart.
func startFake(t *testing.T, fake *FakeBatches) *batchAPI {
	t.Helper()
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	return &batchAPI{client: fake.Client(), name: "fake", close: func() {},
		opts: []fanoutanthropic.Option{fanoutanthropic.WithPollInterval(time.Millisecond, 5*time.Millisecond)}}
}

func batchConfig(n, samples int) config {
	return config{n: n, samples: samples, seed: 1, model: "claude-haiku-4-5", batch: true,
		batchSize: fanoutanthropic.MaxBatchRequests}
}

// syncBuffer is the trace's writer: safe to read while RunBatch writes,
// and calling onWrite with each line.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	onWrite func(line string)
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.onWrite != nil {
		b.onWrite(string(p))
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestBatch(t *testing.T) {
	t.Run("every sample is a key, answered and mapped back, and each text is voted on", func(t *testing.T) {
		fake := &FakeBatches{Seed: 1, PerSecond: 1e9} // no noise: a text's samples agree
		api := startFake(t, fake)
		var trace syncBuffer
		rep, err := runBatch(t.Context(), batchConfig(30, 3), api, &trace)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Requests != 90 || rep.Outcomes["succeeded"] != 90 || rep.Failed != 0 {
			t.Errorf("%d requests, outcomes %v, %d failed; want 90 succeeded", rep.Requests, rep.Outcomes, rep.Failed)
		}
		if got := fake.Created(); !slices.Equal(got, []int{90}) || rep.Batches != 1 || rep.Polls < 1 {
			t.Errorf("batches of %v, %d created, %d polls; want one of 90, polled", got, rep.Batches, rep.Polls)
		}
		// The fake returns the results shuffled; mapped back by custom_id,
		// each text gets its own answers, so every vote is unanimous and
		// right wherever the noiseless lexicon is.
		wantCorrect := 0
		for _, it := range Dataset(30, 1) {
			if labelOf(Score(it.Text)) == it.Label {
				wantCorrect++
			}
		}
		if rep.Unanimous != 30 || rep.Correct != wantCorrect || len(rep.NoVote) != 0 {
			t.Errorf("%d unanimous, %d right, %d without a vote; want 30, %d, 0", rep.Unanimous, rep.Correct, len(rep.NoVote), wantCorrect)
		}
		var keys []string
		for _, l := range rep.FirstKeys {
			keys = append(keys, l.Key)
		}
		if !slices.Equal(keys, []string{"0/1", "0/2", "0/3"}) {
			t.Errorf("the first text's keys: %v", keys)
		}
		for _, want := range []string{
			`created\s+msgbatch_01: in_progress, 90 processing`,
			`polled\s+msgbatch_01: ended, 90 succeeded, 0 errored, 0 expired, 0 canceled`,
			`results\s+msgbatch_01: 200 OK, JSONL`,
		} {
			if !regexp.MustCompile(want).MatchString(trace.String()) {
				t.Errorf("the trace lacks %q:\n%s", want, trace.String())
			}
		}
	})

	t.Run("more requests than -batch-size are split into batches sent at once", func(t *testing.T) {
		fake := &FakeBatches{Seed: 1, PerSecond: 1e9}
		api := startFake(t, fake)
		c := batchConfig(10, 5)
		c.batchSize = 20
		rep, err := runBatch(t.Context(), c, api, &syncBuffer{})
		if err != nil {
			t.Fatal(err)
		}
		got := fake.Created()
		slices.Sort(got)
		if !slices.Equal(got, []int{10, 20, 20}) || rep.Batches != 3 || rep.Outcomes["succeeded"] != 50 {
			t.Errorf("batches of %v (%d counted), outcomes %v; want 20, 20 and 10, all succeeded", got, rep.Batches, rep.Outcomes)
		}
	})

	t.Run("errored and expired samples cast no vote, and are listed", func(t *testing.T) {
		fake := &FakeBatches{Seed: 1, Noise: 0.5, ErrorRate: 0.2, ExpireRate: 0.1, PerSecond: 1e9}
		api := startFake(t, fake)
		rep, err := runBatch(t.Context(), batchConfig(40, 5), api, &syncBuffer{})
		if err != nil {
			t.Fatal(err)
		}
		errored, expired := rep.Outcomes["errored"], rep.Outcomes["expired"]
		if errored == 0 || expired == 0 || rep.Outcomes["succeeded"]+errored+expired != 200 || rep.Failed != errored+expired {
			t.Errorf("outcomes %v, %d failed; want some errored and expired among 200", rep.Outcomes, rep.Failed)
		}
		voted := 0
		for _, n := range rep.Got {
			voted += n
		}
		if voted+len(rep.NoVote) != 40 {
			t.Errorf("%d texts voted, %d without a vote; want 40 in all", voted, len(rep.NoVote))
		}
		if len(rep.FailedKeys) != maxFailedShown {
			t.Fatalf("%d failed keys listed, want %d", len(rep.FailedKeys), maxFailedShown)
		}
		for _, l := range rep.FailedKeys {
			switch {
			case l.Outcome == "errored" && l.Detail != "anthropic: api_error: Internal server error (worth sending again)",
				l.Outcome == "expired" && !strings.HasPrefix(l.Detail, "fanoutanthropic: batch request expired (batch msgbatch_01)"):
				t.Errorf("key %s: %s %q", l.Key, l.Outcome, l.Detail)
			}
		}
	})

	t.Run("prices give the cost, at half the Messages API's", func(t *testing.T) {
		fake := &FakeBatches{Seed: 1, PerSecond: 1e9}
		api := startFake(t, fake)
		c := batchConfig(20, 2)
		c.prices = fanoutanthropic.Prices{Input: 1, Output: 5}
		rep, err := runBatch(t.Context(), c, api, &syncBuffer{})
		if err != nil {
			t.Fatal(err)
		}
		var input, output int64 // as the fake counts them
		for _, it := range Dataset(20, 1) {
			input += 2 * int64(8+(len(systemPrompt)+len(it.Text)+3)/4)
			output += 2 * 2
		}
		wantCents := (float64(input)*1 + float64(output)*5) / 1e6 * 100 / 2
		if rep.Cost.Tokens != input+output || math.Abs(rep.Cost.Cents-wantCents) > 1e-9 {
			t.Errorf("cost %v, want %d tokens and %.6f¢", rep.Cost, input+output, wantCents)
		}
		var out bytes.Buffer
		rep.Print(&out)
		for _, want := range []string{"20 texts × 2 samples = 40 requests", "succeeded 40", "accuracy",
			"at the batch price, half the", `text 0     "`, "  0/2      succeeded  "} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("the summary lacks %q:\n%s", want, out.String())
			}
		}
	})

	t.Run("ending the context cancels the batches on the server", func(t *testing.T) {
		fake := &FakeBatches{Seed: 1, PerSecond: 1} // still in progress when the test ends
		api := startFake(t, fake)
		stop := errors.New("user pressed Ctrl-C")
		ctx, cancel := context.WithCancelCause(t.Context())
		defer cancel(nil)
		polled := map[string]bool{} // batch ids; onWrite is called under the buffer's lock
		trace := &syncBuffer{onWrite: func(line string) {
			if _, rest, ok := strings.Cut(line, "polled    "); ok {
				id, _, _ := strings.Cut(rest, ":")
				polled[id] = true
			}
			if len(polled) == 2 { // both batches created: cancel them at once
				cancel(stop)
			}
		}}
		c := batchConfig(10, 3)
		c.batchSize = 20
		rep, err := runBatch(ctx, c, api, trace)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Interrupted || rep.Outcomes["canceled"] != 30 || len(rep.NoVote) != 10 {
			t.Errorf("interrupted %v, outcomes %v, %d texts without a vote; want every key canceled", rep.Interrupted, rep.Outcomes, len(rep.NoVote))
		}
		if got := fake.Canceled(); !slices.Equal(got, []string{"msgbatch_01", "msgbatch_02"}) {
			t.Errorf("batches canceled on the server: %v, want both", got)
		}
		if !strings.HasSuffix(rep.FirstKeys[0].Detail, ": user pressed Ctrl-C") {
			t.Errorf("key %s: %q, want the cause", rep.FirstKeys[0].Key, rep.FirstKeys[0].Detail)
		}
		if !strings.Contains(trace.String(), "canceled  msgbatch_0") {
			t.Errorf("the trace lacks the cancel:\n%s", trace.String())
		}
	})

	t.Run("bad input sends no request", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			give func(*config)
			want string
		}{
			{"no sample", func(c *config) { c.samples = 0 }, "-samples 0: want at least 1"},
			{"a batch size of 0", func(c *config) { c.batchSize = 0 }, "fanoutanthropic: WithBatchLimits(0, "},
			{"a negative price", func(c *config) { c.prices.Input = -1 }, "fanoutanthropic: WithPrices("},
		} {
			t.Run(tt.name, func(t *testing.T) {
				fake := &FakeBatches{PerSecond: 1e9}
				api := startFake(t, fake)
				c := batchConfig(5, 3)
				tt.give(&c)
				rep, err := runBatch(t.Context(), c, api, &syncBuffer{})
				if rep != nil || err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("got %v, %v; want no report and an error containing %q", rep, err, tt.want)
				}
				if len(fake.Created()) != 0 {
					t.Errorf("batches created: %v", fake.Created())
				}
			})
		}
	})
}

func TestOpenBatchAPI(t *testing.T) {
	for _, tt := range []struct {
		name     string
		key      string
		offline  bool
		wantFake bool
	}{
		{name: "without ANTHROPIC_API_KEY, the fake on 127.0.0.1", wantFake: true},
		{name: "with ANTHROPIC_API_KEY and -offline, the fake", key: "sk-test", offline: true, wantFake: true},
		{name: "with ANTHROPIC_API_KEY, Anthropic's API", key: "sk-test"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("ANTHROPIC_API_KEY", tt.key)
			c := batchConfig(1, 1)
			c.offline = tt.offline
			api, err := openBatchAPI(c)
			if err != nil {
				t.Fatal(err)
			}
			defer api.close()
			if got := strings.Contains(api.name, "fake Message Batches API on 127.0.0.1:"); got != tt.wantFake {
				t.Errorf("API %q: fake %v, want %v", api.name, got, tt.wantFake)
			}
		})
	}
}
