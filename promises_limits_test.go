package fanout_test

import (
	"context"
	"errors"
	"math"
	"runtime"
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

// These tests hold the rate limits, cooldowns, settlement, budgets, hedges,
// semaphores and per-resource limits to the promises of their doc comments
// where they meet.

// countedTask returns a task that counts its calls and returns v.
func countedTask(key string, calls *atomic.Int32, v int) fanout.Task[int] {
	return fanout.Task[int]{Key: key, Do: func(context.Context) (int, error) {
		calls.Add(1)
		return v, nil
	}}
}

func TestBadLimitInputIsRefusedBeforeAnyWork(t *testing.T) {
	// Run: "a bad option ... is reported before any task starts, with a
	// nil *Results"; WithRateLimit(nil): "limiter must not be nil".
	for name, opt := range map[string]fanout.Option{
		"a nil *rate.Limiter to WithRateLimit":    fanout.WithRateLimit((*rate.Limiter)(nil)),
		"a nil *rate.Limiter to WithRequestLimit": fanout.WithRequestLimit((*rate.Limiter)(nil)),
		"a nil *Throttle to WithRateLimit":        fanout.WithRateLimit((*fanout.Throttle)(nil)),
		"a nil *rate.Limiter for a resource":      fanout.ForResource("a", fanout.WithRateLimit((*rate.Limiter)(nil))),
		"a zero Semaphore, which has no slots":    fanout.WithSemaphore(&fanout.Semaphore{}),
		"a budget of NaN cents":                   fanout.WithBudget(fanout.Cost{Cents: math.NaN()}),
		"a hedge at a NaN quantile":               fanout.WithHedge(fanout.HedgePolicy{Quantile: math.NaN()}),
		"a hedge with NaN extra copies":           fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second, MaxExtra: math.NaN()}),
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// A deadline, so that a run that does start and blocks
				// (on a semaphore with no slots) still returns.
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				defer cancel()
				var calls atomic.Int32
				var rs *fanout.Results[int]
				var err error
				require.NotPanics(t, func() {
					rs, err = fanout.Run(ctx, []fanout.Task[int]{countedTask("a", &calls, 1)}, opt)
				})
				require.Error(t, err)
				assert.Nil(t, rs, "refused before any task starts")
				assert.Contains(t, err.Error(), "fanout: ")
				assert.Zero(t, calls.Load())
				_, err = fanout.NewGroup[int](ctx, opt)
				assert.Error(t, err, "NewGroup reports a bad option at once")
			})
		})
	}
	t.Run("a Throttle over a nil *rate.Limiter is a cooldown alone", func(t *testing.T) {
		// NewThrottle: "A nil l gives a cooldown with no rate limit of
		// its own."
		synctest.Test(t, func(t *testing.T) {
			th := fanout.NewThrottle((*rate.Limiter)(nil))
			th.Pause(time.Second)
			start := time.Now()
			var calls atomic.Int32
			var err error
			require.NotPanics(t, func() {
				_, err = fanout.Run(context.Background(), []fanout.Task[int]{countedTask("a", &calls, 1)}, fanout.WithRateLimit(th))
			})
			require.NoError(t, err)
			assert.GreaterOrEqual(t, time.Since(start), time.Second, "the cooldown is waited out")
		})
	})
}

// retryAfter is an error whose server asked for a wait of d.
type retryAfter struct{ d time.Duration }

func (e retryAfter) Error() string             { return "busy" }
func (e retryAfter) RetryAfter() time.Duration { return e.d }

func TestAResourcesCooldownIsItsOwn(t *testing.T) {
	// ForResource: "its WithRateLimit and WithRequestLimit are waited on
	// by their attempts alone"; Throttle: a server-directed delay pauses
	// the limiters of the run that every task sharing them waits on.
	t.Run("a delay asked of one resource pauses neither another's Throttle nor delays its tasks", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			small, large, all := fanout.NewThrottle(nil), fanout.NewThrottle(nil), fanout.NewThrottle(nil)
			start := time.Now()
			var startedB time.Duration
			tasks := []fanout.Task[int]{
				{Key: "a", Resource: "large", Do: func(context.Context) (int, error) { return 0, retryAfter{10 * time.Second} }},
				{Key: "b", Resource: "small", Do: func(context.Context) (int, error) {
					startedB = time.Since(start)
					return 1, nil
				}},
			}
			rs, _ := fanout.Run(context.Background(), tasks, fanout.WithLimit(1), fanout.WithRateLimit(all),
				fanout.ForResource("large", fanout.WithRateLimit(large)),
				fanout.ForResource("small", fanout.WithRateLimit(small)))
			require.NotNil(t, rs)
			assert.Equal(t, start.Add(10*time.Second), large.Until(), "the resource told to wait is paused")
			assert.Equal(t, start.Add(10*time.Second), all.Until(), "so is the run's own limiter, shared by every task")
			assert.False(t, small.Until().After(start), "another resource's Throttle is not paused")
			// b waits out the run-wide cooldown, not large's on top of it.
			assert.Less(t, startedB, 12*time.Second+time.Millisecond)
		})
	})
	t.Run("a task does not wait out the cooldown of another resource's Throttle", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			small, large := fanout.NewThrottle(nil), fanout.NewThrottle(nil)
			large.Pause(time.Hour)
			start := time.Now()
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "b", Resource: "small", Do: value("b", 1).Do}},
				fanout.ForResource("large", fanout.WithRateLimit(large)),
				fanout.ForResource("small", fanout.WithRateLimit(small)))
			require.NoError(t, err)
			r, _ := rs.Get("b")
			assert.Zero(t, r.LimiterWait)
			assert.Zero(t, time.Since(start), "small's task starts at once")
		})
	})
}

func TestSettleCountsOnlyTheFirstCallPerAttempt(t *testing.T) {
	// Settle: "Only the first call per attempt counts"; a *rate.Limiter
	// "is charged what the attempt used beyond its estimate".
	synctest.Test(t, func(t *testing.T) {
		lim := rate.NewLimiter(rate.Every(time.Hour), 10)
		var wg sync.WaitGroup
		task := fanout.Task[int]{Key: "a", Tokens: 2, Do: func(ctx context.Context) (int, error) {
			for range 4 { // from goroutines of the task, at once
				wg.Go(func() { fanout.Settle(ctx, 5) })
			}
			wg.Wait()
			fanout.Settle(ctx, 9)
			return 1, nil
		}}
		_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRateLimit(lim))
		require.NoError(t, err)
		assert.InDelta(t, 5, lim.TokensAt(time.Now()), 0.01, "charged 2, then 3 more, once")
	})
	t.Run("each retry settles its own charge", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			lim := rate.NewLimiter(rate.Every(time.Hour), 20)
			task := fanout.Task[int]{Key: "a", Tokens: 2, Do: func(ctx context.Context) (int, error) {
				fanout.Settle(ctx, 4)
				return 0, errors.New("flaky")
			}}
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRateLimit(lim),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond}))
			require.Error(t, err)
			assert.InDelta(t, 20-3*4, lim.TokensAt(time.Now()), 0.01)
		})
	})
}

func TestSpendInNestedRunsCountsInTheOuterBudget(t *testing.T) {
	// WithBudget stops making attempts once the costs reported through
	// Spend reach max; Call is "the piece to use inside a task", so what
	// a task spends through Call or a nested Run is what the task spent.
	for name, nested := range map[string]func(ctx context.Context) error{
		"Call": func(ctx context.Context) error {
			_, err := fanout.Call(ctx, func(ctx context.Context) (int, error) {
				fanout.Spend(ctx, fanout.Cost{Tokens: 100})
				return 1, nil
			}, fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2}))
			return err
		},
		"a nested Run": func(ctx context.Context) error {
			_, err := fanout.Run(ctx, []fanout.Task[int]{{Key: "x", Do: func(ctx context.Context) (int, error) {
				fanout.Spend(ctx, fanout.Cost{Tokens: 60})
				return 1, nil
			}}, {Key: "y", Do: func(ctx context.Context) (int, error) {
				fanout.Spend(ctx, fanout.Cost{Tokens: 40})
				return 1, nil
			}}})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			var calls atomic.Int32
			tasks := []fanout.Task[int]{
				{Key: "a", Do: func(ctx context.Context) (int, error) { return 1, nested(ctx) }},
				countedTask("b", &calls, 2),
			}
			rs, _ := fanout.Run(context.Background(), tasks, fanout.WithLimit(1), fanout.WithBudget(fanout.Cost{Tokens: 100}))
			require.NotNil(t, rs)
			a, _ := rs.Get("a")
			require.NoError(t, a.Err)
			assert.Equal(t, int64(100), a.Cost.Tokens, "the key's Cost is what its task spent")
			b, _ := rs.Get("b")
			assert.ErrorIs(t, b.Err, fanout.ErrBudgetExceeded)
			assert.ErrorIs(t, b.Err, fanout.ErrSkipped)
			assert.Zero(t, calls.Load())
		})
	}
}

func TestHedgeMaxExtraWithoutACap(t *testing.T) {
	// HedgePolicy.MaxExtra "caps the copies at this fraction of the run's
	// tasks, rounded up": a fraction past every count caps nothing.
	for _, extra := range []float64{math.Inf(1), 1e300, 2} {
		synctest.Test(t, func(t *testing.T) {
			var n atomic.Int32
			slow := fanout.Task[int]{Key: "k", Do: func(ctx context.Context) (int, error) {
				if n.Add(1) == 1 {
					select {
					case <-ctx.Done():
						return 0, ctx.Err()
					case <-time.After(time.Hour):
						return 1, nil
					}
				}
				return 7, nil
			}}
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{slow},
				fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second, MaxExtra: extra}))
			require.NoError(t, err, "MaxExtra %v", extra)
			r, _ := rs.Get("k")
			assert.Equal(t, 7, r.Value)
			assert.Equal(t, 1, r.Hedges, "MaxExtra %v", extra)
		})
	}
}

// refusingSecond is a limiter that lets the first wait through and refuses
// every later one.
type refusingSecond struct{ waits atomic.Int32 }

func (l *refusingSecond) WaitN(context.Context, int) error {
	if l.waits.Add(1) > 1 {
		return errors.New("no room")
	}
	return nil
}

func TestAHedgedCopyThatFailsToStartCostsTheAttemptNothing(t *testing.T) {
	// WithHedge: "The copy waits on the run's rate limiters and checks the
	// budget like any attempt, and once it calls Do it counts in
	// Result.Attempts and Result.Hedges"; the first success wins.
	slowThenValue := func(calls *atomic.Int32) fanout.Task[int] {
		return fanout.Task[int]{Key: "k", Tokens: 60, Do: func(ctx context.Context) (int, error) {
			calls.Add(1)
			time.Sleep(5 * time.Second)
			return 7, nil
		}}
	}
	t.Run("refused by a limiter", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var calls atomic.Int32
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{slowThenValue(&calls)},
				fanout.WithRateLimit(&refusingSecond{}), fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second}))
			require.NoError(t, err)
			r, _ := rs.Get("k")
			assert.Equal(t, 7, r.Value)
			assert.Equal(t, 1, r.Attempts)
			assert.Zero(t, r.Hedges)
			assert.Equal(t, int32(1), calls.Load())
		})
	})
}

// oneAtOnce is a guard that admits one attempt at a time, holding the
// others until it is told the admitted one ended.
type oneAtOnce struct{ slot chan struct{} }

func (g oneAtOnce) Admit(ctx context.Context, _ fanout.Admission) (func(fanout.Outcome), error) {
	select {
	case g.slot <- struct{}{}:
		return func(fanout.Outcome) { <-g.slot }, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func TestAHedgedCopyNeverStartsAfterItsAttemptWon(t *testing.T) {
	// HedgePolicy: "The first copy to succeed wins; the other is
	// cancelled"; WithBudget: a copy that does not fit "waits for the
	// attempts in flight to end". A copy held until its attempt has won
	// has nothing left to do: it must not make a paid call.
	slow := func(calls *atomic.Int32) fanout.Task[int] {
		return fanout.Task[int]{Key: "k", Tokens: 60, Do: func(ctx context.Context) (int, error) {
			calls.Add(1)
			time.Sleep(5 * time.Second)
			return 7, nil
		}}
	}
	for name, opt := range map[string]func() fanout.Option{
		"held by the budget": func() fanout.Option { return fanout.WithBudget(fanout.Cost{Tokens: 100}) },
		// Its channel made in the bubble, for synctest to see it block.
		"held by a guard": func() fanout.Option { return fanout.WithGuard(oneAtOnce{make(chan struct{}, 1)}) },
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var calls atomic.Int32
				start := time.Now()
				rs, err := fanout.Run(context.Background(), []fanout.Task[int]{slow(&calls)}, opt(),
					fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second}))
				require.NoError(t, err)
				r, _ := rs.Get("k")
				assert.Equal(t, 7, r.Value)
				assert.Equal(t, 1, r.Attempts)
				assert.Zero(t, r.Hedges)
				assert.Equal(t, int32(1), calls.Load())
				assert.Equal(t, 5*time.Second, time.Since(start), "the held copy ends with the attempt")
			})
		})
	}
}

func TestAHedgedAttemptThatPanicsOrExits(t *testing.T) {
	// Run: a task that panics or calls Goexit fails its own key; WithHedge:
	// "The first copy to succeed wins".
	for name, die := range map[string]func(){
		"panics":       func() { panic("boom") },
		"calls Goexit": runtime.Goexit,
	} {
		t.Run("a first attempt that "+name+" after the copy started loses to it", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var n atomic.Int32
				task := fanout.Task[int]{Key: "k", Do: func(ctx context.Context) (int, error) {
					if n.Add(1) == 1 {
						time.Sleep(2 * time.Second)
						die()
					}
					time.Sleep(3 * time.Second)
					return 7, nil
				}}
				rs, err := fanout.Run(context.Background(), []fanout.Task[int]{task, value("other", 1)},
					fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second, MaxExtra: 1}))
				require.NoError(t, err)
				r, _ := rs.Get("k")
				assert.Equal(t, 7, r.Value)
				assert.Equal(t, 2, r.Attempts)
				assert.Equal(t, 1, r.Hedges)
			})
		})
		t.Run("a first attempt that "+name+" before the delay fails its key alone", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var calls atomic.Int32
				task := fanout.Task[int]{Key: "k", Do: func(ctx context.Context) (int, error) {
					calls.Add(1)
					die()
					return 7, nil
				}}
				rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{task, value("other", 1)},
					fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second, MaxExtra: 1}))
				require.NotNil(t, rs)
				r, _ := rs.Get("k")
				require.Error(t, r.Err)
				var pe *fanout.PanicError
				assert.True(t, errors.As(r.Err, &pe) || errors.Is(r.Err, fanout.ErrGoexit), "got %v", r.Err)
				assert.Equal(t, int32(1), calls.Load(), "no copy of an attempt that ended")
				o, _ := rs.Get("other")
				assert.NoError(t, o.Err)
			})
		})
	}
}

func TestAQuantileHedgeShortOfMinSamplesNeverHedges(t *testing.T) {
	// HedgePolicy: until MinSamples attempts have finished and without a
	// Delay, "the attempt waits for the estimate".
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		tasks := make([]fanout.Task[int], 5)
		for i := range tasks {
			tasks[i] = fanout.Task[int]{Key: string(rune('a' + i)), Do: func(context.Context) (int, error) {
				calls.Add(1)
				time.Sleep(time.Duration(i+1) * time.Second)
				return i, nil
			}}
		}
		rs, err := fanout.Run(context.Background(), tasks,
			fanout.WithHedge(fanout.HedgePolicy{Quantile: 0.5, MinSamples: 6, MaxExtra: 1}))
		require.NoError(t, err)
		for _, r := range rs.All() {
			assert.Zero(t, r.Hedges, r.Key)
		}
		assert.Equal(t, int32(5), calls.Load())
	})
}

func TestATaskEstimatedBeyondTheBudgetIsSkippedAlone(t *testing.T) {
	// WithBudget: an attempt "is refused if it cannot fit even" alone; a
	// key that never started is skipped with ErrSkipped and
	// ErrBudgetExceeded; the budget is not spent, so others go on.
	var calls atomic.Int32
	big := countedTask("big", &calls, 1)
	big.Tokens = 200
	small := countedTask("small", &calls, 2)
	small.Tokens = 10
	rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{big, small}, fanout.WithLimit(1),
		fanout.WithBudget(fanout.Cost{Tokens: 100}))
	require.NotNil(t, rs)
	r, _ := rs.Get("big")
	assert.ErrorIs(t, r.Err, fanout.ErrBudgetExceeded)
	assert.ErrorIs(t, r.Err, fanout.ErrSkipped)
	r, _ = rs.Get("small")
	assert.NoError(t, r.Err)
	assert.Equal(t, int32(1), calls.Load())
}

func TestASharedSemaphoreHoldsItsCapAndEnds(t *testing.T) {
	// Semaphore: "caps the tasks in flight across runs"; nested runs
	// "always make progress"; a Group's tasks may add tasks.
	synctest.Test(t, func(t *testing.T) {
		sem := fanout.NewSemaphore(2)
		var f inFlight
		var leaves atomic.Int32
		leaf := func(key string) fanout.Task[int] {
			tk := f.task(key)
			do := tk.Do
			tk.Do = func(ctx context.Context) (int, error) {
				leaves.Add(1)
				assert.LessOrEqual(t, sem.InUse(), sem.Cap())
				return do(ctx)
			}
			return tk
		}
		nested := func(prefix string) func(ctx context.Context) (int, error) {
			return func(ctx context.Context) (int, error) {
				_, err := fanout.Run(ctx, []fanout.Task[int]{leaf(prefix + "x"), leaf(prefix + "y"), leaf(prefix + "z")},
					fanout.WithSemaphore(sem))
				return 0, err
			}
		}
		// The copies of a hedged task share its slot: hedge the tasks
		// that nest runs, not the leaves, whose copies would count twice.
		g, err := fanout.NewGroup[int](context.Background(), fanout.WithSemaphore(sem),
			fanout.WithHedge(fanout.HedgePolicy{Delay: 50 * time.Millisecond, MaxExtra: 1}))
		require.NoError(t, err)
		for i := range 3 {
			key := string(rune('a' + i))
			require.NoError(t, g.Go(key, func(ctx context.Context) (int, error) {
				for j := range 2 {
					// A hedged copy adds them again: a duplicate, refused.
					err := g.Go(key+string(rune('0'+j)), nested(key+string(rune('0'+j))))
					if !errors.Is(err, fanout.ErrDuplicateKey) {
						assert.NoError(t, err)
					}
				}
				return nested(key)(ctx)
			}))
		}
		var wg sync.WaitGroup
		for i := range 3 { // other runs, concurrently
			wg.Go(func() {
				_, err := fanout.Run(context.Background(), []fanout.Task[int]{
					{Key: "n", Do: nested("run" + string(rune('0'+i)))}, leaf("leaf"),
				}, fanout.WithSemaphore(sem))
				assert.NoError(t, err)
			})
		}
		_, err = g.Wait()
		require.NoError(t, err)
		wg.Wait()
		assert.LessOrEqual(t, f.most.Load(), int32(2), "leaves in flight at once")
		assert.GreaterOrEqual(t, leaves.Load(), int32(9*3+3))
		assert.Zero(t, sem.InUse(), "every slot given back")
	})
}
