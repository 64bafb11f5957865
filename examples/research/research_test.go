package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gofanout/fanout"
	"golang.org/x/time/rate"
)

// events records what an Observer saw, with the time it saw it.
type events struct {
	mu       sync.Mutex
	start    time.Time
	retries  []fanout.RetryInfo
	retryAt  map[string]time.Time
	attempts map[string][]time.Time // AttemptStart times per key
	done     map[string]int         // TaskDone calls per key
}

func newEvents() *events {
	return &events{retryAt: map[string]time.Time{}, attempts: map[string][]time.Time{}, done: map[string]int{}}
}

func (e *events) observer() *fanout.Observer {
	return &fanout.Observer{
		RunStart: func(ctx context.Context, _ int) context.Context {
			e.mu.Lock()
			e.start = time.Now()
			e.mu.Unlock()
			return ctx
		},
		AttemptStart: func(ctx context.Context, a fanout.AttemptInfo) context.Context {
			e.mu.Lock()
			e.attempts[a.Key] = append(e.attempts[a.Key], time.Now())
			e.mu.Unlock()
			return ctx
		},
		Retry: func(_ context.Context, r fanout.RetryInfo) {
			e.mu.Lock()
			e.retries = append(e.retries, r)
			e.retryAt[r.Key] = time.Now()
			e.mu.Unlock()
		},
		TaskDone: func(_ context.Context, ti fanout.TaskInfo) {
			e.mu.Lock()
			e.done[ti.Key]++
			e.mu.Unlock()
		},
	}
}

// testConfig is the demo's configuration with the given hedge delay, and
// no jitter: the backoff's jitter comes from a generator no seed reaches.
func testConfig(client *http.Client, hedge time.Duration, obs ...*fanout.Observer) Config {
	return Config{
		Query:       "tail latency",
		Client:      client,
		Limiter:     fanout.NewThrottle(rate.NewLimiter(20, 8)),
		Retry:       &fanout.RetryPolicy{MaxAttempts: 3, MaxWait: 5 * time.Second, Jitter: -1},
		Hedge:       &fanout.HedgePolicy{Delay: hedge, MaxExtra: 0.5},
		TaskTimeout: 600 * time.Millisecond,
		Timeout:     15 * time.Second,
		Observers:   obs,
	}
}

func source(t *testing.T, r *Report, key string) SourceReport {
	t.Helper()
	i := slices.IndexFunc(r.Sources, func(s SourceReport) bool { return s.Key == key })
	if i < 0 {
		t.Fatalf("no report for %s", key)
	}
	return r.Sources[i]
}

// checkOneResultEach checks that every source has exactly one report, in
// the order given, and that the run reported each key done once.
func checkOneResultEach(t *testing.T, sources []Source, r *Report, ev *events) {
	t.Helper()
	if len(r.Sources) != len(sources) {
		t.Fatalf("got %d reports for %d sources", len(r.Sources), len(sources))
	}
	for i, s := range sources {
		if r.Sources[i].Key != s.Name {
			t.Errorf("report %d is %s, want %s", i, r.Sources[i].Key, s.Name)
		}
		if n := ev.done[s.Name]; n != 1 {
			t.Errorf("%s: TaskDone called %d times, want 1", s.Name, n)
		}
	}
}

// checkGaveUp checks that a source told to wait longer than MaxWait
// failed at its first attempt with the server's *fanout.HTTPError.
func checkGaveUp(t *testing.T, s SourceReport, wantDelay time.Duration) {
	t.Helper()
	var he *fanout.HTTPError
	switch {
	case s.OK():
		t.Errorf("%s succeeded; want a 429 it does not retry", s.Key)
	case !errors.As(s.Err, &he):
		t.Errorf("%s: error %v is not a *fanout.HTTPError", s.Key, s.Err)
	case he.StatusCode != http.StatusTooManyRequests || he.Delay != wantDelay:
		t.Errorf("%s: HTTPError %d asking %v, want 429 asking %v", s.Key, he.StatusCode, he.Delay, wantDelay)
	}
	if s.Attempts != 1 || len(s.Retries) != 0 {
		t.Errorf("%s: %d attempts, %d retries; want 1 attempt and no retry", s.Key, s.Attempts, len(s.Retries))
	}
}

// TestResearchOverLoopback runs against real HTTP servers on 127.0.0.1
// with small real latencies; its checks do not depend on exact timing.
func TestResearchOverLoopback(t *testing.T) {
	fast := [2]time.Duration{time.Millisecond, 5 * time.Millisecond}
	slow := [2]time.Duration{300 * time.Millisecond, 300 * time.Millisecond}
	sources, stop, err := localSources([]profile{
		{name: "web", fast: fast},
		{name: "wiki", fast: fast},
		{name: "forum", fast: fast, refuse: []refusal{tooMany("Retry-After-Ms", "50")}},
		{name: "books", fast: fast, refuse: []refusal{tooMany("Retry-After", "3600")}, refuseAlways: true},
		{name: "archive", fast: fast, tailP: 1, tail: slow},
		{name: "news", fast: fast},
	}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	ev := newEvents()
	cfg := testConfig(client, 50*time.Millisecond, ev.observer())
	cfg.TaskTimeout = 5 * time.Second

	r, err := research(context.Background(), sources, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkOneResultEach(t, sources, r, ev)

	forum := source(t, r, "forum")
	if !forum.OK() || forum.Attempts < 2 {
		t.Errorf("forum: %d attempts, error %v; want a success after a retry", forum.Attempts, forum.Err)
	}
	if len(forum.Retries) != 1 || !forum.Retries[0].ServerDirected || forum.Retries[0].Wait != 50*time.Millisecond {
		t.Errorf("forum retries %+v, want one server-directed wait of 50ms", forum.Retries)
	}
	if forum.Elapsed < 50*time.Millisecond {
		t.Errorf("forum answered after %v, sooner than the 50ms it was told to wait", forum.Elapsed)
	}

	checkGaveUp(t, source(t, r, "books"), time.Hour)

	archive := source(t, r, "archive")
	if archive.Hedges < 1 || !archive.OK() {
		t.Errorf("archive: %d hedges, error %v; want at least one hedge and a success", archive.Hedges, archive.Err)
	}
	if len(r.Merged) == 0 {
		t.Error("no merged answer")
	}
}

// TestDemoInABubble runs the demo's sources, seed 1, through an in-memory
// transport inside a synctest bubble, where every latency, wait and
// timeout is exact.
func TestDemoInABubble(t *testing.T) {
	sources, r, ev := demoInABubble(t)
	checkOneResultEach(t, sources, r, ev)
	for _, s := range r.Sources {
		t.Logf("%-8s %8v attempts=%d hedges=%d limiter=%v retries=%d won=%v err=%v",
			s.Key, s.Elapsed, s.Attempts, s.Hedges, s.LimiterWait, len(s.Retries), s.HedgeWon, s.Err)
	}

	t.Run("scholar waits the second its 429 asks for", func(t *testing.T) {
		s := source(t, r, "scholar")
		if !s.OK() || s.Attempts != 2 {
			t.Fatalf("scholar: %d attempts, error %v; want success at the second", s.Attempts, s.Err)
		}
		if rt := s.Retries; len(rt) != 1 || rt[0].Wait != time.Second || !rt[0].ServerDirected {
			t.Fatalf("scholar retries %+v, want one server-directed wait of 1s", rt)
		}
		if gap := ev.attempts["scholar"][1].Sub(ev.retryAt["scholar"]); gap != time.Second {
			t.Errorf("scholar's second attempt started %v after its 429, want 1s", gap)
		}
	})
	t.Run("forum waits the 300ms its retry-after-ms asks for, plus at most a fifth", func(t *testing.T) {
		s := source(t, r, "forum")
		if rt := s.Retries; !s.OK() || s.Attempts != 2 || len(rt) != 1 || rt[0].Wait < 300*time.Millisecond ||
			rt[0].Wait >= 360*time.Millisecond || !rt[0].ServerDirected {
			t.Fatalf("forum: %d attempts, retries %+v, error %v", s.Attempts, rt, s.Err)
		}
	})
	t.Run("a 429 pauses every source until its Retry-After passes", func(t *testing.T) {
		cooldownEnd := ev.retryAt["scholar"].Add(time.Second)
		for key, starts := range ev.attempts {
			for _, at := range starts {
				if at.After(ev.retryAt["scholar"]) && at.Before(cooldownEnd) {
					t.Errorf("%s started an attempt %v into scholar's 1s cooldown", key, at.Sub(ev.retryAt["scholar"]))
				}
			}
		}
		if news := source(t, r, "news"); news.LimiterWait == 0 {
			t.Error("news's retry did not wait on the shared limiter")
		}
	})
	t.Run("books gives up at once on a Retry-After of an hour", func(t *testing.T) {
		checkGaveUp(t, source(t, r, "books"), time.Hour)
	})
	t.Run("archive is hedged and the hedge wins", func(t *testing.T) {
		s := source(t, r, "archive")
		if !s.OK() || s.Hedges != 1 || !s.HedgeWon {
			t.Errorf("archive: %d hedges, hedge won %v, error %v", s.Hedges, s.HedgeWon, s.Err)
		}
	})
	t.Run("patents times out at every attempt", func(t *testing.T) {
		s := source(t, r, "patents")
		if !errors.Is(s.Err, fanout.ErrTaskTimeout) || s.Attempts-s.Hedges != 3 {
			t.Errorf("patents: %d attempts (%d hedges), error %v; want 3 tries timing out", s.Attempts, s.Hedges, s.Err)
		}
	})
	t.Run("the same seed gives the same outcomes", func(t *testing.T) {
		// Not the same timings: fanout spreads server-directed waits at
		// random, so that the tasks told to wait do not return together.
		_, again, _ := demoInABubble(t)
		for i, s := range again.Sources {
			was := r.Sources[i]
			if s.OK() != was.OK() || s.Attempts != was.Attempts || s.Hedges != was.Hedges {
				t.Errorf("%s: %v %d attempts %d hedges, then %v %d attempts %d hedges", s.Key,
					was.Elapsed, was.Attempts, was.Hedges, s.Elapsed, s.Attempts, s.Hedges)
			}
		}
	})
}

// demoInABubble runs the demo's sources, seed 1, in a synctest bubble.
func demoInABubble(t *testing.T) ([]Source, *Report, *events) {
	var sources []Source
	var r *Report
	ev := newEvents()
	synctest.Test(t, func(t *testing.T) {
		var client *http.Client
		sources, client = memSources(demoProfiles(), 1)
		var err error
		r, err = research(context.Background(), sources, testConfig(client, 150*time.Millisecond, ev.observer()))
		if err != nil {
			t.Fatal(err)
		}
	})
	return sources, r, ev
}

// onceTooMany is a source that answers its first request with a 429 and
// header name: value, then answers normally, at once.
func onceTooMany(name, value string) profile {
	return profile{name: "once", refuse: []refusal{tooMany(name, value)}}
}

// checkRetriedOnce checks a run of the onceTooMany source: two attempts,
// one retry the server directed, of want.
func checkRetriedOnce(t *testing.T, r *Report, ev *events, want time.Duration) {
	t.Helper()
	s := source(t, r, "once")
	if !s.OK() || s.Attempts != 2 {
		t.Fatalf("%d attempts, error %v; want success at the second", s.Attempts, s.Err)
	}
	if len(ev.retries) != 1 {
		t.Fatalf("Retry hook called %d times, want 1", len(ev.retries))
	}
	if rt := ev.retries[0]; rt.Wait != want || !rt.ServerDirected || rt.Attempt != 1 {
		t.Errorf("Retry hook saw %+v, want attempt 1, Wait %v, ServerDirected", rt, want)
	}
	var he *fanout.HTTPError
	if !errors.As(ev.retries[0].Err, &he) || he.StatusCode != http.StatusTooManyRequests {
		t.Errorf("retried error %v, want a 429 *fanout.HTTPError", ev.retries[0].Err)
	}
}

// TestRetryAfterSecondsInABubble: 429 with Retry-After: 1, then 200,
// through the in-memory transport in fake time.
func TestRetryAfterSecondsInABubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sources, client := memSources([]profile{onceTooMany("Retry-After", "1")}, 1)
		ev := newEvents()
		r, err := research(context.Background(), sources, testConfig(client, time.Minute, ev.observer()))
		if err != nil {
			t.Fatal(err)
		}
		checkRetriedOnce(t, r, ev, time.Second)
		if got := source(t, r, "once").Elapsed; got != time.Second {
			t.Errorf("answered after %v, want exactly 1s", got)
		}
	})
}

// TestRetryAfterSecondsOverLoopback: the same against a real HTTP server
// on 127.0.0.1, end to end; it takes the second it is told to wait.
func TestRetryAfterSecondsOverLoopback(t *testing.T) {
	sources, stop, err := localSources([]profile{onceTooMany("Retry-After", "1")}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	ev := newEvents()
	r, err := research(context.Background(), sources, testConfig(client, time.Minute, ev.observer()))
	if err != nil {
		t.Fatal(err)
	}
	checkRetriedOnce(t, r, ev, time.Second)
	if got := source(t, r, "once").Elapsed; got < time.Second {
		t.Errorf("answered after %v, sooner than the 1s it was told to wait", got)
	}
}

// TestRetryAfterSecondsOverLoopbackInABubble: the same against a real
// server on 127.0.0.1, with the client in a synctest bubble, so the 1s
// wait is fake time. The server runs outside the bubble. The fake clock
// stands still while a bubbled goroutine is in network I/O, which is not
// durably blocking, so the server's real latency costs no fake time; for
// the same reason keep-alives are off, since a connection idling on its
// socket would stop the clock for good.
func TestRetryAfterSecondsOverLoopbackInABubble(t *testing.T) {
	sources, stop, err := localSources([]profile{onceTooMany("Retry-After", "1")}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	synctest.Test(t, func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		ev := newEvents()
		r, err := research(context.Background(), sources, testConfig(client, time.Minute, ev.observer()))
		if err != nil {
			t.Fatal(err)
		}
		checkRetriedOnce(t, r, ev, time.Second)
		if got := source(t, r, "once").Elapsed; got != time.Second {
			t.Errorf("answered after %v of fake time, want exactly 1s", got)
		}
	})
}

func TestQueryURL(t *testing.T) {
	tests := []struct{ give, want string }{
		{give: "http://127.0.0.1:1/search", want: "http://127.0.0.1:1/search?q=tail+latency%2Fp99"},
		{give: "https://example.org/s?lang=en", want: "https://example.org/s?lang=en&q=tail+latency%2Fp99"},
		{give: "https://example.org/w?search={q}&go=1", want: "https://example.org/w?search=tail+latency%2Fp99&go=1"},
	}
	for _, tt := range tests {
		if got := queryURL(tt.give, "tail latency/p99"); got != tt.want {
			t.Errorf("queryURL(%q) = %q, want %q", tt.give, got, tt.want)
		}
	}
}

func TestHits(t *testing.T) {
	tests := []struct {
		name string
		give string
		want []Hit
	}{
		{name: "json", give: `{"hits":[{"title":"a","url":"u1"},{"title":"b","url":"u2"}]}`,
			want: []Hit{{"a", "u1"}, {"b", "u2"}}},
		{name: "html title", give: "<html><head><TITLE>\n  Tail  latency\n</TITLE></head></html>",
			want: []Hit{{"Tail latency", "https://src"}}},
		{name: "first line", give: "\n plain answer \nmore", want: []Hit{{"plain answer", "https://src"}}},
		{name: "empty", give: "  ", want: nil},
	}
	for _, tt := range tests {
		if got := hits("https://src", []byte(tt.give)); !slices.Equal(got, tt.want) {
			t.Errorf("%s: hits = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestMergeRanksAgreementFirst(t *testing.T) {
	ok := func(key string, urls ...string) fanout.Result[Answer] {
		var a Answer
		for _, u := range urls {
			a.Hits = append(a.Hits, Hit{Title: u, URL: u})
		}
		return fanout.Result[Answer]{Key: key, Value: a}
	}
	results := []fanout.Result[Answer]{
		ok("a", "x", "y", "z"),
		ok("b", "y", "w"),
		{Key: "c", Err: errors.New("down")},
		ok("d", "w", "y", "y"), // a repeated hit counts once per source
	}
	got := merge(results)
	var urls []string
	for _, m := range got {
		urls = append(urls, m.URL)
	}
	if want := []string{"y", "w", "x", "z"}; !slices.Equal(urls, want) {
		t.Errorf("merged order %v, want %v", urls, want)
	}
	if want := []string{"a", "b", "d"}; !slices.Equal(got[0].Sources, want) {
		t.Errorf("y found by %v, want %v", got[0].Sources, want)
	}
}
