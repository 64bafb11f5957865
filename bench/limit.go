package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gofanout/fanout"
)

// LimitContender is one way to cap the calls of the limit benchmarks:
// New returns the options of one run, with a limiter of its own, and the
// function that reads its limit (nil for a fixed one).
type LimitContender struct {
	Name string
	New  func() (opts []fanout.Option, limit func() int)
}

// adaptiveCap is the most calls the runs with an adaptive limiter keep
// in flight: the adaptive limiters' Max, and WithLimit's.
const adaptiveCap = 256

// LimitContenders are the ways compared on c: fixed limits of half, once
// and twice the right one, failsafe-go's adaptive limiter as a guard, and
// fanout's AdaptiveLimiter; both adaptive ones start at 10, between 1 and
// 256.
func LimitContenders(c Capacity) []LimitContender {
	right := c.RightLimit()
	fixed := func(name string, n int) LimitContender {
		return LimitContender{Name: fmt.Sprintf("%s (%d)", name, n), New: func() ([]fanout.Option, func() int) {
			return []fanout.Option{fanout.WithLimit(n)}, nil
		}}
	}
	return []LimitContender{
		fixed("fixed, too low", right/2),
		fixed("fixed, right", right),
		fixed("fixed, too high", 2*right),
		{Name: "failsafe-go adaptive", New: func() ([]fanout.Option, func() int) {
			g := NewFailsafeGuard(1, adaptiveCap, 10)
			return []fanout.Option{fanout.WithLimit(adaptiveCap), fanout.WithGuard(g)}, g.L.Limit
		}},
		{Name: "fanout AdaptiveLimiter", New: func() ([]fanout.Option, func() int) {
			l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Initial: 10, Max: adaptiveCap})
			return []fanout.Option{fanout.WithLimit(adaptiveCap), fanout.WithGuard(l)}, l.Limit
		}},
	}
}

// limitPolicy is what every contender runs with: retries that wait what
// a 429 asks, and a Throttle that pauses everyone for it.
func limitPolicy() []fanout.Option {
	return []fanout.Option{
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 20, InitialInterval: 25 * time.Millisecond, MaxWait: 2 * time.Second}),
		fanout.WithRequestLimit(fanout.NewThrottle(nil)),
	}
}

// LimitSteady is what one contender did with a fixed number of calls.
type LimitSteady struct {
	Name      string
	Calls     int
	Succeeded int           // the rest ran out of attempts on 429s and 503s
	Wall      time.Duration // the fanout.Run call
	Capacity  float64       // the hidden capacity, calls a second
	OK        int           // 200 answers
	Overload  int           // 429 and 503 answers
	P50, P99  time.Duration // latency of the successful attempts
	Limit     int           // the limit at the end; 0 for a fixed one
}

// Share is the throughput as a share of the hidden capacity.
func (r LimitSteady) Share() float64 { return float64(r.Succeeded) / r.Wall.Seconds() / r.Capacity }

// OverloadShare is the share of the answers that were 429 or 503.
func (r LimitSteady) OverloadShare() float64 { return float64(r.Overload) / float64(r.OK+r.Overload) }

// RunLimitSteady makes calls calls to a service of capacity c through
// fanout.Run, capped as con says.
func RunLimitSteady(ctx context.Context, c Capacity, calls int, con LimitContender) (LimitSteady, error) {
	srv := NewCapacityServer(c)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * adaptiveCap}}
	defer client.CloseIdleConnections()

	var lat latencies
	tasks := make([]fanout.Task[struct{}], calls)
	for i, k := range Keys(calls) {
		tasks[i] = fanout.Task[struct{}]{Key: k, Do: func(ctx context.Context) (struct{}, error) {
			return struct{}{}, lat.call(ctx, client, ts.URL)
		}}
	}
	opts, limit := con.New()
	start := time.Now()
	rs, _ := fanout.Run(ctx, tasks, append(opts, limitPolicy()...)...)
	r := LimitSteady{Name: con.Name, Calls: calls, Succeeded: rs.Succeeded(), Wall: time.Since(start), Capacity: c.Throughput()}
	if err := onlyOverload(rs); err != nil {
		return r, fmt.Errorf("bench: %s: %w", con.Name, err)
	}
	for _, b := range srv.Bins() {
		r.OK += b.OK
		r.Overload += b.Overload()
	}
	r.P50, r.P99 = lat.quantile(0.5), lat.quantile(0.99)
	if limit != nil {
		r.Limit = limit()
	}
	return r, nil
}

// latencies records the latency of successful calls.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// call makes one request to url and returns fanout.CheckResponse's
// verdict, recording its latency if it succeeded.
func (l *latencies) call(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if err := fanout.CheckResponse(resp); err != nil {
		return err
	}
	d := time.Since(start)
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
	return nil
}

func (l *latencies) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	return l.d[int(q*float64(len(l.d)-1))]
}

// Settling: after a change, the calls are settled from the first moment
// after which every SettleWindow up to the next change succeeds at
// SettleGoodput of the new capacity or more, with at most SettleOverload
// of its answers 429 or 503.
const (
	SettleWindow   = time.Second
	SettleGoodput  = 0.8
	SettleOverload = 0.05
)

// LimitChange is what one contender did while the capacity halved and
// then doubled back.
type LimitChange struct {
	Name  string
	Phase time.Duration // full, half, then full capacity, Phase each
	// Halved and Doubled are how long the calls took to settle after each
	// change; negative if they did not within the Phase.
	Halved, Doubled time.Duration
	// Limits is the median limit of the second half of each phase; zeros
	// for a fixed limit.
	Limits [3]int
	Bins   []Bin
}

// RunLimitChange calls a service of capacity c for 3 × phase, as fast as
// con lets it, halving the capacity after one phase and restoring it after
// the next.
func RunLimitChange(ctx context.Context, c Capacity, phase time.Duration, con LimitContender) (LimitChange, error) {
	srv := NewCapacityServer(c)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * adaptiveCap}}
	defer client.CloseIdleConnections()

	opts, limit := con.New()
	end := srv.Start().Add(3 * phase)
	var lat latencies
	half := time.AfterFunc(time.Until(srv.Start().Add(phase)), func() { srv.SetCapacity(c.Scaled(0.5)) })
	defer half.Stop()
	full := time.AfterFunc(time.Until(srv.Start().Add(2*phase)), func() { srv.SetCapacity(c) })
	defer full.Stop()
	var samples [3][]int
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { sample(srv.Start(), phase, limit, &samples) })

	calls, err := fanout.StreamSeq(ctx, callsUntil(end, client, ts.URL, &lat),
		append(opts, append(limitPolicy(), fanout.WithTimeout(3*phase+10*time.Second))...)...)
	if err != nil {
		return LimitChange{}, err
	}
	for range calls {
	}
	bins := srv.Bins()
	r := LimitChange{Name: con.Name, Phase: phase, Bins: bins,
		Halved:  Settled(bins, phase, 2*phase, c.Scaled(0.5).Throughput()),
		Doubled: Settled(bins, 2*phase, 3*phase, c.Throughput()),
	}
	for i, s := range samples {
		if len(s) > 0 {
			slices.Sort(s)
			r.Limits[i] = s[len(s)/2]
		}
	}
	return r, nil
}

// sample reads limit (if not nil) every BinWidth of the second half of
// each of the three phases from start.
func sample(start time.Time, phase time.Duration, limit func() int, samples *[3][]int) {
	if limit == nil {
		return
	}
	tick := time.NewTicker(BinWidth)
	defer tick.Stop()
	for now := range tick.C {
		at := now.Sub(start)
		i := int(at / phase)
		if i >= 3 {
			return
		}
		if at-time.Duration(i)*phase >= phase/2 {
			samples[i] = append(samples[i], limit())
		}
	}
}

// callsUntil yields calls to url until end.
func callsUntil(end time.Time, client *http.Client, url string, lat *latencies) iter.Seq[fanout.Task[struct{}]] {
	return func(yield func(fanout.Task[struct{}]) bool) {
		for i := 0; time.Now().Before(end); i++ {
			t := fanout.Task[struct{}]{Key: strconv.Itoa(i), Do: func(ctx context.Context) (struct{}, error) {
				return struct{}{}, lat.call(ctx, client, url)
			}}
			if !yield(t) {
				return
			}
		}
	}
}

// Settled returns how long after from the calls counted in bins settled
// at capacity, as SettleWindow, SettleGoodput and SettleOverload say,
// until to; negative if they did not.
func Settled(bins []Bin, from, to time.Duration, capacity float64) time.Duration {
	first, last := int(from/BinWidth), int(to/BinWidth) // bins [first, last)
	per := int(SettleWindow / BinWidth)
	ok := func(i int) bool { // the window of bins [i, i+per)
		var w Bin
		for _, b := range bins[i : i+per] {
			w.OK += b.OK
			w.TooMany += b.TooMany
			w.Unavailable += b.Unavailable
		}
		answers := w.OK + w.Overload()
		return float64(w.OK)/SettleWindow.Seconds() >= SettleGoodput*capacity &&
			answers > 0 && float64(w.Overload()) <= SettleOverload*float64(answers)
	}
	if len(bins) < last {
		return -1
	}
	settled := -1
	for i := last - per; i >= first; i-- {
		if !ok(i) {
			break
		}
		settled = i
	}
	if settled < 0 {
		return -1
	}
	return time.Duration(settled-first) * BinWidth
}

// onlyOverload returns an error naming the first key that failed for a
// reason other than a 429 or a 503, which would make the counts
// meaningless.
func onlyOverload(rs *fanout.Results[struct{}]) error {
	for _, r := range rs.All() {
		if r.Err == nil {
			continue
		}
		herr, ok := errors.AsType[*fanout.HTTPError](r.Err)
		if !ok || (herr.StatusCode != http.StatusTooManyRequests && herr.StatusCode != http.StatusServiceUnavailable) {
			return fmt.Errorf("key %s: %w", r.Key, r.Err)
		}
	}
	return nil
}
