package fanout_test

import (
	"context"
	"errors"
	"iter"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

// User code that panics, calls runtime.Goexit or blocks, wherever fanout
// calls it: the key fails, or the caller hears of it; nothing hangs and no
// goroutine is left behind (goleak checks after every test).

func goexiting(key string) fanout.Task[int] {
	return fanout.Task[int]{Key: key, Do: func(context.Context) (int, error) {
		runtime.Goexit()
		return 1, nil
	}}
}

func TestGoexitInATask(t *testing.T) {
	tasks := func() []fanout.Task[int] {
		return []fanout.Task[int]{value("a", 1), goexiting("exit"), value("b", 2), value("c", 3)}
	}
	options := map[string][]fanout.Option{
		"plain":               nil,
		"limit 1":             {fanout.WithLimit(1)},
		"timeout and retry":   {fanout.WithLimit(1), fanout.WithTaskTimeout(time.Minute), fanout.WithRetry(exact(3))},
		"hedged":              {fanout.WithHedge(fanout.HedgePolicy{Delay: time.Hour})},
		"observed, semaphore": {fanout.WithSemaphore(fanout.NewSemaphore(1)), fanout.WithObserver(&fanout.Observer{})},
	}
	for name, opts := range options {
		t.Run("Run fails the key and goes on: "+name, func(t *testing.T) {
			rs, err := fanout.Run(context.Background(), tasks(), opts...)
			require.Error(t, err)
			assert.ErrorIs(t, err, fanout.ErrGoexit)
			r, _ := rs.Get("exit")
			assert.ErrorIs(t, r.Err, fanout.ErrGoexit)
			assert.Zero(t, r.Value)
			assert.Equal(t, 1, r.Attempts, "a Goexit is not retried")
			assert.Equal(t, 3, rs.Succeeded())
		})
		t.Run("Stream yields the key and ends: "+name, func(t *testing.T) {
			seq, err := fanout.Stream(context.Background(), tasks(), opts...)
			require.NoError(t, err)
			got := map[string]error{}
			for r := range seq {
				got[r.Key] = r.Err
			}
			assert.Len(t, got, 4)
			assert.ErrorIs(t, got["exit"], fanout.ErrGoexit)
		})
	}
	t.Run("the key's error says what happened", func(t *testing.T) {
		_, err := fanout.Run(context.Background(), []fanout.Task[int]{goexiting("x")})
		assert.EqualError(t, err, `fanout: task "x": runtime.Goexit called`)
	})
}

// addPanics is an Aggregator whose Add panics at its n-th Result.
type addPanics struct {
	n, seen int
	goexit  bool
}

func (a *addPanics) Add(fanout.Result[int]) bool {
	if a.seen++; a.seen == a.n {
		if a.goexit {
			runtime.Goexit()
		}
		panic("aggregator bug")
	}
	return false
}

func (a *addPanics) Result(context.Context) (int, error) { return a.seen, nil }

func TestPanicInAnAggregator(t *testing.T) {
	t.Run("Add's panic is Gather's error, once every task has ended", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var running atomic.Int32
			slow := func(key string) fanout.Task[int] {
				return fanout.Task[int]{Key: key, Do: func(ctx context.Context) (int, error) {
					running.Add(1)
					defer running.Add(-1)
					<-ctx.Done()
					return 0, ctx.Err()
				}}
			}
			agg := &addPanics{n: 1}
			_, err := fanout.Gather(context.Background(),
				[]fanout.Task[int]{value("a", 1), slow("b"), slow("c"), slow("d")}, agg, fanout.WithLimit(3))
			var pe *fanout.PanicError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "aggregator bug", pe.Value)
			assert.Contains(t, string(pe.Stack), "addPanics")
			assert.Zero(t, running.Load(), "every task ended before Gather returned")
			assert.Equal(t, 1, agg.seen, "a broken aggregator is not called again")
		})
	})
	t.Run("Add's Goexit is Gather's error", func(t *testing.T) {
		_, err := fanout.Gather(context.Background(),
			[]fanout.Task[int]{value("a", 1), value("b", 2), value("c", 3)}, &addPanics{n: 2, goexit: true}, fanout.WithLimit(1))
		assert.ErrorIs(t, err, fanout.ErrGoexit)
	})
	tasks := []fanout.Task[int]{value("a", 1), value("b", 2)}
	t.Run("Reduce's function", func(t *testing.T) {
		_, err := fanout.Gather(context.Background(), tasks,
			fanout.Reduce(0, func(int, fanout.Result[int]) int { panic("reduce bug") }))
		var pe *fanout.PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "reduce bug", pe.Value)
	})
	t.Run("Collect's function", func(t *testing.T) {
		_, err := fanout.Gather(context.Background(), tasks,
			fanout.Collect(func(context.Context, []fanout.Result[int]) (int, error) { panic("judge bug") }))
		var pe *fanout.PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "judge bug", pe.Value)
		assert.EqualError(t, err, "fanout: panic: judge bug")
	})
	t.Run("Vote's pick", func(t *testing.T) {
		_, err := fanout.Gather(context.Background(), tasks,
			fanout.Vote(func(int) string { panic("pick bug") }))
		var pe *fanout.PanicError
		require.ErrorAs(t, err, &pe)
	})
}

func TestEmptyGatherErrors(t *testing.T) {
	_, err := fanout.Gather[int](context.Background(), nil, fanout.First[int]())
	assert.EqualError(t, err, "fanout: First: no keys")
	_, err = fanout.Gather[int](context.Background(), nil, fanout.Vote(func(v int) int { return v }))
	assert.EqualError(t, err, "fanout: vote: no keys")
}

// panicking yields n tasks, then does what fault says.
func faulty(n int, fault func()) iter.Seq[fanout.Task[int]] {
	return func(yield func(fanout.Task[int]) bool) {
		for i := range n {
			if !yield(value("t"+string(rune('0'+i)), i)) {
				return
			}
		}
		fault()
	}
}

func TestSourceFaults(t *testing.T) {
	t.Run("a panic is raised again on the ranging goroutine after every task ended", func(t *testing.T) {
		var yielded int
		var recovered any
		func() {
			defer func() { recovered = recover() }()
			seq, err := fanout.StreamSeq(context.Background(), faulty(3, func() { panic("source bug") }), fanout.WithLimit(2))
			require.NoError(t, err)
			for range seq {
				yielded++
			}
		}()
		var pe *fanout.PanicError
		require.ErrorAs(t, recovered.(error), &pe)
		assert.Equal(t, "source bug", pe.Value)
		assert.Equal(t, 3, yielded, "every task pulled before the panic has its Result")
	})
	t.Run("a Goexit is raised again on the ranging goroutine", func(t *testing.T) {
		returned, yielded := false, 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			seq, _ := fanout.StreamSeq(context.Background(), faulty(2, runtime.Goexit), fanout.WithLimit(2))
			for range seq {
				yielded++
			}
			returned = true
		}()
		<-done
		assert.False(t, returned, "the ranging goroutine exited")
		assert.Equal(t, 2, yielded)
	})
}

func TestBlockedSource(t *testing.T) {
	blocked := func(feed <-chan fanout.Task[int]) iter.Seq[fanout.Task[int]] {
		return func(yield func(fanout.Task[int]) bool) {
			for t := range feed {
				if !yield(t) {
					return
				}
			}
		}
	}
	t.Run("WithTimeout bounds a run whose source blocks", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			feed := make(chan fanout.Task[int], 1)
			feed <- value("a", 1)
			seq, err := fanout.StreamSeq(context.Background(), blocked(feed), fanout.WithLimit(2), fanout.WithTimeout(time.Second))
			require.NoError(t, err)
			start := time.Now()
			var keys []string
			for r := range seq {
				keys = append(keys, r.Key)
			}
			assert.Equal(t, time.Second, time.Since(start))
			assert.Equal(t, []string{"a"}, keys)
			feed <- value("late", 2) // the abandoned pull returns; its task is dropped
			close(feed)
		})
	})
	t.Run("breaking the loop ends it while the source blocks", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			feed := make(chan fanout.Task[int], 1)
			feed <- value("a", 1)
			seq, _ := fanout.StreamSeq(context.Background(), blocked(feed), fanout.WithLimit(1))
			for range seq {
				break
			}
			close(feed) // lets the abandoned pull end, so the bubble can
		})
	})
	t.Run("the source is not pulled once the run has stopped", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var pulls atomic.Int32
			src := func(yield func(fanout.Task[int]) bool) {
				for i := 0; ; i++ {
					pulls.Add(1)
					if i == 1 {
						time.Sleep(time.Second) // a slow step, under way as the run stops
					}
					task := value("t"+string(rune('0'+i)), i)
					if i == 0 {
						task = fanout.Task[int]{Key: "bad", Do: func(context.Context) (int, error) {
							time.Sleep(100 * time.Millisecond) // the slow step starts meanwhile
							return 0, errors.New("bad")
						}}
					}
					if !yield(task) {
						return
					}
				}
			}
			seq, _ := fanout.StreamSeq(context.Background(), src, fanout.WithLimit(2), fanout.WithFailFast())
			start := time.Now()
			for range seq {
			}
			assert.Equal(t, 100*time.Millisecond, time.Since(start), "the stream did not wait for the slow step")
			time.Sleep(2 * time.Second)
			assert.Equal(t, int32(2), pulls.Load(), "no pull after the stop")
		})
	})
}

func TestPanicInALimiter(t *testing.T) {
	rs, err := fanout.Run(context.Background(), []fanout.Task[int]{value("a", 1), value("b", 2)},
		fanout.WithRateLimit(panickyLimiter{}), fanout.WithLimit(1))
	require.Error(t, err)
	for _, r := range rs.All() {
		var pe *fanout.PanicError
		assert.ErrorAs(t, r.Err, &pe, "a limiter's panic fails the key that waited")
	}
}

type panickyLimiter struct{}

func (panickyLimiter) WaitN(context.Context, int) error { panic("limiter bug") }
