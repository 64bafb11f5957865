package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofanout/fanout"
)

// Herd is the retry-herd workload: Keys calls through fanout.Run to a
// local HTTP server with a fixed-window request budget, which answers 429
// with the time left in its window once the budget is spent. Every call
// that waits exactly what the server asked retries at the same instant,
// when the next window opens, and the budget turns most of them away
// again; [HerdCounts.Repeat429] counts those repeats.
//
// The budget is an LLM API's requests per minute scaled down so that a
// run takes seconds: Budget requests per Window, 20 per second by
// default; a Window of a minute gives the real per-minute form (where a
// Retry-After past RetryPolicy's default MaxWait of 30 s makes fanout give
// up on the key rather than wait).
type Herd struct {
	Keys        int // calls, one key each
	Limit       int // fanout.WithLimit
	MaxAttempts int // fanout.RetryPolicy.MaxAttempts

	Budget  int           // requests the server admits per window
	Window  time.Duration // the budget's fixed window
	Service time.Duration // how long the server takes over an admitted request

	// RetryAfterMs makes the server give its delay as retry-after-ms, to
	// the millisecond, rather than as Retry-After in whole seconds rounded
	// up.
	RetryAfterMs bool
	// IgnoreDelay strips the server's delay from every 429 before fanout
	// sees it, so that only the exponential backoff applies and no
	// Throttle is paused: the plain-backoff variant.
	IgnoreDelay bool
}

// DefaultHerd is the workload of BenchmarkHerd: 200 calls, 50 at a time,
// up to 6 attempts each, against 20 requests per second served in 5 ms.
// At least 10 s pass before all 200 can succeed.
func DefaultHerd() Herd {
	return Herd{Keys: 200, Limit: 50, MaxAttempts: 6, Budget: 20, Window: time.Second, Service: 5 * time.Millisecond}
}

// HerdCounts is what one run of a [Herd] measured.
type HerdCounts struct {
	Succeeded int           // keys that got a 200
	Hits      int           // requests the server received
	TooMany   int           // requests answered 429
	Repeat429 int           // 429s to a key that had already had one
	Wall      time.Duration // the fanout.Run call
}

// Run starts the server, fans the calls out to it and counts. Its error
// is nil when every key either succeeded or ran out of attempts on 429s;
// any other failure (a refused connection, say) would make the counts
// meaningless.
func (h Herd) Run(ctx context.Context) (HerdCounts, error) {
	srv := NewHerdServer(h.Budget, h.Window, h.Service, h.RetryAfterMs)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: h.Limit}}
	defer client.CloseIdleConnections()

	start := time.Now()
	rs, _ := fanout.Run(ctx, h.tasks(client, ts.URL),
		fanout.WithLimit(h.Limit),
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: h.MaxAttempts}),
		fanout.WithRequestLimit(fanout.NewThrottle(nil)),
	)
	wall := time.Since(start)
	if err := onlyTooMany(rs); err != nil {
		return HerdCounts{}, err
	}
	c := srv.Counts()
	c.Succeeded, c.Wall = rs.Succeeded(), wall
	return c, nil
}

// tasks makes one call per key to base/KEY, so that the server can tell
// a key's repeated 429s from first ones.
func (h Herd) tasks(client *http.Client, base string) []fanout.Task[struct{}] {
	keys := Keys(h.Keys)
	tasks := make([]fanout.Task[struct{}], len(keys))
	for i, k := range keys {
		tasks[i] = fanout.Task[struct{}]{Key: k, Do: func(ctx context.Context) (struct{}, error) {
			return struct{}{}, h.call(ctx, client, base+"/"+k)
		}}
	}
	return tasks
}

// call makes one request and returns fanout.CheckResponse's verdict on
// it, less the server's delay when h ignores it.
func (h Herd) call(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body) // so the connection is reused
	err = fanout.CheckResponse(resp)
	if h.IgnoreDelay {
		if herr, ok := errors.AsType[*fanout.HTTPError](err); ok {
			herr.Delay = 0
		}
	}
	return err
}

// onlyTooMany returns an error naming the first key that failed for a
// reason other than a 429.
func onlyTooMany(rs *fanout.Results[struct{}]) error {
	for _, r := range rs.All() {
		if r.Err == nil {
			continue
		}
		herr, ok := errors.AsType[*fanout.HTTPError](r.Err)
		if !ok || herr.StatusCode != http.StatusTooManyRequests {
			return fmt.Errorf("bench: herd key %s: %w", r.Key, r.Err)
		}
	}
	return nil
}

// HerdServer is the server of a [Herd]: it admits at most a
// [FixedWindow]'s budget of requests, answers each admitted one with 200
// after its service time, and the rest at once with 429 and the time left
// in the window. The key is the request's path. A HerdServer is safe for
// concurrent use.
type HerdServer struct {
	service      time.Duration
	retryAfterMs bool

	mu      sync.Mutex
	window  FixedWindow
	limited map[string]bool // keys that have had a 429
	counts  HerdCounts
}

// NewHerdServer returns a server admitting budget requests per window,
// the first window starting now.
func NewHerdServer(budget int, window, service time.Duration, retryAfterMs bool) *HerdServer {
	return &HerdServer{
		service:      service,
		retryAfterMs: retryAfterMs,
		window:       FixedWindow{Budget: budget, Window: window, Start: time.Now()},
		limited:      map[string]bool{},
	}
}

// ServeHTTP answers one request, 200 or 429.
func (s *HerdServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	left, ok := s.admit(strings.TrimPrefix(r.URL.Path, "/"), time.Now())
	if !ok {
		setRetryAfter(w.Header(), left, s.retryAfterMs)
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	time.Sleep(s.service)
	w.WriteHeader(http.StatusOK)
}

// admit counts a request for key arriving at now and reports whether the
// budget allows it; when not, left is the time until the window ends.
func (s *HerdServer) admit(key string, now time.Time) (left time.Duration, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts.Hits++
	left, ok = s.window.Admit(now)
	if ok {
		return 0, true
	}
	s.counts.TooMany++
	if s.limited[key] {
		s.counts.Repeat429++
	}
	s.limited[key] = true
	return left, false
}

// Counts returns the server's Hits, TooMany and Repeat429 so far.
func (s *HerdServer) Counts() HerdCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// setRetryAfter writes the delay as real servers do: Retry-After in whole
// seconds, rounded up so that a client waiting that long finds the window
// over, or retry-after-ms, rounded up to the millisecond.
func setRetryAfter(h http.Header, left time.Duration, ms bool) {
	if ms {
		h.Set("Retry-After-Ms", strconv.FormatInt(ceilDiv(left, time.Millisecond), 10))
		return
	}
	h.Set("Retry-After", strconv.FormatInt(ceilDiv(left, time.Second), 10))
}

func ceilDiv(d, unit time.Duration) int64 {
	return int64(math.Ceil(float64(d) / float64(unit)))
}

// FixedWindow is a fixed-window request budget: at most Budget requests
// in each Window, the windows following one another from Start. A
// FixedWindow is not safe for concurrent use.
type FixedWindow struct {
	Budget int
	Window time.Duration
	Start  time.Time

	current int64 // index of the window that used holds
	used    int
}

// Admit counts a request arriving at now. It reports whether the budget
// of now's window allows it, and if not, the time until that window ends.
// A request stamped before the latest window seen counts against that
// window: concurrent callers may present their times a little out of
// order.
func (w *FixedWindow) Admit(now time.Time) (left time.Duration, ok bool) {
	elapsed := now.Sub(w.Start)
	if i := int64(elapsed / w.Window); i > w.current {
		w.current, w.used = i, 0
	}
	if w.used < w.Budget {
		w.used++
		return 0, true
	}
	return time.Duration(w.current+1)*w.Window - elapsed, false
}
