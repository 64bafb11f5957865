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

// Limits are checked at the moment before the paid call starts, not
// earlier: cooldowns after every limiter wait, the budget after the
// limiters, a semaphore's slot at every depth of nesting.

func TestCooldownAfterEveryWait(t *testing.T) {
	busy := &fanout.HTTPError{StatusCode: 429, Status: "429 Too Many Requests", Delay: 2 * time.Second}
	// hit fails with busy after a second, while the other tasks are
	// queued, and tells when.
	var pausedAt time.Duration
	hitAt1s := func(s *starts) fanout.Task[int] {
		return s.task("hit", 0, func(n int) error {
			if n == 1 {
				time.Sleep(time.Second)
				pausedAt = time.Since(s.begin)
				return busy
			}
			return nil
		})
	}
	check := func(t *testing.T, s *starts) {
		t.Helper()
		require.NotZero(t, pausedAt)
		for key, at := range s.at {
			for _, a := range at {
				if a > pausedAt && a < pausedAt+2*time.Second {
					t.Errorf("%s started at %v, inside the cooldown from %v", key, a, pausedAt)
				}
			}
		}
		assert.Greater(t, len(s.all()), 10, "every task ran, hit twice")
	}
	t.Run("inside the Throttle's own limiter", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newStarts()
			tasks := []fanout.Task[int]{hitAt1s(s)}
			for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"} {
				tasks = append(tasks, s.task(k, 0, ok))
			}
			// One start every 400ms after the first two: most wait inside
			// the rate limiter when the pause comes.
			th := fanout.NewThrottle(rate.NewLimiter(rate.Every(400*time.Millisecond), 2))
			_, err := fanout.Run(context.Background(), tasks, fanout.WithRateLimit(th), fanout.WithRetry(exact(2)))
			require.NoError(t, err)
			check(t, s)
		})
	})
	t.Run("on a later limiter in the chain", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newStarts()
			tasks := []fanout.Task[int]{hitAt1s(s)}
			for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"} {
				tasks = append(tasks, s.task(k, 100, ok))
			}
			// The README's pattern: a Throttle for requests, then a token
			// limiter on which the tasks queue.
			th := fanout.NewThrottle(rate.NewLimiter(rate.Inf, 1))
			tokens := rate.NewLimiter(250, 100)
			_, err := fanout.Run(context.Background(), tasks,
				fanout.WithRequestLimit(th), fanout.WithRateLimit(tokens), fanout.WithRetry(exact(2)))
			require.NoError(t, err)
			check(t, s)
		})
	})
}

func TestBudgetRightBeforeTheAttempt(t *testing.T) {
	spend := func(c fanout.Cost) func(ctx context.Context) (int, error) {
		return func(ctx context.Context) (int, error) {
			fanout.Spend(ctx, c)
			return 1, nil
		}
	}
	t.Run("tasks parked on a token limiter make no call once it is spent", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var calls atomic.Int32
			tasks := make([]fanout.Task[int], 10)
			for i := range tasks {
				tasks[i] = fanout.Task[int]{Key: string(rune('a' + i)), Tokens: 100, Do: func(ctx context.Context) (int, error) {
					calls.Add(1)
					return spend(fanout.Cost{Tokens: 1000})(ctx)
				}}
			}
			rs, _ := fanout.Run(context.Background(), tasks,
				fanout.WithRateLimit(rate.NewLimiter(100, 100)), fanout.WithBudget(fanout.Cost{Tokens: 100}))
			assert.Equal(t, int32(1), calls.Load(), "one call spent the budget; the others were parked")
			skipped := 0
			for _, r := range rs.All() {
				if errors.Is(r.Err, fanout.ErrBudgetExceeded) {
					assert.ErrorIs(t, r.Err, fanout.ErrSkipped)
					assert.Zero(t, r.Attempts)
					skipped++
				}
			}
			assert.Equal(t, 9, skipped)
		})
	})
	t.Run("a retry is refused once it is spent", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			down := errors.New("down")
			rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "a", Do: func(ctx context.Context) (int, error) {
				fanout.Spend(ctx, fanout.Cost{Cents: 5})
				return 0, down
			}}}, fanout.WithRetry(exact(5)), fanout.WithBudget(fanout.Cost{Cents: 10}))
			r, _ := rs.Get("a")
			assert.Equal(t, 2, r.Attempts)
			assert.ErrorIs(t, r.Err, fanout.ErrBudgetExceeded)
			assert.ErrorIs(t, r.Err, down, "the last attempt's error is kept")
			assert.NotErrorIs(t, r.Err, fanout.ErrSkipped, "the key did start")
			assert.EqualError(t, r.Err, "fanout: budget exceeded; last attempt: down")
		})
	})
	t.Run("a hedged copy is not started once it is spent", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "a", Do: func(ctx context.Context) (int, error) {
				fanout.Spend(ctx, fanout.Cost{Tokens: 10})
				time.Sleep(time.Second)
				return 1, nil
			}}}, fanout.WithHedge(fanout.HedgePolicy{Delay: 100 * time.Millisecond, MaxExtra: 1}),
				fanout.WithBudget(fanout.Cost{Tokens: 10}))
			require.NoError(t, err)
			r, _ := rs.Get("a")
			assert.Equal(t, 1, r.Attempts)
			assert.Zero(t, r.Hedges)
		})
	})
	t.Run("with fail-fast a key skipped for the budget stops nothing", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			slow := fanout.Task[int]{Key: "slow", Do: func(ctx context.Context) (int, error) {
				select {
				case <-time.After(time.Second):
					return 1, nil
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}}
			rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{
				slow, {Key: "spender", Do: spend(fanout.Cost{Tokens: 10})}, value("late", 3), value("later", 4),
			}, fanout.WithLimit(2), fanout.WithFailFast(), fanout.WithBudget(fanout.Cost{Tokens: 10}))
			r, _ := rs.Get("slow")
			assert.NoError(t, r.Err, "the running task finishes")
			for _, k := range []string{"late", "later"} {
				r, _ := rs.Get(k)
				assert.ErrorIs(t, r.Err, fanout.ErrBudgetExceeded, k)
			}
		})
	})
	t.Run("the zero Cost means no budget", func(t *testing.T) {
		rs, err := fanout.Run(context.Background(), []fanout.Task[int]{
			{Key: "a", Do: spend(fanout.Cost{Tokens: 1e9})}, {Key: "b", Do: spend(fanout.Cost{Tokens: 1e9})},
		}, fanout.WithLimit(1), fanout.WithBudget(fanout.Cost{}))
		require.NoError(t, err)
		assert.Equal(t, int64(2e9), rs.Cost().Tokens)
	})
}

// inFlight counts the tasks running at once, and the most ever.
type inFlight struct {
	now, most atomic.Int32
}

func (f *inFlight) task(key string) fanout.Task[int] {
	return fanout.Task[int]{Key: key, Do: func(context.Context) (int, error) {
		n := f.now.Add(1)
		for m := f.most.Load(); n > m && !f.most.CompareAndSwap(m, n); m = f.most.Load() {
		}
		time.Sleep(100 * time.Millisecond)
		f.now.Add(-1)
		return 1, nil
	}}
}

func TestNestedSemaphore(t *testing.T) {
	leaves := func(f *inFlight, prefix string, n int) []fanout.Task[int] {
		var ts []fanout.Task[int]
		for i := range n {
			ts = append(ts, f.task(prefix+string(rune('a'+i))))
		}
		return ts
	}
	t.Run("two nested runs of one task share its slot", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sem := fanout.NewSemaphore(1)
			var f inFlight
			outer := fanout.Task[int]{Key: "outer", Do: func(ctx context.Context) (int, error) {
				var wg sync.WaitGroup
				for _, p := range []string{"x", "y"} {
					wg.Go(func() {
						_, err := fanout.Run(ctx, leaves(&f, p, 3), fanout.WithSemaphore(sem))
						assert.NoError(t, err)
					})
				}
				wg.Wait()
				return 1, nil
			}}
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{outer}, fanout.WithSemaphore(sem))
			require.NoError(t, err)
			assert.Equal(t, int32(1), f.most.Load())
		})
	})
	t.Run("runs nested below a run without the semaphore share the slot", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sem := fanout.NewSemaphore(1)
			var f inFlight
			middle := func(key string) fanout.Task[int] {
				return fanout.Task[int]{Key: key, Do: func(ctx context.Context) (int, error) {
					_, err := fanout.Run(ctx, leaves(&f, key, 2), fanout.WithSemaphore(sem))
					return 1, err
				}}
			}
			outer := fanout.Task[int]{Key: "outer", Do: func(ctx context.Context) (int, error) {
				_, err := fanout.Run(ctx, []fanout.Task[int]{middle("m"), middle("n"), middle("o")}, fanout.WithLimit(3))
				return 1, err
			}}
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{outer}, fanout.WithSemaphore(sem))
			require.NoError(t, err)
			assert.Equal(t, int32(1), f.most.Load())
		})
	})
	t.Run("the copies of a hedged attempt share the slot", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sem := fanout.NewSemaphore(1)
			var f inFlight
			var copies atomic.Int32
			outer := fanout.Task[int]{Key: "outer", Do: func(ctx context.Context) (int, error) {
				p := string(rune('x' + copies.Add(1)))
				_, err := fanout.Run(ctx, leaves(&f, p, 3), fanout.WithSemaphore(sem))
				return 1, err
			}}
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{outer}, fanout.WithSemaphore(sem),
				fanout.WithHedge(fanout.HedgePolicy{Delay: 50 * time.Millisecond, MaxExtra: 1}))
			require.NoError(t, err)
			assert.Equal(t, int32(2), copies.Load(), "the attempt was hedged")
			assert.Equal(t, int32(1), f.most.Load())
		})
	})
	t.Run("nesting three deep still makes progress", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sem := fanout.NewSemaphore(1)
			var f inFlight
			var nest func(depth int) fanout.Task[int]
			nest = func(depth int) fanout.Task[int] {
				if depth == 0 {
					return f.task("leaf")
				}
				return fanout.Task[int]{Key: "n", Do: func(ctx context.Context) (int, error) {
					_, err := fanout.Run(ctx, []fanout.Task[int]{nest(depth - 1)}, fanout.WithSemaphore(sem))
					return 1, err
				}}
			}
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{nest(3)}, fanout.WithSemaphore(sem))
			require.NoError(t, err)
			assert.Equal(t, int32(1), f.most.Load())
		})
	})
}

func TestElapsedIsTheTasksOwn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slowHook := &fanout.Observer{TaskDone: func(context.Context, fanout.TaskInfo) { time.Sleep(time.Second) }}
		var folded []time.Duration
		slowAdd := fanout.Reduce(0, func(n int, r fanout.Result[int]) int {
			folded = append(folded, r.Elapsed)
			time.Sleep(time.Second)
			return n + 1
		})
		tasks := []fanout.Task[int]{sleeping("a", 10*time.Millisecond, 1), sleeping("b", 10*time.Millisecond, 2),
			sleeping("c", 10*time.Millisecond, 3)}
		rs, err := fanout.Run(context.Background(), tasks, fanout.WithLimit(1), fanout.WithObserver(slowHook))
		require.NoError(t, err)
		for _, r := range rs.All() {
			assert.Equal(t, 10*time.Millisecond, r.Elapsed, r.Key)
		}
		_, err = fanout.Gather(context.Background(), tasks, slowAdd, fanout.WithLimit(1))
		require.NoError(t, err)
		assert.Equal(t, []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}, folded)
	})
}

func TestTaskTimeoutError(t *testing.T) {
	derived := fanout.Task[int]{Key: "derived", Do: func(ctx context.Context) (int, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		<-ctx.Done()
		return 0, ctx.Err()
	}}
	for name, opts := range map[string][]fanout.Option{
		"alone":         nil,
		"with observer": {fanout.WithObserver(&fanout.Observer{})},
		"with hedge":    {fanout.WithHedge(fanout.HedgePolicy{Delay: time.Hour})},
	} {
		t.Run("a derived context's error matches both, "+name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{derived},
					append(opts, fanout.WithTaskTimeout(time.Second))...)
				r, _ := rs.Get("derived")
				assert.ErrorIs(t, r.Err, fanout.ErrTaskTimeout)
				assert.ErrorIs(t, r.Err, context.DeadlineExceeded)
				assert.EqualError(t, r.Err, "fanout: task timed out: context deadline exceeded")
			})
		})
	}
}

func TestRefusalSaysWhyTheRunStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bad := errors.New("bad input")
		lim := rate.NewLimiter(rate.Every(time.Second), 1)
		rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{
			{Key: "a", Do: func(context.Context) (int, error) { time.Sleep(100 * time.Millisecond); return 0, bad }},
			value("b", 2),
		}, fanout.WithRateLimit(lim), fanout.WithFailFast())
		r, _ := rs.Get("b")
		var te *fanout.TaskError
		require.ErrorAs(t, r.Err, &te, "b, waiting on the limiter, was stopped by a's failure")
		assert.Equal(t, "a", te.Key)
		assert.ErrorIs(t, r.Err, bad)
	})
}

func TestConsistentOutcomes(t *testing.T) {
	t.Run("a failed key's Value is zero, whatever the options", func(t *testing.T) {
		partial := fanout.Task[int]{Key: "p", Do: func(context.Context) (int, error) { return 7, errors.New("partial") }}
		for name, opts := range map[string][]fanout.Option{
			"plain":    nil,
			"observed": {fanout.WithObserver(&fanout.Observer{})},
			"retried":  {fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 1})},
			"hedged":   {fanout.WithHedge(fanout.HedgePolicy{Delay: time.Hour})},
		} {
			rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{partial}, opts...)
			r, _ := rs.Get("p")
			assert.Zero(t, r.Value, name)
		}
	})
	t.Run("a key refused by a limiter is failed, a key never started is skipped", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var sum fanout.RunSummary
			obs := &fanout.Observer{RunDone: func(_ context.Context, s fanout.RunSummary) { sum = s }}
			_, _ = fanout.Run(context.Background(), []fanout.Task[int]{value("a", 1), value("b", 2), value("c", 3)},
				fanout.WithRateLimit(rate.NewLimiter(rate.Every(time.Hour), 1)), fanout.WithTimeout(time.Second),
				fanout.WithLimit(1), fanout.WithObserver(obs))
			assert.Equal(t, fanout.RunSummary{Tasks: 3, Succeeded: 1, Failed: 2, Attempts: 1}, sum)

			_, _ = fanout.Run(context.Background(), []fanout.Task[int]{failing[int]("a", errors.New("x")), value("b", 2)},
				fanout.WithFailFast(), fanout.WithLimit(1), fanout.WithObserver(obs))
			assert.Equal(t, fanout.RunSummary{Tasks: 2, Failed: 1, Skipped: 1, Attempts: 1}, sum)
		})
	})
	t.Run("a slow RunStart hook does not push the deadline back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			obs := &fanout.Observer{RunStart: func(ctx context.Context, _ int) context.Context {
				time.Sleep(2 * time.Second)
				return ctx
			}}
			start := time.Now()
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{hanging[int]("a")},
				fanout.WithTimeout(3*time.Second), fanout.WithObserver(obs))
			assert.ErrorIs(t, err, fanout.ErrRunTimeout)
			assert.Equal(t, 3*time.Second, time.Since(start))
		})
	})
	t.Run("no attempt starts after the run stopped, even after a zero backoff", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			slowRetryHook := &fanout.Observer{Retry: func(context.Context, fanout.RetryInfo) { time.Sleep(2 * time.Second) }}
			zero := fanout.RetryPolicy{MaxAttempts: 5, NewBackOff: func() fanout.BackOff { return &zeroBackOff{} }}
			rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{failing[int]("a", errors.New("flaky"))},
				fanout.WithRetry(zero), fanout.WithObserver(slowRetryHook), fanout.WithTimeout(time.Second))
			r, _ := rs.Get("a")
			assert.Equal(t, 1, r.Attempts)
			assert.ErrorIs(t, r.Err, fanout.ErrRunTimeout)
		})
	})
	t.Run("a losing hedged copy's Retry-After pauses the Throttle", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			busy := &fanout.HTTPError{StatusCode: 429, Status: "429 Too Many Requests", Delay: 5 * time.Second}
			var calls atomic.Int32
			hedged := fanout.Task[int]{Key: "hedged", Do: func(context.Context) (int, error) {
				if calls.Add(1) == 1 {
					time.Sleep(time.Second) // the attempt, slow but fine
					return 1, nil
				}
				return 0, busy // the copy, refused
			}}
			th := fanout.NewThrottle(nil)
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{hedged}, fanout.WithRateLimit(th),
				fanout.WithHedge(fanout.HedgePolicy{Delay: 100 * time.Millisecond, MaxExtra: 1}))
			require.NoError(t, err)
			start := time.Now()
			require.NoError(t, th.WaitN(context.Background(), 1))
			assert.GreaterOrEqual(t, time.Since(start), 4*time.Second, "the copy's 429 at 100ms paused until 5.1s")
		})
	})
	t.Run("an endless source whose limiter refuses for the deadline is not pulled in a loop", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var pulls atomic.Int32
			endless := func(yield func(fanout.Task[int]) bool) {
				for pulls.Add(1) < 1e6 && yield(value("t", 1)) {
				}
			}
			seq, err := fanout.StreamSeq(context.Background(), endless, fanout.WithLimit(2),
				fanout.WithRateLimit(rate.NewLimiter(rate.Every(time.Hour), 1)), fanout.WithTimeout(time.Second))
			require.NoError(t, err)
			n := 0
			for range seq {
				n++
			}
			assert.Less(t, pulls.Load(), int32(10))
			assert.Less(t, n, 10)
		})
	})
}

type zeroBackOff struct{}

func (*zeroBackOff) NextBackOff() time.Duration { return 0 }
func (*zeroBackOff) Reset()                     {}

func TestHedgeMinSamples(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Four fast keys and a slow one: with MinSamples above the keys
		// there is never an estimate, so nothing is hedged.
		tasks := []fanout.Task[int]{sleeping("a", time.Millisecond, 1), sleeping("b", time.Millisecond, 1),
			sleeping("c", time.Millisecond, 1), sleeping("d", time.Millisecond, 1), sleeping("slow", time.Second, 1)}
		rs, err := fanout.Run(context.Background(), tasks,
			fanout.WithHedge(fanout.HedgePolicy{Quantile: 0.5, MinSamples: 10, MaxExtra: 1}))
		require.NoError(t, err)
		slow, _ := rs.Get("slow")
		assert.Zero(t, slow.Hedges)
		rs, err = fanout.Run(context.Background(), tasks,
			fanout.WithHedge(fanout.HedgePolicy{Quantile: 0.5, MinSamples: 3, MaxExtra: 1}))
		require.NoError(t, err)
		slow, _ = rs.Get("slow")
		assert.Equal(t, 1, slow.Hedges, "three samples are enough when MinSamples says so")
	})
}

func TestRateBoundAfterHedgesAndStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const perSecond, burst = 10, 5
		lim := rate.NewLimiter(perSecond, burst)
		s := newStarts()
		// Slow first attempts are hedged; their copies wait on the limiter
		// and are abandoned when the attempt wins. Every other run is cut
		// by its timeout while its tasks wait.
		var wg sync.WaitGroup
		for run := range 6 {
			wg.Go(func() {
				tasks := make([]fanout.Task[int], 20)
				for i := range tasks {
					key := string(rune('a'+run)) + string(rune('a'+i))
					tasks[i] = s.task(key, 0, func(n int) error {
						if n == 1 {
							time.Sleep(300 * time.Millisecond)
						}
						return nil
					})
				}
				opts := []fanout.Option{fanout.WithRequestLimit(lim), fanout.WithLimit(4),
					fanout.WithHedge(fanout.HedgePolicy{Delay: 100 * time.Millisecond, MaxExtra: 1})}
				if run%2 == 1 {
					opts = append(opts, fanout.WithTimeout(time.Duration(run)*time.Second))
				}
				_, _ = fanout.Run(context.Background(), tasks, opts...)
			})
		}
		wg.Wait()
		all := s.all()
		require.Greater(t, len(all), 50)
		for i := range all {
			for j := i; j < len(all); j++ {
				allowed := burst + perSecond*(all[j]-all[i]).Seconds()
				if float64(j-i+1) > allowed+1e-9 {
					t.Fatalf("%d calls between %v and %v; the limiter allows %.1f", j-i+1, all[i], all[j], allowed)
				}
			}
		}
	})
}

// cooling is a limiter of another package's making that cools down like
// a Throttle and wraps a rate.Limiter.
type cooling struct {
	mu    sync.Mutex
	until time.Time
	inner *rate.Limiter
}

func (c *cooling) WaitN(ctx context.Context, n int) error { return c.inner.WaitN(ctx, n) }
func (c *cooling) Pause(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.until = time.Now().Add(d)
}
func (c *cooling) Until() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.until
}
func (c *cooling) Limiter() fanout.Limiter { return c.inner }

func TestOtherLimitersCoolDownAndReportTheirBurst(t *testing.T) {
	t.Run("a wrapped limiter's burst refuses oversize tasks up front", func(t *testing.T) {
		_, err := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "big", Tokens: 50, Do: value("x", 1).Do}},
			fanout.WithRateLimit(&cooling{inner: rate.NewLimiter(10, 20)}))
		assert.EqualError(t, err, `fanout: task "big": charge of 50 exceeds the burst 20 of the limiter of WithRateLimit`)
	})
	t.Run("a cooldown reported by Until is waited out after every limiter", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := &cooling{inner: rate.NewLimiter(rate.Inf, 1)}
			c.Pause(2 * time.Second)
			start := time.Now()
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{value("a", 1)}, fanout.WithRequestLimit(c))
			require.NoError(t, err)
			assertReleased(t, time.Since(start), 2*time.Second, 400*time.Millisecond)
		})
	})
}

func TestAClientDeadlineIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		assert.True(t, fanout.Retryable(fmt.Errorf("sdk: %w", context.DeadlineExceeded)))
		calls := 0
		_, err := fanout.Call(context.Background(), func(ctx context.Context) (int, error) {
			if calls++; calls == 1 {
				ctx, cancel := context.WithTimeout(ctx, time.Second) // the SDK's own request timeout
				defer cancel()
				<-ctx.Done()
				return 0, ctx.Err()
			}
			return 1, nil
		}, fanout.WithRetry(exact(3)))
		require.NoError(t, err)
		assert.Equal(t, 2, calls)

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		calls = 0
		_, err = fanout.Call(ctx, func(ctx context.Context) (int, error) {
			calls++
			<-ctx.Done()
			return 0, ctx.Err()
		}, fanout.WithRetry(exact(3)))
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 1, calls, "the caller's own deadline ends the retries")
	})
}
