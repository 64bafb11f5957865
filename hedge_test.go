package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

// replica returns a task whose i-th call takes latencies[i] (the last one
// repeats), and counts the calls cancelled before they finished.
func replica(key string, cancelled *atomic.Int32, latencies ...time.Duration) fanout.Task[string] {
	var calls atomic.Int32
	return fanout.Task[string]{Key: key, Do: func(ctx context.Context) (string, error) {
		n := int(calls.Add(1)) - 1
		d := latencies[min(n, len(latencies)-1)]
		select {
		case <-time.After(d):
			return fmt.Sprintf("%s#%d", key, n+1), nil
		case <-ctx.Done():
			cancelled.Add(1)
			return "", context.Cause(ctx)
		}
	}}
}

func TestHedge(t *testing.T) {
	t.Run("starts a copy exactly at the delay; the first success wins and the loser is cancelled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var cancelled atomic.Int32
			var hedges []fanout.HedgeInfo
			start := time.Now()
			rs, err := fanout.Run(context.Background(), []fanout.Task[string]{
				replica("slow", &cancelled, 10*time.Second, time.Second),
			}, fanout.WithHedge(fanout.HedgePolicy{Delay: 2 * time.Second, MaxExtra: 1}),
				fanout.WithObserver(&fanout.Observer{Hedge: func(_ context.Context, h fanout.HedgeInfo) { hedges = append(hedges, h) }}))
			require.NoError(t, err)
			assert.Equal(t, 3*time.Second, time.Since(start), "copy started at 2s and took 1s")
			r := rs.All()[0]
			assert.Equal(t, "slow#2", r.Value)
			assert.Equal(t, 2, r.Attempts)
			assert.Equal(t, 1, r.Hedges)
			assert.Equal(t, int32(1), cancelled.Load(), "the first copy was cancelled and waited for")
			require.Len(t, hedges, 1)
			assert.Equal(t, 2*time.Second, hedges[0].After)
		})
	})
	t.Run("an attempt faster than the delay is not hedged", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var cancelled atomic.Int32
			rs, err := fanout.Run(context.Background(), []fanout.Task[string]{replica("fast", &cancelled, time.Second)},
				fanout.WithHedge(fanout.HedgePolicy{Delay: 2 * time.Second, MaxExtra: 1}))
			require.NoError(t, err)
			assert.Equal(t, 1, rs.All()[0].Attempts)
			assert.Zero(t, rs.All()[0].Hedges)
		})
	})
	t.Run("the budget stops new copies, never running ones", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var cancelled atomic.Int32
			tasks := make([]fanout.Task[string], 20)
			for i := range tasks {
				tasks[i] = replica(fmt.Sprint(i), &cancelled, 10*time.Second, time.Second)
			}
			rs, err := fanout.Run(context.Background(), tasks, fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second, MaxExtra: 0.1}))
			require.NoError(t, err)
			hedged := 0
			for _, r := range rs.All() {
				hedged += r.Hedges
				if r.Hedges == 1 {
					assert.Equal(t, 2*time.Second, r.Elapsed)
				} else {
					assert.Equal(t, 10*time.Second, r.Elapsed, "unhedged keys run to the end")
				}
			}
			assert.Equal(t, 2, hedged, "10% of 20 tasks")
		})
	})
	t.Run("the loser is cancelled with ErrHedgeLost", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			causes := make(chan error, 2)
			var calls atomic.Int32
			task := fanout.Task[int]{Key: "k", Do: func(ctx context.Context) (int, error) {
				if calls.Add(1) == 2 {
					return 2, nil // the copy wins at once
				}
				<-ctx.Done()
				causes <- context.Cause(ctx)
				return 0, ctx.Err()
			}}
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{task},
				fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second, MaxExtra: 1}))
			require.NoError(t, err)
			assert.Equal(t, 2, rs.All()[0].Value)
			require.Len(t, causes, 1)
			assert.ErrorIs(t, <-causes, fanout.ErrHedgeLost)
		})
	})
	t.Run("a lazy run's budget counts tasks, not retried attempts", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// Each task fails its first attempt at once, then is slow on the
			// second; a hedged copy of the second answers in a second.
			tasks := func(yield func(fanout.Task[int]) bool) {
				for i := range 10 {
					var calls atomic.Int32
					task := fanout.Task[int]{Key: fmt.Sprint(i), Do: func(ctx context.Context) (int, error) {
						switch calls.Add(1) {
						case 1:
							return 0, errors.New("flaky")
						case 2:
							select {
							case <-time.After(10 * time.Second):
								return 2, nil
							case <-ctx.Done():
								return 0, ctx.Err()
							}
						}
						time.Sleep(time.Second)
						return 3, nil
					}}
					if !yield(task) {
						return
					}
				}
			}
			seq, err := fanout.StreamSeq(context.Background(), tasks, fanout.WithLimit(10),
				fanout.WithRetry(fanout.RetryPolicy{InitialInterval: time.Millisecond, Jitter: -1}),
				fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second, MaxExtra: 0.1}))
			require.NoError(t, err)
			hedges := 0
			for r := range seq {
				require.NoError(t, r.Err)
				hedges += r.Hedges
			}
			assert.Equal(t, 1, hedges, "10% of 10 tasks, though they made 20 attempts")
		})
	})
	t.Run("a small run may still hedge its one slow call", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var cancelled atomic.Int32
			rs, err := fanout.Run(context.Background(), []fanout.Task[string]{
				replica("a", &cancelled, 10*time.Second, time.Second), replica("b", &cancelled, time.Second), replica("c", &cancelled, time.Second),
			}, fanout.WithHedge(fanout.HedgePolicy{Delay: 2 * time.Second}))
			require.NoError(t, err)
			a, _ := rs.Get("a")
			assert.Equal(t, 1, a.Hedges, "10% of 3 tasks rounds up to one copy")
		})
	})
	t.Run("if both copies fail, the key gets the first error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var calls atomic.Int32
			rs, _ := fanout.Run(context.Background(), []fanout.Task[string]{{Key: "k", Do: func(context.Context) (string, error) {
				n := calls.Add(1)
				time.Sleep(time.Duration(4-n) * time.Second) // first call 3s, copy 2s
				return "", fmt.Errorf("failure %d", n)
			}}}, fanout.WithHedge(fanout.HedgePolicy{Delay: 2 * time.Second, MaxExtra: 1}))
			r := rs.All()[0]
			assert.EqualError(t, r.Err, "failure 1")
			assert.Equal(t, 2, r.Attempts)
			assert.Equal(t, 4*time.Second, r.Elapsed)
		})
	})
	t.Run("hedges after the observed quantile once enough attempts succeeded", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var cancelled atomic.Int32
			var mu sync.Mutex
			var after []time.Duration
			tasks := make([]fanout.Task[string], 40)
			for i := range tasks {
				d := 100 * time.Millisecond * time.Duration(1+i%10) // 100ms..1s
				if i == 39 {
					d = time.Hour
				}
				tasks[i] = replica(fmt.Sprint(i), &cancelled, d, 100*time.Millisecond)
			}
			// A generous budget: early in a run the finished calls are the
			// fast ones, so the estimate starts low and hedges some normal
			// calls too; this test is about the slow one.
			rs, err := fanout.Run(context.Background(), tasks, fanout.WithLimit(10),
				fanout.WithHedge(fanout.HedgePolicy{Quantile: 0.95, MaxExtra: 1}),
				fanout.WithObserver(&fanout.Observer{Hedge: func(_ context.Context, h fanout.HedgeInfo) {
					mu.Lock()
					after = append(after, h.After)
					mu.Unlock()
				}}))
			require.NoError(t, err)
			slow, _ := rs.Get("39")
			assert.Equal(t, 1, slow.Hedges, "the one-hour call was hedged")
			assert.Less(t, slow.Elapsed, 2*time.Second)
			for _, a := range after {
				// Each copy started at the p95 of the calls seen so far:
				// never before the fastest, never after the slowest.
				assert.GreaterOrEqual(t, a, 100*time.Millisecond)
				assert.LessOrEqual(t, a, time.Second)
			}
		})
	})
	t.Run("a p95 hedge in a fan-out hedges only the last 5% of attempts", func(t *testing.T) {
		for _, tt := range []struct {
			n, hedges int
			at        time.Duration // when the p95 is known: the end of the ⌈0.95·n⌉th call
		}{
			{n: 90, hedges: 4, at: 18500 * time.Microsecond},
			{n: 100, hedges: 5, at: 19400 * time.Microsecond},
			{n: 200, hedges: 10, at: 28900 * time.Microsecond},
		} {
			t.Run(fmt.Sprint(tt.n, " calls"), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					// n calls start together: the first n-1 take 10.0,
					// 10.1, 10.2 ... ms, the last would take an hour; every
					// copy takes 10 ms.
					var cancelled atomic.Int32
					var mu sync.Mutex
					var after []time.Duration
					tasks := make([]fanout.Task[string], tt.n)
					for i := range tasks {
						d := 10*time.Millisecond + time.Duration(i)*100*time.Microsecond
						if i == tt.n-1 {
							d = time.Hour
						}
						tasks[i] = replica(fmt.Sprint(i), &cancelled, d, 10*time.Millisecond)
					}
					rs, err := fanout.Run(context.Background(), tasks,
						fanout.WithHedge(fanout.HedgePolicy{Quantile: 0.95}),
						fanout.WithObserver(&fanout.Observer{Hedge: func(_ context.Context, h fanout.HedgeInfo) {
							mu.Lock()
							after = append(after, h.After)
							mu.Unlock()
						}}))
					require.NoError(t, err)
					// The calls still running when the p95 is known are
					// hedged at once, and no others.
					assert.Equal(t, slices.Repeat([]time.Duration{tt.at}, tt.hedges), after)
					slow, _ := rs.Get(fmt.Sprint(tt.n - 1))
					assert.Equal(t, 1, slow.Hedges)
					assert.Equal(t, tt.at+10*time.Millisecond, slow.Elapsed, "hedged at the p95, the copy took 10 ms")
				})
			})
		}
	})
	t.Run("a hedged copy also honours the per-task timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var cancelled atomic.Int32
			rs, _ := fanout.Run(context.Background(), []fanout.Task[string]{replica("k", &cancelled, time.Hour)},
				fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second, MaxExtra: 1}), fanout.WithTaskTimeout(3*time.Second))
			r := rs.All()[0]
			assert.True(t, errors.Is(r.Err, fanout.ErrTaskTimeout), r.Err)
			assert.Equal(t, 4*time.Second, r.Elapsed, "the copy started at 1s timed out at 4s")
		})
	})
}

func TestBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tasks := make([]fanout.Task[int], 5)
		for i := range tasks {
			tasks[i] = fanout.Task[int]{Key: fmt.Sprint("call", i), Do: func(ctx context.Context) (int, error) {
				time.Sleep(time.Second)
				fanout.Spend(ctx, fanout.Cost{Tokens: 60})
				fanout.Spend(ctx, fanout.Cost{Tokens: 40, Cents: 0.5})
				return i, nil
			}}
		}
		rs, err := fanout.Run(context.Background(), tasks, fanout.WithBudget(fanout.Cost{Tokens: 250}), fanout.WithLimit(1))
		require.Error(t, err)
		assert.Equal(t, fanout.Cost{Tokens: 300, Cents: 1.5}, rs.Cost())
		for i, r := range rs.All() {
			if i < 3 {
				assert.NoError(t, r.Err)
				assert.Equal(t, fanout.Cost{Tokens: 100, Cents: 0.5}, r.Cost)
				continue
			}
			assert.ErrorIs(t, r.Err, fanout.ErrSkipped, r.Key)
			assert.ErrorIs(t, r.Err, fanout.ErrBudgetExceeded, r.Key)
			assert.Zero(t, r.Attempts)
		}
	})
	t.Run("a spent budget stops pulling an endless source", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			endless := func(yield func(fanout.Task[int]) bool) {
				for i := 0; ; i++ {
					task := fanout.Task[int]{Key: fmt.Sprint("call", i), Do: func(ctx context.Context) (int, error) {
						time.Sleep(time.Second)
						fanout.Spend(ctx, fanout.Cost{Tokens: 100})
						return i, nil
					}}
					if !yield(task) {
						return
					}
				}
			}
			seq, err := fanout.StreamSeq(context.Background(), endless, fanout.WithBudget(fanout.Cost{Tokens: 250}), fanout.WithLimit(1))
			require.NoError(t, err)
			var keys []string
			for r := range seq {
				require.NoError(t, r.Err)
				keys = append(keys, r.Key)
			}
			assert.Equal(t, []string{"call0", "call1", "call2"}, keys, "the third call passed the budget")
		})
	})
	t.Run("Spend outside a task does nothing", func(t *testing.T) {
		fanout.Spend(context.Background(), fanout.Cost{Tokens: 1})
	})
}
