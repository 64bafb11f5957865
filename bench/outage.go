package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gofanout/fanout"
)

// Outage is the workload of the retry budget and breaker measurements:
// calls arrive at Rate a second, open loop, into a fanout.Group, and are
// retried up to MaxAttempts; the service answers 200 after Service, except
// for Down after Before, when it answers every call 503 at once.
type Outage struct {
	Before, Down, After time.Duration
	Rate                float64
	MaxAttempts         int
	Service             time.Duration
}

// DefaultOutage is 3 s healthy, a 10 s outage, 5 s healthy, 200 calls a
// second, 5 attempts each, 20 ms a call.
func DefaultOutage() Outage {
	return Outage{Before: 3 * time.Second, Down: 10 * time.Second, After: 5 * time.Second,
		Rate: 200, MaxAttempts: 5, Service: 20 * time.Millisecond}
}

// OutageVariant is a way to run an Outage: Guards returns the guards of
// one run, made afresh.
type OutageVariant struct {
	Name   string
	Guards func() []fanout.Guard
}

// BreakerCoolOff is the probe period of the breaker in OutageVariants.
const BreakerCoolOff = 2 * time.Second

// OutageVariants are retries alone, with a RetryBudget (Finagle's 20% and
// 10 a second), with a CircuitBreaker (its defaults, but a cool-off of
// BreakerCoolOff), and with both.
func OutageVariants() []OutageVariant {
	budget := func() fanout.Guard { return fanout.NewRetryBudget(0.2, 10) }
	breaker := func() fanout.Guard {
		return fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{CoolOff: BreakerCoolOff})
	}
	return []OutageVariant{
		{Name: "retries alone", Guards: func() []fanout.Guard { return nil }},
		{Name: "retries + RetryBudget(0.2, 10)", Guards: func() []fanout.Guard { return []fanout.Guard{budget()} }},
		{Name: "retries + RetryBudget(0.2, 0)", Guards: func() []fanout.Guard { return []fanout.Guard{fanout.NewRetryBudget(0.2, 0)} }},
		{Name: "retries + CircuitBreaker", Guards: func() []fanout.Guard { return []fanout.Guard{breaker()} }},
		{Name: "retries + both", Guards: func() []fanout.Guard { return []fanout.Guard{breaker(), budget()} }},
	}
}

// OutageCounts is what one run of an Outage measured.
type OutageCounts struct {
	Name string
	// Calls counts the calls that arrived during the outage; Firsts and
	// Attempts, the first attempts and all attempts that started during
	// it. A call a guard refused made no attempt.
	Calls, Firsts, Attempts int
	// Recovery is how long after the service came back the first call
	// started after that succeeded.
	Recovery time.Duration
	// FailedAfter counts the calls started after the outage that failed.
	FailedAfter int
}

// Run runs the outage with the guards of v.
func (o Outage) Run(ctx context.Context, v OutageVariant) (OutageCounts, error) {
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		time.Sleep(o.Service)
	}))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512}}
	defer client.CloseIdleConnections()

	start := time.Now()
	outageStart, outageEnd := start.Add(o.Before), start.Add(o.Before+o.Down)
	var firsts, attempts atomic.Int64
	opts := []fanout.Option{
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: o.MaxAttempts, InitialInterval: 50 * time.Millisecond, MaxWait: time.Second}),
		fanout.WithObserver(&fanout.Observer{AttemptStart: func(ctx context.Context, a fanout.AttemptInfo) context.Context {
			if now := time.Now(); !now.Before(outageStart) && now.Before(outageEnd) {
				attempts.Add(1)
				if a.Attempt == 1 && !a.Hedge {
					firsts.Add(1)
				}
			}
			return ctx
		}}),
	}
	for _, g := range v.Guards() {
		opts = append(opts, fanout.WithGuard(g))
	}
	g, err := fanout.NewGroup[struct{}](ctx, opts...)
	if err != nil {
		return OutageCounts{}, err
	}
	outage := time.AfterFunc(o.Before, func() { down.Store(true) })
	defer outage.Stop()
	back := time.AfterFunc(o.Before+o.Down, func() { down.Store(false) })
	defer back.Stop()

	added := map[string]time.Time{}
	calls := 0
	total := o.Before + o.Down + o.After
	for i := 0; ; i++ {
		at := start.Add(time.Duration(float64(i) / o.Rate * float64(time.Second)))
		if at.Sub(start) >= total {
			break
		}
		time.Sleep(time.Until(at))
		key := strconv.Itoa(i)
		added[key] = time.Now()
		if !at.Before(outageStart) && at.Before(outageEnd) {
			calls++
		}
		_ = g.Go(key, func(ctx context.Context) (struct{}, error) { return struct{}{}, get(ctx, client, srv.URL) })
	}
	rs, _ := g.Wait()

	r := OutageCounts{Name: v.Name, Calls: calls, Firsts: int(firsts.Load()), Attempts: int(attempts.Load()), Recovery: -1}
	for _, res := range rs.All() {
		at := added[res.Key]
		if at.Before(outageEnd) {
			continue
		}
		if res.Err != nil {
			r.FailedAfter++
			continue
		}
		if d := at.Add(res.Elapsed).Sub(outageEnd); r.Recovery < 0 || d < r.Recovery {
			r.Recovery = d
		}
	}
	return r, nil
}

// get makes one request and returns fanout.CheckResponse's verdict.
func get(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return fanout.CheckResponse(resp)
}
