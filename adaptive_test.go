package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
)

// capped is a dependency with a hidden capacity, for the guards' tests:
// at most ceiling calls at once, more get a 503 at once; a call takes
// base × (1 + (n/ceiling)²) with n calls in flight, so latency grows near
// the ceiling; while down, every call fails with a 503 after base.
type capped struct {
	ceiling int
	base    time.Duration

	mu        sync.Mutex
	inFlight  int
	peak      int
	calls     int
	overloads int
	down      bool
}

func (s *capped) call(ctx context.Context) (int, error) {
	s.mu.Lock()
	s.calls++
	if s.down || s.inFlight >= s.ceiling {
		s.overloads++
		down := s.down
		s.mu.Unlock()
		if down {
			time.Sleep(s.base)
		}
		return 0, &fanout.HTTPError{StatusCode: 503, Status: "503 Service Unavailable"}
	}
	s.inFlight++
	s.peak = max(s.peak, s.inFlight)
	x := float64(s.inFlight) / float64(s.ceiling)
	d := time.Duration(float64(s.base) * (1 + x*x))
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	select {
	case <-time.After(d):
		return 1, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (s *capped) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *capped) counts() (calls, overloads, peak int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.overloads, s.peak
}

// tasks returns n tasks calling s, keyed prefix0, prefix1, ...
func (s *capped) tasks(prefix string, n int) []fanout.Task[int] {
	tasks := make([]fanout.Task[int], n)
	for i := range tasks {
		tasks[i] = fanout.Task[int]{Key: fmt.Sprint(prefix, i), Do: s.call}
	}
	return tasks
}

// round ends one round of l: as many attempts as its limit, at least 20,
// admitted as many at a time as the limit lets through, each ending after
// elapsed with err. It returns the limit after.
func round(t *testing.T, l *fanout.AdaptiveLimiter, elapsed time.Duration, err error) int {
	t.Helper()
	for n, size := 0, max(l.Limit(), 20); n < size; {
		batch := min(l.Limit(), size-n)
		for _, done := range admitN(t, l, batch) {
			done(fanout.Outcome{Err: err, Elapsed: elapsed})
		}
		n += batch
	}
	return l.Limit()
}

// admitN admits n attempts, which must not wait.
func admitN(t *testing.T, g fanout.Guard, n int) []func(fanout.Outcome) {
	t.Helper()
	dones := make([]func(fanout.Outcome), n)
	for i := range dones {
		done, err := g.Admit(context.Background(), fanout.Admission{Key: "k", Attempt: 1})
		require.NoError(t, err)
		dones[i] = done
	}
	return dones
}

var (
	err429 = &fanout.HTTPError{StatusCode: 429, Status: "429 Too Many Requests"}
	err503 = &fanout.HTTPError{StatusCode: 503, Status: "503 Service Unavailable"}
)

// delayError asks for a delay without an HTTP status, as an SDK may.
type delayError struct{ d time.Duration }

func (e delayError) Error() string             { return "slow down" }
func (e delayError) RetryAfter() time.Duration { return e.d }

func TestAdaptiveLimiter(t *testing.T) {
	ms := time.Millisecond
	t.Run("lets Initial attempts in and the next ones wait their turn", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Initial: 2})
			dones := admitN(t, l, 2)
			var mu sync.Mutex
			var in []string
			for _, key := range []string{"c", "d"} {
				go func() {
					_, err := l.Admit(context.Background(), fanout.Admission{Key: key, Attempt: 1})
					assert.NoError(t, err)
					mu.Lock()
					in = append(in, key)
					mu.Unlock()
				}()
				synctest.Wait() // c queues before d
			}
			assert.Empty(t, in)
			assert.Equal(t, 2, l.InFlight())
			dones[0](fanout.Outcome{Elapsed: ms})
			synctest.Wait()
			assert.Equal(t, []string{"c"}, in, "first come, first served")
			dones[1](fanout.Outcome{Elapsed: ms})
			synctest.Wait()
			assert.Equal(t, []string{"c", "d"}, in)
			assert.Equal(t, 2, l.InFlight())
		})
	})
	t.Run("a waiter whose context ends leaves with its cause and takes no slot", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Initial: 1})
			dones := admitN(t, l, 1)
			stop := errors.New("caller gave up")
			ctx, cancel := context.WithCancelCause(context.Background())
			var err error
			go func() { _, err = l.Admit(ctx, fanout.Admission{Key: "b", Attempt: 1}) }()
			synctest.Wait()
			cancel(stop)
			synctest.Wait()
			assert.ErrorIs(t, err, stop)
			dones[0](fanout.Outcome{Elapsed: ms})
			assert.Zero(t, l.InFlight())
			admitN(t, l, 1) // the slot is free
		})
	})
	t.Run("an overload signal lowers the limit by Backoff", func(t *testing.T) {
		tests := []struct {
			name string
			give error
			want int
		}{
			{"429", err429, 9},
			{"503", err503, 9},
			{"529", &fanout.HTTPError{StatusCode: 529, Status: "529 Overloaded"}, 9},
			{"a server-directed wait without a status", delayError{time.Second}, 9},
			{"a wrapped 429", fmt.Errorf("call: %w", err429), 9},
			{"500", &fanout.HTTPError{StatusCode: 500, Status: "500 Internal Server Error"}, 10},
			{"404", &fanout.HTTPError{StatusCode: 404, Status: "404 Not Found"}, 10},
			{"a plain error", errors.New("bad answer"), 10},
			{"a zero server-directed wait", delayError{0}, 10},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{})
				admitN(t, l, 1)[0](fanout.Outcome{Err: tt.give, Elapsed: ms})
				assert.Equal(t, tt.want, l.Limit())
			})
		}
	})
	t.Run("one burst of overload lowers the limit once", func(t *testing.T) {
		l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{})
		before := admitN(t, l, 5)
		for _, done := range before {
			done(fanout.Outcome{Err: err429, Elapsed: ms})
		}
		assert.Equal(t, 9, l.Limit(), "admitted before the fall: one step")
		admitN(t, l, 1)[0](fanout.Outcome{Err: err429, Elapsed: ms})
		assert.Equal(t, 8, l.Limit(), "admitted after it: news") // 9 × 0.9 = 8.1
	})
	t.Run("an attempt refused for overload keeps its slot for a round trip", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Min: 2, Max: 2})
			round(t, l, 100*ms, nil) // the round trip is 100 ms
			dones := admitN(t, l, 2)
			time.Sleep(ms)
			dones[0](fanout.Outcome{Err: err429, Elapsed: ms})
			var admitted atomic.Bool
			go func() {
				done, err := l.Admit(context.Background(), fanout.Admission{Key: "c", Attempt: 1})
				assert.NoError(t, err)
				admitted.Store(true)
				done(fanout.Outcome{Elapsed: ms})
			}()
			time.Sleep(98 * ms)
			synctest.Wait()
			assert.False(t, admitted.Load(), "the 429's slot is held")
			assert.Equal(t, 1, l.InFlight())
			time.Sleep(ms)
			synctest.Wait()
			assert.True(t, admitted.Load(), "100 ms after the 429's attempt started")
			dones[1](fanout.Outcome{Elapsed: 100 * ms})
		})
	})
	t.Run("rises by a tenth a round while the limit is used and latency is steady", func(t *testing.T) {
		l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{})
		var got []int
		for range 4 {
			got = append(got, round(t, l, 10*ms, nil))
		}
		assert.Equal(t, []int{11, 12, 13, 14}, got) // 11, 12.1, 13.31, 14.64
	})
	t.Run("does not rise while the limit is not used", func(t *testing.T) {
		l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{})
		for range 100 {
			for _, done := range admitN(t, l, 9) {
				done(fanout.Outcome{Elapsed: 10 * ms})
			}
		}
		assert.Equal(t, 10, l.Limit())
	})
	t.Run("falls when a round's median latency passes Tolerance times the baseline", func(t *testing.T) {
		l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Tolerance: 2})
		assert.Equal(t, 11, round(t, l, 10*ms, nil))
		assert.Equal(t, 12, round(t, l, 20*ms, nil), "twice the baseline is within it")
		assert.Equal(t, 10, round(t, l, 21*ms, nil)) // 12.1 × 0.9 = 10.89
	})
	t.Run("a timed-out attempt counts as a latency, not as overload", func(t *testing.T) {
		l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{})
		assert.Equal(t, 11, round(t, l, 10*ms, nil))
		timeout := fmt.Errorf("%w: %w", fanout.ErrTaskTimeout, context.DeadlineExceeded)
		assert.Equal(t, 12, round(t, l, 15*ms, timeout))
		assert.Equal(t, 10, round(t, l, 50*ms, timeout))
	})
	t.Run("rises slowly just below the limit at which it last fell, and fast past it", func(t *testing.T) {
		l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Initial: 40})
		admitN(t, l, 1)[0](fanout.Outcome{Err: err429, Elapsed: ms})
		require.Equal(t, 36, l.Limit()) // the ceiling is 40
		var got []int
		for range 14 {
			got = append(got, round(t, l, 10*ms, nil))
		}
		// 36 + 3.6 would pass 38, 5% below the ceiling: 38, then + 0.2 (a
		// tenth of the 5%) a round up to 40, then a tenth again.
		assert.Equal(t, []int{38, 38, 38, 38, 38, 39, 39, 39, 39, 39, 40, 44, 48, 53}, got)
	})
	t.Run("stays within Min and Max", func(t *testing.T) {
		l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Min: 5, Max: 12})
		for range 20 {
			admitN(t, l, 1)[0](fanout.Outcome{Err: err503, Elapsed: ms})
		}
		assert.Equal(t, 5, l.Limit())
		for range 20 {
			round(t, l, 10*ms, nil)
		}
		assert.Equal(t, 12, l.Limit())
	})
	t.Run("an attempt cut by the run, a lost hedge, another guard or a panic says nothing", func(t *testing.T) {
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		tests := []struct {
			name string
			ctx  context.Context
			give error
		}{
			{"the run's context ended", cancelled, err429},
			{"a lost hedge race", context.Background(), fmt.Errorf("%w: %w", fanout.ErrHedgeLost, context.Canceled)},
			{"refused by a breaker after it", context.Background(), &fanout.CircuitOpenError{Until: time.Now()}},
			{"refused by a retry budget after it", context.Background(), fanout.ErrRetryBudgetExceeded},
			{"a panic", context.Background(), &fanout.PanicError{Value: err429}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{})
				var dones []func(fanout.Outcome)
				for range 10 {
					done, err := l.Admit(tt.ctx, fanout.Admission{Key: "k", Attempt: 1})
					if err != nil { // the cancelled context may be refused outright
						continue
					}
					dones = append(dones, done)
				}
				for _, done := range dones {
					done(fanout.Outcome{Err: tt.give, Elapsed: ms})
				}
				assert.Equal(t, 10, l.Limit(), "neither a fall nor a round")
				assert.Zero(t, l.InFlight())
			})
		}
	})
	t.Run("reports each change to its observer", func(t *testing.T) {
		var got []fanout.LimitInfo
		l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Name: "llm", Observer: &fanout.Observer{
			Limit: func(_ context.Context, i fanout.LimitInfo) { got = append(got, i) },
		}})
		round(t, l, 10*ms, nil)
		admitN(t, l, 1)[0](fanout.Outcome{Err: err429, Elapsed: ms})
		require.Len(t, got, 2)
		assert.Equal(t, fanout.LimitInfo{Name: "llm", Limit: 11, Previous: 10, InFlight: 0, Reason: "increase",
			Latency: 10 * ms, Baseline: 10 * ms}, got[0])
		assert.Equal(t, fanout.LimitInfo{Name: "llm", Limit: 9, Previous: 11, Reason: "overload", Err: err429}, got[1])
	})
	t.Run("a bad config panics", func(t *testing.T) {
		tests := []struct {
			give fanout.AdaptiveLimiterConfig
			want string
		}{
			{fanout.AdaptiveLimiterConfig{Min: 10, Max: 5}, "fanout: NewAdaptiveLimiter: Min 10 is above Max 5"},
			{fanout.AdaptiveLimiterConfig{Min: 2, Max: 5, Initial: 6}, "fanout: NewAdaptiveLimiter: Initial 6 is outside [2, 5]"},
			{fanout.AdaptiveLimiterConfig{Max: -1}, "fanout: NewAdaptiveLimiter: negative bound in Min 0, Max -1, Initial 0"},
			{fanout.AdaptiveLimiterConfig{Backoff: 1}, "fanout: NewAdaptiveLimiter: Backoff 1 is outside (0, 1)"},
			{fanout.AdaptiveLimiterConfig{Tolerance: 0.5}, "fanout: NewAdaptiveLimiter: Tolerance 0.5 must be above 1"},
		}
		for _, tt := range tests {
			assert.PanicsWithValue(t, tt.want, func() { fanout.NewAdaptiveLimiter(tt.give) })
		}
	})
	t.Run("the zero config starts at 10, and Initial follows a Min or Max that excludes 10", func(t *testing.T) {
		assert.Equal(t, 10, fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{}).Limit())
		assert.Equal(t, 20, fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Min: 20}).Limit())
		assert.Equal(t, 4, fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Max: 4}).Limit())
	})
}

func TestAdaptiveLimiterInARun(t *testing.T) {
	t.Run("finds a hidden concurrency ceiling from 503s and latency", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &capped{ceiling: 20, base: 100 * time.Millisecond}
			l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Initial: 4})
			rs, err := fanout.Run(context.Background(), s.tasks("k", 2000), fanout.WithLimit(100), fanout.WithGuard(l),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 10, InitialInterval: 50 * time.Millisecond}))
			require.NoError(t, err)
			assert.Equal(t, 2000, rs.Succeeded())
			calls, overloads, peak := s.counts()
			assert.LessOrEqual(t, float64(overloads)/float64(calls), 0.02, "503s: %d of %d calls", overloads, calls)
			assert.InDelta(t, 20, l.Limit(), 4, "the limit learned")
			assert.LessOrEqual(t, peak, 20)
			assert.Zero(t, l.InFlight())
		})
	})
	t.Run("shared by two runs, it holds both to one limit", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &capped{ceiling: 1000, base: 100 * time.Millisecond}
			var mu sync.Mutex
			var limits []int
			l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Initial: 8, Max: 8, Observer: &fanout.Observer{
				Limit: func(_ context.Context, i fanout.LimitInfo) { mu.Lock(); limits = append(limits, i.Limit); mu.Unlock() },
			}})
			var wg sync.WaitGroup
			for _, prefix := range []string{"a", "b"} {
				wg.Go(func() {
					_, err := fanout.Run(context.Background(), s.tasks(prefix, 100), fanout.WithGuard(l))
					assert.NoError(t, err)
				})
			}
			wg.Wait()
			_, _, peak := s.counts()
			assert.Equal(t, 8, peak)
			assert.Empty(t, limits, "at Max and never overloaded")
		})
	})
	t.Run("with retries, hedges and a Throttle, every slot comes back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &capped{ceiling: 10, base: 100 * time.Millisecond}
			l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Initial: 16})
			th := fanout.NewThrottle(rate.NewLimiter(rate.Inf, 1))
			rs, err := fanout.Run(context.Background(), s.tasks("k", 300), fanout.WithLimit(50), fanout.WithGuard(l),
				fanout.WithRequestLimit(th),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 20, InitialInterval: 50 * time.Millisecond}),
				fanout.WithHedge(fanout.HedgePolicy{Delay: 150 * time.Millisecond, MaxExtra: 0.1}))
			require.NoError(t, err)
			assert.Equal(t, 300, rs.Succeeded())
			assert.Zero(t, l.InFlight())
			assert.Less(t, l.Limit(), 16, "the 503s above 10 brought it down")
		})
	})
	t.Run("a 429 with Retry-After lowers the limit and pauses the Throttle", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{})
			task, calls := flaky("a", 1, &fanout.HTTPError{StatusCode: 429, Status: "429 Too Many Requests", Delay: 2 * time.Second})
			start := time.Now()
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithGuard(l),
				fanout.WithRequestLimit(fanout.NewThrottle(nil)), fanout.WithRetry(fanout.RetryPolicy{Jitter: -1}))
			require.NoError(t, err)
			assert.Equal(t, 9, l.Limit())
			assert.Len(t, calls.times(), 2)
			assert.GreaterOrEqual(t, time.Since(start), 2*time.Second)
		})
	})
}
