package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
)

// tree adds, from inside each task, a child per branch down to depth.
func tree(g *fanout.Group[int], key string, depth, branches int, ran *atomic.Int32) func(context.Context) (int, error) {
	return func(context.Context) (int, error) {
		ran.Add(1)
		if depth > 0 {
			for b := range branches {
				child := fmt.Sprintf("%s.%d", key, b)
				if err := g.Go(child, tree(g, child, depth-1, branches, ran)); err != nil {
					return 0, err
				}
			}
		}
		return depth, nil
	}
}

func TestGroup(t *testing.T) {
	t.Run("tasks add tasks at every depth under a limit of 1", func(t *testing.T) {
		g, err := fanout.NewGroup[int](context.Background(), fanout.WithLimit(1))
		require.NoError(t, err)
		var ran atomic.Int32
		require.NoError(t, g.Go("r", tree(g, "r", 4, 3, &ran)))
		rs, err := g.Wait()
		require.NoError(t, err)
		assert.Equal(t, 1+3+9+27+81, rs.Len())
		assert.Equal(t, int32(rs.Len()), ran.Load())
		v, err := rs.Value("r.2.0.1.2")
		require.NoError(t, err)
		assert.Equal(t, 0, v)
		assert.Equal(t, "r", rs.All()[0].Key, "Results are in the order of Go")
	})
	t.Run("Go never blocks on the limit, and the limit holds", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g, _ := fanout.NewGroup[int](context.Background(), fanout.WithLimit(2))
			var f inFlight
			start := time.Now()
			for i := range 6 {
				require.NoError(t, g.GoTask(f.task(fmt.Sprint(i))))
			}
			assert.Zero(t, time.Since(start))
			_, err := g.Wait()
			require.NoError(t, err)
			assert.Equal(t, int32(2), f.most.Load())
			assert.Equal(t, 300*time.Millisecond, time.Since(start))
		})
	})
	t.Run("a duplicate key is that call's error, never a second Result", func(t *testing.T) {
		g, _ := fanout.NewGroup[int](context.Background())
		require.NoError(t, g.Go("a", func(context.Context) (int, error) { return 1, nil }))
		err := g.Go("a", func(context.Context) (int, error) { return 2, nil })
		assert.EqualError(t, err, `fanout: task "a": duplicate key`)
		assert.ErrorIs(t, err, fanout.ErrDuplicateKey)
		assert.EqualError(t, g.Go("", func(context.Context) (int, error) { return 0, nil }), "fanout: task 1: empty Key")
		rs, err := g.Wait()
		require.NoError(t, err)
		assert.Equal(t, 1, rs.Len())
		assert.Equal(t, map[string]int{"a": 1}, rs.Values())
		assert.ErrorIs(t, g.Go("b", func(context.Context) (int, error) { return 0, nil }), fanout.ErrGroupDone)
	})
	t.Run("TryGo sheds load when the queue is full", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g, _ := fanout.NewGroup[int](context.Background(), fanout.WithLimit(1), fanout.WithQueue(2))
			var shed int
			for i := range 5 {
				err := g.TryGo(fmt.Sprint(i), func(context.Context) (int, error) { time.Sleep(time.Second); return i, nil })
				if errors.Is(err, fanout.ErrQueueFull) {
					shed++
				} else {
					require.NoError(t, err)
				}
			}
			// One running, two queued, two shed.
			assert.Equal(t, 2, shed)
			rs, err := g.Wait()
			require.NoError(t, err)
			assert.Equal(t, 3, rs.Len())
		})
	})
	t.Run("fail-fast stops tasks that are still being added", func(t *testing.T) {
		g, _ := fanout.NewGroup[int](context.Background(), fanout.WithLimit(1), fanout.WithFailFast())
		bad := errors.New("bad")
		require.NoError(t, g.Go("bad", func(context.Context) (int, error) { return 0, bad }))
		require.NoError(t, g.Go("spawner", func(context.Context) (int, error) {
			return 0, g.Go("late", func(context.Context) (int, error) { return 1, nil })
		}))
		rs, err := g.Wait()
		assert.ErrorIs(t, err, bad)
		for _, k := range []string{"spawner"} {
			r, ok := rs.Get(k)
			require.True(t, ok)
			assert.ErrorIs(t, r.Err, fanout.ErrSkipped, k)
		}
	})
	t.Run("a timeout stops tasks that are still being added", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g, _ := fanout.NewGroup[int](context.Background(), fanout.WithLimit(2), fanout.WithTimeout(time.Second))
			var spawn func(i int) func(context.Context) (int, error)
			spawn = func(i int) func(context.Context) (int, error) {
				return func(ctx context.Context) (int, error) {
					time.Sleep(300 * time.Millisecond)
					_ = g.Go(fmt.Sprint(i+1), spawn(i+1)) // an endless chain
					return i, ctx.Err()
				}
			}
			require.NoError(t, g.Go("0", spawn(0)))
			rs, err := g.Wait()
			assert.ErrorIs(t, err, fanout.ErrRunTimeout)
			assert.Less(t, rs.Len(), 10)
			last := rs.All()[rs.Len()-1]
			assert.ErrorIs(t, last.Err, fanout.ErrRunTimeout)
		})
	})
	t.Run("Stream yields Results as they end, and break stops the group", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g, _ := fanout.NewGroup[int](context.Background(), fanout.WithLimit(3))
			for i, d := range []time.Duration{3, 1, 2, 10} {
				require.NoError(t, g.Go(fmt.Sprint(i), func(ctx context.Context) (int, error) {
					select {
					case <-time.After(d * time.Second):
						return i, nil
					case <-ctx.Done():
						return 0, ctx.Err()
					}
				}))
			}
			var keys []string
			for r := range g.Stream() {
				keys = append(keys, r.Key)
				if len(keys) == 3 {
					break
				}
			}
			assert.Equal(t, []string{"1", "2", "0"}, keys)
			assert.Equal(t, 3*time.Second, time.Since(time.Unix(946684800, 0)), "the fourth was cancelled at once")
		})
	})
	t.Run("an aggregator decides while tasks are still being added", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g, _ := fanout.NewGroup[int](context.Background(), fanout.WithLimit(2))
			var spawn func(i int) func(context.Context) (int, error)
			spawn = func(i int) func(context.Context) (int, error) {
				return func(ctx context.Context) (int, error) {
					if err := g.Go(fmt.Sprint(i+1), spawn(i+1)); err != nil {
						return 0, err
					}
					select {
					case <-time.After(time.Duration(10-i) * time.Second):
						return i, nil
					case <-ctx.Done():
						return 0, ctx.Err()
					}
				}
			}
			require.NoError(t, g.Go("0", spawn(0)))
			won, err := fanout.GatherGroup(g, fanout.First[int]())
			require.NoError(t, err)
			assert.Equal(t, "1", won.Key, "the second task is the faster of the first two")
		})
	})
	t.Run("a group that is never waited for leaves goroutines behind", func(t *testing.T) {
		before := goleak.IgnoreCurrent()
		release := make(chan struct{})
		g, _ := fanout.NewGroup[int](context.Background())
		require.NoError(t, g.Go("a", func(context.Context) (int, error) { <-release; return 1, nil }))
		assert.Error(t, goleak.Find(before), "the misuse is visible to goleak")
		close(release)
		_, err := g.Wait()
		require.NoError(t, err)
	})
	t.Run("bad options are refused at once", func(t *testing.T) {
		_, err := fanout.NewGroup[int](context.Background(), fanout.WithQueue(0))
		assert.EqualError(t, err, "fanout: WithQueue(0): queue size must be positive")
	})
}

func TestGatherSeq(t *testing.T) {
	t.Run("a vote over a lazy source", func(t *testing.T) {
		src := func(yield func(fanout.Task[string]) bool) {
			for i, v := range []string{"a", "b", "a", "a", "c"} {
				if !yield(value(fmt.Sprint(i), v)) {
					return
				}
			}
		}
		tally, err := fanout.GatherSeq(context.Background(), src, fanout.Vote(strings.ToUpper), fanout.WithLimit(2))
		require.NoError(t, err)
		assert.Equal(t, "A", tally.Winner)
		assert.Equal(t, 3.0, tally.Votes)
	})
	t.Run("First stops pulling an endless source", func(t *testing.T) {
		var pulled atomic.Int32
		endless := func(yield func(fanout.Task[int]) bool) {
			for i := 0; yield(value(fmt.Sprint(i), i)); i++ {
				pulled.Add(1)
			}
		}
		won, err := fanout.GatherSeq(context.Background(), endless, fanout.First[int](), fanout.WithLimit(4))
		require.NoError(t, err)
		assert.True(t, won.OK())
		assert.Less(t, pulled.Load(), int32(20))
	})
	t.Run("a source's panic is its error", func(t *testing.T) {
		_, err := fanout.GatherSeq(context.Background(), faulty(2, func() { panic("source bug") }), fanout.MergeMap[int](), fanout.WithLimit(2))
		var pe *fanout.PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "source bug", pe.Value)
	})
	t.Run("it needs a bound", func(t *testing.T) {
		_, err := fanout.GatherSeq(context.Background(), faulty(0, func() {}), fanout.MergeMap[int]())
		assert.EqualError(t, err, "fanout: GatherSeq needs WithLimit or WithSemaphore to bound memory")
	})
}

func TestCall(t *testing.T) {
	t.Run("one call under a retry policy", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			calls := 0
			v, err := fanout.Call(context.Background(), func(context.Context) (string, error) {
				if calls++; calls < 3 {
					return "", errors.New("flaky")
				}
				return "ok", nil
			}, fanout.WithRetry(exact(3)))
			require.NoError(t, err)
			assert.Equal(t, "ok", v)
			assert.Equal(t, 3, calls)
		})
	})
	t.Run("its error is the call's, not a TaskError", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, err := fanout.Call(context.Background(), func(ctx context.Context) (int, error) {
				<-ctx.Done()
				return 0, ctx.Err()
			}, fanout.WithTaskTimeout(time.Second))
			assert.EqualError(t, err, "fanout: task timed out: context deadline exceeded")
		})
	})
	t.Run("inside a task holding a semaphore's slot, it borrows the slot", func(t *testing.T) {
		sem := fanout.NewSemaphore(1)
		_, err := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "outer", Do: func(ctx context.Context) (int, error) {
			return fanout.Call(ctx, func(context.Context) (int, error) { return 1, nil }, fanout.WithSemaphore(sem))
		}}}, fanout.WithSemaphore(sem))
		require.NoError(t, err)
	})
}

func TestLessCeremony(t *testing.T) {
	tasks := []fanout.Task[int]{fanout.NewTask("a", func(context.Context) (int, error) { return 1, nil })}
	rs, err := fanout.Run(context.Background(), tasks)
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"a": 1}, rs.Values())

	words := []string{"go", "fan", "out"}
	rs, err = fanout.MapBy(context.Background(), words, func(w string) string { return w },
		func(_ context.Context, w string) (int, error) { return len(w), nil })
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"go": 2, "fan": 3, "out": 3}, rs.Values())
	_, err = fanout.MapBy(context.Background(), []string{"a", "a"}, strings.ToLower,
		func(context.Context, string) (int, error) { return 0, nil })
	assert.EqualError(t, err, `fanout: duplicate key "a" (tasks 0 and 1)`)
	assert.True(t, slices.Equal([]string{"go"}, words[:1]))
}

func TestOrderedStream(t *testing.T) {
	t.Run("Results come in input order while tasks run at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var tasks []fanout.Task[int]
			for i, d := range []time.Duration{5, 1, 3, 2, 4, 1, 1, 2} {
				tasks = append(tasks, sleeping(fmt.Sprint(i), d*time.Second, i))
			}
			seq, err := fanout.Stream(context.Background(), tasks, fanout.WithLimit(4), fanout.WithOrdered())
			require.NoError(t, err)
			start := time.Now()
			var got []int
			var at []time.Duration
			for r := range seq {
				got = append(got, r.Value)
				at = append(at, time.Since(start))
			}
			assert.Equal(t, []int{0, 1, 2, 3, 4, 5, 6, 7}, got)
			assert.Equal(t, 5*time.Second, at[0], "the first yield waits for the slow first task")
			// 0-3 start at once; 1-3 wait in the window for 0, which
			// ends at 5s; then 4-7 start, and 4 ends last, at 9s.
			assert.Equal(t, 9*time.Second, at[7], "the tasks ran concurrently, four at a time")
		})
	})
	t.Run("no task starts beyond the window", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var started atomic.Int32
			src := func(yield func(fanout.Task[int]) bool) {
				for i := 0; i < 1000; i++ {
					d := time.Millisecond
					if i == 0 {
						d = time.Hour // holds back every yield behind it
					}
					task := fanout.Task[int]{Key: fmt.Sprint(i), Do: func(ctx context.Context) (int, error) {
						started.Add(1)
						select {
						case <-time.After(d):
							return i, nil
						case <-ctx.Done():
							return 0, ctx.Err()
						}
					}}
					if !yield(task) {
						return
					}
				}
			}
			seq, err := fanout.StreamSeq(context.Background(), src, fanout.WithLimit(3), fanout.WithOrdered(),
				fanout.WithTimeout(time.Minute))
			require.NoError(t, err)
			n := 0
			for r := range seq {
				if n == 0 {
					assert.Equal(t, int32(3), started.Load(), "three started, then the window was full")
					assert.ErrorIs(t, r.Err, fanout.ErrRunTimeout)
				}
				n++
			}
			assert.Equal(t, 3, n, "after the timeout nothing more is pulled")
		})
	})
	t.Run("breaking out stops it", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			tasks := []fanout.Task[int]{sleeping("a", time.Second, 1), sleeping("b", time.Hour, 2), sleeping("c", time.Millisecond, 3)}
			seq, _ := fanout.Stream(context.Background(), tasks, fanout.WithLimit(2), fanout.WithOrdered())
			for r := range seq {
				assert.Equal(t, "a", r.Key)
				break
			}
		})
	})
}

func TestGroupLen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := fanout.NewGroup[int](context.Background(), fanout.WithLimit(2))
		for i := range 5 {
			require.NoError(t, g.Go(fmt.Sprint(i), func(context.Context) (int, error) { time.Sleep(time.Second); return i, nil }))
		}
		synctest.Wait()
		queued, running := g.Len()
		assert.Equal(t, 3, queued)
		assert.Equal(t, 2, running)
		_, err := g.Wait()
		require.NoError(t, err)
		queued, running = g.Len()
		assert.Zero(t, queued+running)
	})
}

func TestThrottleUntil(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := rate.NewLimiter(1, 1)
		th := fanout.NewThrottle(lim)
		assert.False(t, th.Until().After(time.Now()))
		th.Pause(3 * time.Second)
		assert.Equal(t, time.Now().Add(3*time.Second), th.Until())
		assert.Equal(t, fanout.Limiter(lim), th.Limiter())
	})
}

func TestGroupPriority(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := fanout.NewGroup[int](context.Background(), fanout.WithLimit(1))
		var order []string
		task := func(key string, prio int) fanout.Task[int] {
			return fanout.Task[int]{Key: key, Priority: prio, Do: func(context.Context) (int, error) {
				order = append(order, key)
				time.Sleep(time.Second)
				return 0, nil
			}}
		}
		require.NoError(t, g.GoTask(task("first", 0)))
		synctest.Wait()
		for _, tk := range []fanout.Task[int]{task("a", 0), task("b", 0), task("c", 5), task("d", 0), task("e", 5), task("f", -1)} {
			require.NoError(t, g.GoTask(tk))
		}
		_, err := g.Wait()
		require.NoError(t, err)
		assert.Equal(t, []string{"first", "c", "e", "a", "b", "d", "f"}, order)
	})
}

func TestGatherGroupAggregatorPanics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := fanout.NewGroup[int](context.Background(), fanout.WithLimit(2))
		var running atomic.Int32
		for i := range 4 {
			require.NoError(t, g.Go(fmt.Sprint(i), func(ctx context.Context) (int, error) {
				running.Add(1)
				defer running.Add(-1)
				select {
				case <-time.After(time.Duration(i+1) * time.Second):
					return i, nil
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}))
		}
		_, err := fanout.GatherGroup(g, &addPanics{n: 1})
		var pe *fanout.PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "aggregator bug", pe.Value)
		assert.Zero(t, running.Load(), "every task ended before GatherGroup returned")
		assert.Less(t, time.Since(time.Unix(946684800, 0)), 2*time.Second, "the tasks still running were cancelled")
		assert.ErrorIs(t, g.Go("late", func(context.Context) (int, error) { return 0, nil }), fanout.ErrGroupDone)
	})
}

// TestGroupGoRacesWait adds tasks from goroutines outside the group while
// Wait runs: each Go either lands, and its key has exactly one Result
// that ran, or fails with ErrGroupDone and its task never runs.
func TestGroupGoRacesWait(t *testing.T) {
	for round := range 50 {
		opts := [][]fanout.Option{
			{fanout.WithLimit(2)},
			{},
			{fanout.WithLimit(1), fanout.WithTaskTimeout(time.Second)},
		}[round%3]
		g, err := fanout.NewGroup[int](context.Background(), opts...)
		require.NoError(t, err)
		var ran sync.Map // keys whose Do ran
		const adders, each = 4, 50
		accepted := make([][]string, adders)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for a := range adders {
			wg.Go(func() {
				<-start
				for i := range each {
					key := fmt.Sprintf("a%d-%d", a, i)
					err := g.Go(key, func(context.Context) (int, error) {
						ran.Store(key, true)
						return i, nil
					})
					if errors.Is(err, fanout.ErrGroupDone) {
						return // the group is done: so is every later Go
					}
					require.NoError(t, err)
					accepted[a] = append(accepted[a], key)
				}
			})
		}
		require.NoError(t, g.Go("first", func(context.Context) (int, error) { return 0, nil }))
		close(start)
		rs, err := g.Wait()
		wg.Wait()
		require.NoError(t, err)
		want := 1
		for a := range adders {
			for _, key := range accepted[a] {
				_, err := rs.Value(key)
				require.NoError(t, err, "round %d: accepted key %s has no Result", round, key)
				_, ok := ran.Load(key)
				require.True(t, ok, "round %d: accepted key %s never ran", round, key)
			}
			want += len(accepted[a])
		}
		require.Equal(t, want, rs.Len(), "round %d: one Result per accepted key, no more", round)
		n := 0
		ran.Range(func(any, any) bool { n++; return true })
		require.Equal(t, want-1, n, "round %d: only accepted tasks ran", round)
	}
}
