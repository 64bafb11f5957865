package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

// outcomes admits one attempt per error to b, and ends each with its
// error: nil for a success.
func outcomes(t *testing.T, b *fanout.CircuitBreaker, errs ...error) {
	t.Helper()
	for _, err := range errs {
		done, aerr := b.Admit(context.Background(), fanout.Admission{Key: "k", Attempt: 1})
		require.NoError(t, aerr)
		done(fanout.Outcome{Err: err, Elapsed: time.Millisecond})
	}
}

func repeat(err error, n int) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

func TestCircuitBreaker(t *testing.T) {
	t.Run("opens once MinFailures failures make FailureRatio of the window", func(t *testing.T) {
		tests := []struct {
			name      string
			failures  int
			successes int
			want      fanout.BreakerState
		}{
			{"5 of 5", 5, 0, fanout.BreakerOpen},
			{"4 of 4", 4, 0, fanout.BreakerClosed},
			{"5 of 10", 5, 5, fanout.BreakerOpen},
			{"5 of 11", 5, 6, fanout.BreakerClosed},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{})
					outcomes(t, b, repeat(nil, tt.successes)...)
					outcomes(t, b, repeat(err503, tt.failures)...)
					assert.Equal(t, tt.want, b.State())
				})
			})
		}
	})
	t.Run("counts only the errors that say the dependency is unhealthy", func(t *testing.T) {
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		status := func(code int) error { return &fanout.HTTPError{StatusCode: code, Status: fmt.Sprint(code)} }
		tests := []struct {
			name string
			ctx  context.Context
			give error
			want fanout.BreakerState
		}{
			{"500", nil, status(500), fanout.BreakerOpen},
			{"503", nil, status(503), fanout.BreakerOpen},
			{"429", nil, status(429), fanout.BreakerOpen},
			{"408", nil, status(408), fanout.BreakerOpen},
			{"a per-attempt timeout", nil, fmt.Errorf("%w: %w", fanout.ErrTaskTimeout, context.DeadlineExceeded), fanout.BreakerOpen},
			{"the task's own deadline", nil, fmt.Errorf("call: %w", context.DeadlineExceeded), fanout.BreakerOpen},
			{"a refused connection", nil, &url.Error{Op: "Get", URL: "http://x", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, fanout.BreakerOpen},
			{"a connection cut mid-answer", nil, &url.Error{Op: "Get", URL: "http://x", Err: io.EOF}, fanout.BreakerOpen},
			{"404", nil, status(404), fanout.BreakerClosed},
			{"400", nil, status(400), fanout.BreakerClosed},
			{"an error of the task's own", nil, errors.New("bad JSON"), fanout.BreakerClosed},
			{"a 503 after the run stopped", cancelled, status(503), fanout.BreakerClosed},
			{"a lost hedge race", nil, fmt.Errorf("%w: %w", fanout.ErrHedgeLost, context.Canceled), fanout.BreakerClosed},
			{"a panic", nil, &fanout.PanicError{Value: status(503)}, fanout.BreakerClosed},
			{"a refusal by a retry budget after it", nil, fanout.ErrRetryBudgetExceeded, fanout.BreakerClosed},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{MinFailures: 1})
					ctx := tt.ctx
					if ctx == nil {
						ctx = context.Background()
					}
					done, err := b.Admit(ctx, fanout.Admission{Key: "k", Attempt: 1})
					require.NoError(t, err)
					done(fanout.Outcome{Err: tt.give, Elapsed: time.Millisecond})
					assert.Equal(t, tt.want, b.State())
				})
			})
		}
	})
	t.Run("a FailureIf of the caller's decides instead", func(t *testing.T) {
		flaky := errors.New("flaky")
		b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{MinFailures: 1, FailureIf: func(err error) bool { return errors.Is(err, flaky) }})
		outcomes(t, b, err503)
		assert.Equal(t, fanout.BreakerClosed, b.State())
		outcomes(t, b, flaky)
		assert.Equal(t, fanout.BreakerOpen, b.State())
	})
	t.Run("fails fast while open, saying until when", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{Name: "llm", CoolOff: 30 * time.Second})
			outcomes(t, b, repeat(err503, 5)...)
			until := time.Now().Add(30 * time.Second)
			time.Sleep(10 * time.Second)
			done, err := b.Admit(context.Background(), fanout.Admission{Key: "k", Attempt: 1})
			assert.Nil(t, done)
			assert.ErrorIs(t, err, fanout.ErrCircuitOpen)
			var open *fanout.CircuitOpenError
			require.ErrorAs(t, err, &open)
			assert.Equal(t, &fanout.CircuitOpenError{Name: "llm", Until: until}, open)
			assert.EqualError(t, err, `fanout: circuit "llm" open until `+until.Format("15:04:05.000"))
		})
	})
	t.Run("after the cool-off, Probes successful probes close it, and the attempts held meanwhile go", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{CoolOff: 5 * time.Second, Probes: 2})
			outcomes(t, b, repeat(err503, 5)...)
			time.Sleep(5*time.Second - time.Nanosecond)
			assert.Equal(t, fanout.BreakerOpen, b.State())
			time.Sleep(time.Nanosecond)
			assert.Equal(t, fanout.BreakerHalfOpen, b.State())
			probes := admitN(t, b, 2)
			var held error = errors.New("still held")
			go func() { _, held = b.Admit(context.Background(), fanout.Admission{Key: "k", Attempt: 1}) }()
			probes[0](fanout.Outcome{Elapsed: time.Millisecond})
			synctest.Wait()
			assert.EqualError(t, held, "still held")
			assert.Equal(t, fanout.BreakerHalfOpen, b.State())
			probes[1](fanout.Outcome{Elapsed: time.Millisecond})
			synctest.Wait()
			assert.NoError(t, held)
			assert.Equal(t, fanout.BreakerClosed, b.State())
			outcomes(t, b, repeat(err503, 4)...)
			assert.Equal(t, fanout.BreakerClosed, b.State(), "the window started afresh")
		})
	})
	t.Run("a failed probe opens it for another cool-off, and the held attempts are refused", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{CoolOff: 5 * time.Second})
			outcomes(t, b, repeat(err503, 5)...)
			time.Sleep(5 * time.Second)
			probes := admitN(t, b, 3)
			var held error
			go func() { _, held = b.Admit(context.Background(), fanout.Admission{Key: "k", Attempt: 1}) }()
			probes[0](fanout.Outcome{Elapsed: time.Millisecond})
			probes[1](fanout.Outcome{Err: err503, Elapsed: time.Millisecond})
			synctest.Wait()
			assert.Equal(t, fanout.BreakerOpen, b.State())
			assert.ErrorIs(t, held, fanout.ErrCircuitOpen)
			probes[2](fanout.Outcome{Elapsed: time.Millisecond})
			assert.Equal(t, fanout.BreakerOpen, b.State(), "a late probe changes nothing")
			time.Sleep(5 * time.Second)
			assert.Equal(t, fanout.BreakerHalfOpen, b.State())
		})
	})
	t.Run("a held attempt whose context ends leaves with its cause", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{CoolOff: time.Second, Probes: 1})
			outcomes(t, b, repeat(err503, 5)...)
			time.Sleep(time.Second)
			admitN(t, b, 1)
			stop := errors.New("caller gave up")
			ctx, cancel := context.WithCancelCause(context.Background())
			var err error
			go func() { _, err = b.Admit(ctx, fanout.Admission{Key: "k", Attempt: 1}) }()
			synctest.Wait()
			cancel(stop)
			synctest.Wait()
			assert.ErrorIs(t, err, stop)
		})
	})
	t.Run("a probe that says nothing makes room for another", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{CoolOff: time.Second, Probes: 1})
			outcomes(t, b, repeat(err503, 5)...)
			time.Sleep(time.Second)
			admitN(t, b, 1)[0](fanout.Outcome{Err: fmt.Errorf("%w: %w", fanout.ErrStopped, context.Canceled)})
			assert.Equal(t, fanout.BreakerHalfOpen, b.State())
			admitN(t, b, 1)[0](fanout.Outcome{Elapsed: time.Millisecond})
			assert.Equal(t, fanout.BreakerClosed, b.State())
		})
	})
	t.Run("forgets failures older than the Window", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{Window: 10 * time.Second})
			outcomes(t, b, repeat(err503, 4)...)
			time.Sleep(10 * time.Second)
			outcomes(t, b, err503)
			assert.Equal(t, fanout.BreakerClosed, b.State())
			outcomes(t, b, repeat(err503, 3)...)
			assert.Equal(t, fanout.BreakerClosed, b.State())
			outcomes(t, b, err503)
			assert.Equal(t, fanout.BreakerOpen, b.State())
		})
	})
	t.Run("the failures of attempts admitted before it opened do not extend the cool-off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{CoolOff: 5 * time.Second})
			dones := admitN(t, b, 8)
			for _, done := range dones[:5] {
				done(fanout.Outcome{Err: err503, Elapsed: time.Millisecond})
			}
			time.Sleep(4 * time.Second)
			for _, done := range dones[5:] {
				done(fanout.Outcome{Err: err503, Elapsed: time.Millisecond})
			}
			time.Sleep(time.Second)
			assert.Equal(t, fanout.BreakerHalfOpen, b.State())
		})
	})
	t.Run("tells its observer each change of state", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var got []fanout.BreakerInfo
			b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{Name: "llm", CoolOff: time.Second, Probes: 1,
				Observer: &fanout.Observer{Breaker: func(_ context.Context, i fanout.BreakerInfo) { got = append(got, i) }}})
			outcomes(t, b, nil, nil, nil)
			outcomes(t, b, repeat(err503, 5)...)
			until := time.Now().Add(time.Second)
			time.Sleep(time.Second)
			outcomes(t, b, nil)
			assert.Equal(t, []fanout.BreakerInfo{
				{Name: "llm", From: fanout.BreakerClosed, To: fanout.BreakerOpen, Err: err503, Failures: 5, Attempts: 8, Until: until},
				{Name: "llm", From: fanout.BreakerOpen, To: fanout.BreakerHalfOpen},
				{Name: "llm", From: fanout.BreakerHalfOpen, To: fanout.BreakerClosed},
			}, got)
		})
	})
	t.Run("states have names", func(t *testing.T) {
		assert.Equal(t, "closed", fanout.BreakerClosed.String())
		assert.Equal(t, "open", fanout.BreakerOpen.String())
		assert.Equal(t, "half-open", fanout.BreakerHalfOpen.String())
		assert.Equal(t, "BreakerState(7)", fanout.BreakerState(7).String())
	})
	t.Run("a bad config panics", func(t *testing.T) {
		for _, c := range []fanout.CircuitBreakerConfig{{Window: -1}, {MinFailures: -1}, {FailureRatio: 1.5}, {CoolOff: -1}, {Probes: -1}} {
			assert.Panics(t, func() { fanout.NewCircuitBreaker(c) }, "%+v", c)
		}
	})
}

func TestCircuitBreakerInARun(t *testing.T) {
	// Fan-outs of 10 calls start every 100 ms for 20 s, each call retried
	// up to 3 attempts; the dependency is down from 2 s to 12 s.
	outage := func(t *testing.T, guards ...fanout.Guard) (during, total int, backAt time.Duration) {
		s := &capped{ceiling: 1000, base: 10 * time.Millisecond}
		start := time.Now()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range 200 {
			at := time.Duration(i) * 100 * time.Millisecond
			time.Sleep(time.Until(start.Add(at)))
			switch at {
			case 2 * time.Second:
				s.setDown(true)
			case 12 * time.Second:
				s.setDown(false)
			}
			opts := []fanout.Option{fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: 20 * time.Millisecond})}
			for _, g := range guards {
				opts = append(opts, fanout.WithGuard(g))
			}
			wg.Go(func() {
				var calls atomic.Int64
				tasks := s.tasks(fmt.Sprint(i, "-"), 10)
				for i := range tasks {
					tasks[i].Do = func(ctx context.Context) (int, error) { calls.Add(1); return s.call(ctx) }
				}
				rs, _ := fanout.Run(context.Background(), tasks, opts...)
				mu.Lock()
				defer mu.Unlock()
				total += int(calls.Load())
				if at >= 2*time.Second && at < 12*time.Second {
					during += int(calls.Load())
				}
				if at >= 12*time.Second && backAt == 0 && rs.Succeeded() > 0 {
					backAt = at - 12*time.Second
				}
			})
		}
		wg.Wait()
		return during, total, backAt
	}
	t.Run("cuts an outage's attempts by 90% and is back within a cool-off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			retriesAlone, _, _ := outage(t)
			assert.Equal(t, 100*10*3, retriesAlone)
			b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{CoolOff: 2 * time.Second, Probes: 1})
			withBreaker, _, backAt := outage(t, b)
			t.Logf("outage attempts: %d with the breaker, %d with retries alone; back after %v", withBreaker, retriesAlone, backAt)
			assert.Less(t, withBreaker, retriesAlone/10, "%d attempts against %d", withBreaker, retriesAlone)
			assert.LessOrEqual(t, backAt, 2*time.Second)
			assert.Equal(t, fanout.BreakerClosed, b.State())
		})
	})
	t.Run("refused keys fail with ErrCircuitOpen and, if they made one, their last attempt's error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &capped{ceiling: 1000, base: 10 * time.Millisecond, down: true}
			b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{MinFailures: 2, FailureRatio: 1})
			rs, err := fanout.Run(context.Background(), s.tasks("k", 10), fanout.WithLimit(1), fanout.WithGuard(b),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond}))
			require.Error(t, err)
			first, _ := rs.Get("k0")
			assert.ErrorIs(t, first.Err, fanout.ErrCircuitOpen)
			assert.Equal(t, 503, statusOf(first.Err))
			assert.Equal(t, 2, first.Attempts)
			last, _ := rs.Get("k9")
			assert.ErrorIs(t, last.Err, fanout.ErrCircuitOpen)
			assert.Zero(t, last.Attempts)
			assert.Equal(t, "circuit_open", fanout.ErrorKind(last.Err))
		})
	})
}

func TestGuardsTogether(t *testing.T) {
	t.Run("a breaker, a retry budget and an adaptive limiter with retries, hedges and a Throttle", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &capped{ceiling: 10, base: 50 * time.Millisecond}
			breaker := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{CoolOff: time.Second})
			budget := fanout.NewRetryBudget(0.2, 10)
			limiter := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{})
			var c attemptCounter
			opts := []fanout.Option{
				fanout.WithLimit(40), fanout.WithGuard(breaker), fanout.WithGuard(budget), fanout.WithGuard(limiter),
				fanout.WithRequestLimit(fanout.NewThrottle(nil)), fanout.WithObserver(c.observer()),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 4, InitialInterval: 20 * time.Millisecond}),
				fanout.WithHedge(fanout.HedgePolicy{Quantile: 0.9}),
			}
			rs, err := fanout.Run(context.Background(), s.tasks("a", 500), opts...)
			require.NoError(t, err)
			assert.Equal(t, 500, rs.Succeeded())

			time.Sleep(10 * time.Second) // the breaker's window forgets the successes
			s.setDown(true)
			before, _, _ := s.counts()
			rs, _ = fanout.Run(context.Background(), s.tasks("b", 500), opts...)
			assert.Equal(t, 500, rs.Len(), "one Result per key")
			assert.Zero(t, rs.Succeeded())
			assert.Equal(t, fanout.BreakerOpen, breaker.State())
			calls, _, _ := s.counts()
			assert.Less(t, calls-before, 50, "the breaker kept the outage's attempts down")

			s.setDown(false)
			time.Sleep(time.Second)
			rs, err = fanout.Run(context.Background(), s.tasks("c", 500), opts...)
			require.NoError(t, err)
			assert.Equal(t, 500, rs.Succeeded())
			assert.Zero(t, limiter.InFlight())
			assert.Equal(t, fanout.BreakerClosed, breaker.State())
		})
	})
}

func ExampleNewCircuitBreaker() {
	breaker := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{Name: "search", MinFailures: 3, FailureRatio: 1})
	down := func(context.Context) (string, error) {
		return "", &fanout.HTTPError{StatusCode: 503, Status: "503 Service Unavailable"}
	}
	tasks := []fanout.Task[string]{{Key: "a", Do: down}, {Key: "b", Do: down}, {Key: "c", Do: down}, {Key: "d", Do: down}}
	rs, _ := fanout.Run(context.Background(), tasks, fanout.WithLimit(1), fanout.WithGuard(breaker))
	for _, r := range rs.All() {
		fmt.Printf("%s: attempts %d, circuit open %t\n", r.Key, r.Attempts, errors.Is(r.Err, fanout.ErrCircuitOpen))
	}
	fmt.Println(breaker.State())
	// Output:
	// a: attempts 1, circuit open false
	// b: attempts 1, circuit open false
	// c: attempts 1, circuit open false
	// d: attempts 0, circuit open true
	// open
}

// TestARefusalByAnotherGuardCountsNeitherWay: a probe that a Guard of the
// caller's refuses after the breaker admitted it neither closes nor opens
// the breaker, and a retry a later guard refused is given back to the
// retry budget.
func TestARefusalByAnotherGuardCountsNeitherWay(t *testing.T) {
	refusing := &gatekeeper{refuse: func(fanout.Admission) error { return errors.New("quota: not now") }}
	synctest.Test(t, func(t *testing.T) {
		b := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{MinFailures: 1, CoolOff: time.Second, Probes: 1})
		outcomes(t, b, err503)
		require.Equal(t, fanout.BreakerOpen, b.State())
		time.Sleep(time.Second)
		require.Equal(t, fanout.BreakerHalfOpen, b.State())
		task := []fanout.Task[int]{{Key: "k", Do: func(context.Context) (int, error) { return 1, nil }}}
		rs, err := fanout.Run(t.Context(), task, fanout.WithGuard(b), fanout.WithGuard(refusing))
		require.Error(t, err)
		_, kerr := rs.Value("k")
		assert.EqualError(t, kerr, "quota: not now")
		assert.Equal(t, fanout.BreakerHalfOpen, b.State(), "the refused probe did not close it")
		// The probe's place is free again: a call that succeeds closes it.
		rs, err = fanout.Run(t.Context(), task, fanout.WithGuard(b))
		require.NoError(t, err)
		assert.Equal(t, fanout.BreakerClosed, b.State())
	})
	synctest.Test(t, func(t *testing.T) {
		budget := fanout.NewRetryBudget(0.1, 1)
		before := budget.Available()
		var calls atomic.Int32
		task := []fanout.Task[int]{{Key: "k", Do: func(context.Context) (int, error) {
			calls.Add(1)
			return 0, err503
		}}}
		refuseRetries := &gatekeeper{refuse: func(a fanout.Admission) error {
			if a.Attempt > 1 {
				return errors.New("quota: no retries")
			}
			return nil
		}}
		policy := fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Millisecond, Jitter: -1}
		_, err := fanout.Run(t.Context(), task, fanout.WithRetry(policy), fanout.WithGuard(budget), fanout.WithGuard(refuseRetries))
		require.Error(t, err)
		assert.Equal(t, int32(1), calls.Load())
		assert.Equal(t, before, budget.Available(), "the refused retry was given back")
	})
}
