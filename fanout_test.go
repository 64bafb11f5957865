package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"strconv"
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

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// value returns a task that succeeds with v.
func value[T any](key string, v T) fanout.Task[T] {
	return fanout.Task[T]{Key: key, Do: func(context.Context) (T, error) { return v, nil }}
}

// failing returns a task that fails with err.
func failing[T any](key string, err error) fanout.Task[T] {
	return fanout.Task[T]{Key: key, Do: func(context.Context) (T, error) { var zero T; return zero, err }}
}

// hanging returns a task that waits for its context to end.
func hanging[T any](key string) fanout.Task[T] {
	return fanout.Task[T]{Key: key, Do: func(ctx context.Context) (T, error) {
		<-ctx.Done()
		var zero T
		return zero, ctx.Err()
	}}
}

// sleeping returns a task that succeeds with v after d, or fails when its
// context ends first.
func sleeping[T any](key string, d time.Duration, v T) fanout.Task[T] {
	return fanout.Task[T]{Key: key, Do: func(ctx context.Context) (T, error) {
		select {
		case <-time.After(d):
			return v, nil
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}}
}

func TestRun(t *testing.T) {
	boom := errors.New("boom")
	rs, err := fanout.Run(context.Background(), []fanout.Task[string]{
		value("a", "A"),
		failing[string]("b", boom),
		{Key: "c", Do: func(context.Context) (string, error) { panic("oops") }},
		value("d", "D"),
	})

	t.Run("every key has exactly one result, in input order", func(t *testing.T) {
		require.Equal(t, 4, rs.Len())
		var keys []string
		for _, r := range rs.All() {
			keys = append(keys, r.Key)
			assert.Equal(t, 1, r.Attempts, r.Key)
		}
		assert.Equal(t, []string{"a", "b", "c", "d"}, keys)
	})
	t.Run("answers by key and as maps", func(t *testing.T) {
		v, err := rs.Value("a")
		assert.NoError(t, err)
		assert.Equal(t, "A", v)
		_, err = rs.Value("b")
		assert.ErrorIs(t, err, boom)
		_, err = rs.Value("nope")
		assert.ErrorContains(t, err, "no such key")
		assert.Equal(t, map[string]string{"a": "A", "d": "D"}, rs.Values())
		assert.Len(t, rs.Errs(), 2)
		assert.Equal(t, 2, rs.Succeeded())
	})
	t.Run("the error joins each failed key's TaskError in input order", func(t *testing.T) {
		require.Error(t, err)
		assert.ErrorIs(t, err, boom)
		assert.Equal(t, "fanout: task \"b\": boom\nfanout: task \"c\": panic: oops", err.Error())
		var te *fanout.TaskError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, "b", te.Key)
	})
	t.Run("a panic becomes the key's PanicError with a trimmed stack", func(t *testing.T) {
		r, _ := rs.Get("c")
		var pe *fanout.PanicError
		require.ErrorAs(t, r.Err, &pe)
		assert.Equal(t, "oops", pe.Value)
		assert.NotContains(t, string(pe.Stack), "[running]")
		assert.True(t, strings.HasPrefix(string(pe.Stack), "github.com/gofanout/fanout_test.TestRun"), string(pe.Stack))
	})
}

func TestRunAllSucceeded(t *testing.T) {
	rs, err := fanout.Run(context.Background(), []fanout.Task[int]{value("x", 1), value("y", 2)})
	require.NoError(t, err)
	assert.NoError(t, rs.Err())
	assert.Equal(t, map[string]int{"x": 1, "y": 2}, rs.Values())
}

func TestRunNoTasks(t *testing.T) {
	rs, err := fanout.Run[int](context.Background(), nil)
	require.NoError(t, err)
	assert.Equal(t, 0, rs.Len())
}

func TestBadInput(t *testing.T) {
	ok := value("ok", 1)
	nilDo := fanout.Task[int]{Key: "nodo"}
	tests := []struct {
		name  string
		give  []fanout.Task[int]
		opts  []fanout.Option
		wantS string
	}{
		{"empty key", []fanout.Task[int]{ok, {Do: ok.Do}}, nil, `fanout: task 1: empty Key`},
		{"duplicate key", []fanout.Task[int]{ok, value("b", 2), ok}, nil, `fanout: duplicate key "ok" (tasks 0 and 2)`},
		{"nil Do", []fanout.Task[int]{ok, nilDo}, nil, `fanout: task "nodo": nil Do`},
		{"negative weight", []fanout.Task[int]{{Key: "w", Do: ok.Do, Weight: -1}}, nil, `fanout: task "w": negative Weight -1`},
		{"NaN weight", []fanout.Task[int]{{Key: "w", Do: ok.Do, Weight: math.NaN()}}, nil, `fanout: task "w": Weight NaN is not a finite number`},
		{"infinite weight", []fanout.Task[int]{{Key: "w", Do: ok.Do, Weight: math.Inf(1)}}, nil, `fanout: task "w": Weight +Inf is not a finite number`},
		{"negative tokens", []fanout.Task[int]{{Key: "t", Do: ok.Do, Tokens: -2}}, nil, `fanout: task "t": negative Tokens -2`},
		{"negative limit", []fanout.Task[int]{ok}, []fanout.Option{fanout.WithLimit(-1)}, `fanout: WithLimit(-1): limit must not be negative`},
		{"negative task timeout", []fanout.Task[int]{ok}, []fanout.Option{fanout.WithTaskTimeout(-time.Second)}, `fanout: WithTaskTimeout(-1s): timeout must not be negative`},
		{"negative run timeout", []fanout.Task[int]{ok}, []fanout.Option{fanout.WithTimeout(-time.Second)}, `fanout: WithTimeout(-1s): timeout must not be negative`},
		{"nil semaphore", []fanout.Task[int]{ok}, []fanout.Option{fanout.WithSemaphore(nil)}, `fanout: WithSemaphore(nil): semaphore must not be nil`},
		{"nil option", []fanout.Task[int]{ok}, []fanout.Option{nil}, `fanout: nil Option`},
		{"nil limiter", []fanout.Task[int]{ok}, []fanout.Option{fanout.WithRateLimit(nil)}, `fanout: WithRateLimit(nil): limiter must not be nil`},
		{"bad hedge", []fanout.Task[int]{ok}, []fanout.Option{fanout.WithHedge(fanout.HedgePolicy{})}, `fanout: WithHedge: set Delay or Quantile`},
		{"bad retry", []fanout.Task[int]{ok}, []fanout.Option{fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: -1})}, `fanout: WithRetry: negative MaxAttempts -1`},
		{"bad budget", []fanout.Task[int]{ok}, []fanout.Option{fanout.WithBudget(fanout.Cost{Tokens: -1})}, `fanout: WithBudget(Cost{Tokens: -1, Cents: 0}): budget must be positive`},
		{"tokens beyond a limiter's burst", []fanout.Task[int]{ok, {Key: "big", Tokens: 9000, Do: ok.Do}},
			[]fanout.Option{fanout.WithRequestLimit(rate.NewLimiter(1, 1)), fanout.WithRateLimit(fanout.NewThrottle(rate.NewLimiter(100, 8000)))},
			`fanout: task "big": charge of 9000 exceeds the burst 8000 of the limiter of WithRateLimit`},
		{"a request limiter with an empty bucket", []fanout.Task[int]{ok},
			[]fanout.Option{fanout.WithRequestLimit(rate.NewLimiter(1, 0))},
			`fanout: task "ok": charge of 1 exceeds the burst 0 of the limiter of WithRequestLimit`},
		{"nil observer", []fanout.Task[int]{ok}, []fanout.Option{fanout.WithObserver(nil)}, `fanout: WithObserver(nil): observer must not be nil`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var started atomic.Int32
			tasks := make([]fanout.Task[int], len(tt.give))
			for i, task := range tt.give {
				if task.Do != nil {
					do := task.Do
					task.Do = func(ctx context.Context) (int, error) { started.Add(1); return do(ctx) }
				}
				tasks[i] = task
			}
			rs, err := fanout.Run(context.Background(), tasks, tt.opts...)
			assert.EqualError(t, err, tt.wantS)
			assert.Nil(t, rs)
			_, err = fanout.Stream(context.Background(), tasks, tt.opts...)
			assert.EqualError(t, err, tt.wantS)
			_, err = fanout.Gather(context.Background(), tasks, fanout.MergeMap[int](), tt.opts...)
			assert.EqualError(t, err, tt.wantS)
			assert.Zero(t, started.Load(), "no task may start")
		})
	}
}

func TestLimit(t *testing.T) {
	for _, limit := range []int{1, 3, 8} {
		t.Run(fmt.Sprintf("exactly %d in flight", limit), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var inFlight, peak atomic.Int32
				tasks := make([]fanout.Task[int], 48)
				for i := range tasks {
					tasks[i] = fanout.Task[int]{Key: strconv.Itoa(i), Do: func(context.Context) (int, error) {
						n := inFlight.Add(1)
						defer inFlight.Add(-1)
						for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
						}
						time.Sleep(time.Millisecond) // others pile up here if the limit leaks
						return i, nil
					}}
				}
				start := time.Now()
				rs, err := fanout.Run(context.Background(), tasks, fanout.WithLimit(limit))
				require.NoError(t, err)
				assert.Equal(t, 48, rs.Len())
				assert.Equal(t, int32(limit), peak.Load())
				assert.Equal(t, time.Duration(48/limit)*time.Millisecond, time.Since(start), "the limit kept busy")
			})
		})
	}
}

func TestPriority(t *testing.T) {
	var mu sync.Mutex
	var order []string
	task := func(key string, prio int) fanout.Task[int] {
		return fanout.Task[int]{Key: key, Priority: prio, Do: func(context.Context) (int, error) {
			mu.Lock()
			order = append(order, key)
			mu.Unlock()
			return 0, nil
		}}
	}
	_, err := fanout.Run(context.Background(), []fanout.Task[int]{
		task("low", -1), task("mid1", 0), task("high", 5), task("mid2", 0), task("top", 9),
	}, fanout.WithLimit(1))
	require.NoError(t, err)
	assert.Equal(t, []string{"top", "high", "mid1", "mid2", "low"}, order)
}

func TestTaskTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		rs, err := fanout.Run(context.Background(), []fanout.Task[int]{
			sleeping("fast", time.Second, 1),
			sleeping("slow", 3*time.Second, 2),
			hanging[int]("stuck"),
		}, fanout.WithTaskTimeout(2*time.Second))
		require.Error(t, err)
		assert.Equal(t, 2*time.Second, time.Since(start), "the run ends at the per-task deadline")

		fast, _ := rs.Get("fast")
		assert.NoError(t, fast.Err)
		assert.Equal(t, time.Second, fast.Elapsed)
		for _, key := range []string{"slow", "stuck"} {
			r, _ := rs.Get(key)
			assert.ErrorIs(t, r.Err, fanout.ErrTaskTimeout, key)
			assert.ErrorIs(t, r.Err, context.DeadlineExceeded, key)
			assert.Equal(t, 2*time.Second, r.Elapsed, key)
		}
	})
}

func TestTaskTimeoutIsCauseOfContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cause error
		_, _ = fanout.Run(context.Background(), []fanout.Task[int]{{Key: "k", Do: func(ctx context.Context) (int, error) {
			<-ctx.Done()
			cause = context.Cause(ctx)
			return 0, errors.New("gave up")
		}}}, fanout.WithTaskTimeout(time.Second))
		assert.Equal(t, fanout.ErrTaskTimeout, cause)
	})
}

func TestRunTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		rs, err := fanout.Run(context.Background(), []fanout.Task[int]{
			sleeping("a", time.Second, 1),
			sleeping("b", 5*time.Second, 2),
			sleeping("c", time.Second, 3), // waits for a slot until b ends
		}, fanout.WithTimeout(2*time.Second), fanout.WithLimit(2))
		require.Error(t, err)
		assert.Equal(t, 2*time.Second, time.Since(start))

		a, _ := rs.Get("a")
		assert.NoError(t, a.Err)
		c, _ := rs.Get("c")
		assert.NoError(t, c.Err, "c started at 1s when a's slot freed, and ended at 2s")
		b, _ := rs.Get("b")
		assert.ErrorIs(t, b.Err, fanout.ErrRunTimeout)
		assert.ErrorIs(t, b.Err, context.DeadlineExceeded)
		assert.NotErrorIs(t, b.Err, fanout.ErrTaskTimeout)
	})
}

func TestRunTimeoutSkipsUnstarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{
			sleeping("a", 5*time.Second, 1),
			sleeping("b", time.Second, 2),
		}, fanout.WithTimeout(2*time.Second), fanout.WithLimit(1))
		b, _ := rs.Get("b")
		assert.ErrorIs(t, b.Err, fanout.ErrSkipped)
		assert.ErrorIs(t, b.Err, fanout.ErrRunTimeout)
		assert.Zero(t, b.Attempts)
	})
}

func TestFailFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		start := time.Now()
		rs, err := fanout.Run(context.Background(), []fanout.Task[int]{
			sleeping("slow", time.Hour, 1),
			{Key: "bad", Do: func(context.Context) (int, error) { time.Sleep(time.Second); return 0, boom }},
			sleeping("queued", time.Second, 3),
		}, fanout.WithFailFast(), fanout.WithLimit(2))
		assert.Equal(t, time.Second, time.Since(start), "the first error cancels the rest at once")
		assert.ErrorIs(t, err, boom)

		slow, _ := rs.Get("slow")
		assert.ErrorIs(t, slow.Err, context.Canceled)
		assert.ErrorIs(t, slow.Err, boom, "the cancelled key reports the cause, not a bare context.Canceled")
		var te *fanout.TaskError
		require.ErrorAs(t, slow.Err, &te)
		assert.Equal(t, "bad", te.Key)
		queued, _ := rs.Get("queued")
		assert.ErrorIs(t, queued.Err, fanout.ErrSkipped)
		assert.ErrorIs(t, queued.Err, boom)
	})
}

func TestParentCancelReportsCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		shutdown := errors.New("shutting down")
		ctx, cancel := context.WithCancelCause(context.Background())
		time.AfterFunc(time.Second, func() { cancel(shutdown) })
		rs, _ := fanout.Run(ctx, []fanout.Task[int]{hanging[int]("a")})
		a, _ := rs.Get("a")
		assert.ErrorIs(t, a.Err, shutdown)
		assert.ErrorIs(t, a.Err, context.Canceled)
	})
}

func TestTaskIgnoringContextIsWaitedFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "deaf", Do: func(context.Context) (int, error) {
			time.Sleep(3 * time.Second)
			return 7, nil
		}}}, fanout.WithTaskTimeout(time.Second))
		assert.Equal(t, 3*time.Second, time.Since(start))
		v, err := rs.Value("deaf")
		assert.NoError(t, err, "a value returned late is kept")
		assert.Equal(t, 7, v)
	})
}

func TestStream(t *testing.T) {
	t.Run("yields in completion order", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			seq, err := fanout.Stream(context.Background(), []fanout.Task[string]{
				sleeping("c", 3*time.Second, "C"),
				sleeping("a", time.Second, "A"),
				sleeping("b", 2*time.Second, "B"),
			})
			require.NoError(t, err)
			var keys []string
			for r := range seq {
				keys = append(keys, r.Key)
			}
			assert.Equal(t, []string{"a", "b", "c"}, keys)
		})
	})
	t.Run("breaking out cancels the rest and waits for them", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var started, ended atomic.Int32
			var causes sync.Map
			tasks := []fanout.Task[int]{sleeping("fast", time.Second, 1)}
			for i := range 5 {
				key := fmt.Sprintf("slow%d", i)
				tasks = append(tasks, fanout.Task[int]{Key: key, Do: func(ctx context.Context) (int, error) {
					started.Add(1)
					defer ended.Add(1)
					<-ctx.Done()
					causes.Store(key, context.Cause(ctx))
					return 0, ctx.Err()
				}})
			}
			seq, err := fanout.Stream(context.Background(), tasks, fanout.WithLimit(3))
			require.NoError(t, err)
			start := time.Now()
			for r := range seq {
				assert.Equal(t, "fast", r.Key)
				break
			}
			assert.Equal(t, time.Second, time.Since(start))
			// Two slow tasks were running; a third may have taken the
			// fast one's slot before the break.
			assert.Contains(t, []int32{2, 3}, started.Load())
			assert.Equal(t, started.Load(), ended.Load(), "the running tasks ended before the loop did")
			causes.Range(func(_, v any) bool {
				assert.Equal(t, fanout.ErrStopped, v)
				return true
			})
		})
	})
	t.Run("each range runs the tasks anew", func(t *testing.T) {
		var calls atomic.Int32
		seq, err := fanout.Stream(context.Background(), []fanout.Task[int]{{Key: "k", Do: func(context.Context) (int, error) {
			return int(calls.Add(1)), nil
		}}})
		require.NoError(t, err)
		for range seq {
		}
		for range seq {
		}
		assert.Equal(t, int32(2), calls.Load())
	})
}

func TestStreamSeq(t *testing.T) {
	t.Run("runs a lazy source with bounded concurrency", func(t *testing.T) {
		const n = 2000
		var inFlight, peak, pulled atomic.Int32
		src := func(yield func(fanout.Task[int]) bool) {
			for i := range n {
				pulled.Add(1)
				ok := yield(fanout.Task[int]{Key: strconv.Itoa(i), Do: func(context.Context) (int, error) {
					c := inFlight.Add(1)
					defer inFlight.Add(-1)
					for p := peak.Load(); c > p && !peak.CompareAndSwap(p, c); p = peak.Load() {
					}
					return i * 2, nil
				}})
				if !ok {
					return
				}
			}
		}
		seq, err := fanout.StreamSeq(context.Background(), src, fanout.WithLimit(4))
		require.NoError(t, err)
		sum, count := 0, 0
		seen := make(map[int]bool)
		for r := range seq {
			require.NoError(t, r.Err)
			assert.False(t, seen[r.Index])
			seen[r.Index] = true
			sum += r.Value
			count++
		}
		assert.Equal(t, n, count)
		assert.Equal(t, n*(n-1), sum)
		assert.LessOrEqual(t, peak.Load(), int32(4))
	})
	t.Run("breaking out stops pulling the source", func(t *testing.T) {
		var pulled atomic.Int32
		src := func(yield func(fanout.Task[int]) bool) {
			for i := 0; ; i++ {
				pulled.Add(1)
				if !yield(value(strconv.Itoa(i), i)) {
					return
				}
			}
		}
		seq, err := fanout.StreamSeq(context.Background(), src, fanout.WithLimit(2))
		require.NoError(t, err)
		got := 0
		for range seq {
			if got++; got == 10 {
				break
			}
		}
		// Workers drain what the source yields until it is stopped; an
		// infinite source must still end.
		assert.Less(t, pulled.Load(), int32(1_000_000))
	})
	t.Run("an invalid task fails alone", func(t *testing.T) {
		src := slicesValues([]fanout.Task[int]{value("a", 1), {Key: "nodo"}, {Do: value("x", 0).Do}})
		seq, err := fanout.StreamSeq(context.Background(), src, fanout.WithLimit(1))
		require.NoError(t, err)
		errs := map[int]string{}
		for r := range seq {
			if r.Err != nil {
				errs[r.Index] = r.Err.Error()
			}
		}
		assert.Equal(t, map[int]string{1: `fanout: task "nodo": nil Do`, 2: `fanout: task 2: empty Key`}, errs)
	})
	t.Run("needs a bound", func(t *testing.T) {
		_, err := fanout.StreamSeq(context.Background(), slicesValues([]fanout.Task[int]{}))
		assert.EqualError(t, err, "fanout: StreamSeq needs WithLimit or WithSemaphore to bound memory")
		_, err = fanout.StreamSeq[int](context.Background(), nil, fanout.WithLimit(1))
		assert.EqualError(t, err, "fanout: StreamSeq: nil task source")
	})
}

func slicesValues[T any](s []T) iter.Seq[T] {
	return func(yield func(T) bool) {
		for _, v := range s {
			if !yield(v) {
				return
			}
		}
	}
}

func TestMap(t *testing.T) {
	rs, err := fanout.Map(context.Background(), []string{"a", "bb", "ccc"}, func(_ context.Context, s string) (int, error) {
		if s == "bb" {
			return 0, errors.New("even")
		}
		return len(s), nil
	}, fanout.WithLimit(2))
	assert.EqualError(t, err, `fanout: task "1": even`)
	assert.Equal(t, map[string]int{"0": 1, "2": 3}, rs.Values())
	_, err = fanout.Map[int, int](context.Background(), []int{1}, nil)
	assert.EqualError(t, err, "fanout: Map: nil function")
}

func TestSemaphore(t *testing.T) {
	t.Run("caps in-flight tasks across runs", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sem := fanout.NewSemaphore(3)
			var inFlight, peak atomic.Int32
			task := func(i int) fanout.Task[int] {
				return fanout.Task[int]{Key: strconv.Itoa(i), Do: func(context.Context) (int, error) {
					n := inFlight.Add(1)
					defer inFlight.Add(-1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					time.Sleep(time.Millisecond)
					return i, nil
				}}
			}
			start := time.Now()
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					tasks := make([]fanout.Task[int], 30)
					for i := range tasks {
						tasks[i] = task(i)
					}
					_, err := fanout.Run(context.Background(), tasks, fanout.WithSemaphore(sem))
					assert.NoError(t, err)
				})
			}
			wg.Wait()
			assert.Equal(t, int32(3), peak.Load())
			assert.Equal(t, 40*time.Millisecond, time.Since(start), "120 tasks, 3 at a time")
			assert.Zero(t, sem.InUse())
		})
	})
	t.Run("a nested run on the same semaphore does not deadlock", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sem := fanout.NewSemaphore(2)
			inner := func(ctx context.Context) (int, error) {
				// Every slot is held by an outer task when this runs.
				rs, err := fanout.Run(ctx, []fanout.Task[int]{
					sleeping("x", time.Second, 1), sleeping("y", time.Second, 2), sleeping("z", time.Second, 3),
				}, fanout.WithSemaphore(sem))
				if err != nil {
					return 0, err
				}
				sum := 0
				for _, v := range rs.Values() {
					sum += v
				}
				return sum, nil
			}
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{
				{Key: "a", Do: inner}, {Key: "b", Do: inner}, {Key: "c", Do: inner},
			}, fanout.WithSemaphore(sem))
			require.NoError(t, err)
			assert.Equal(t, map[string]int{"a": 6, "b": 6, "c": 6}, rs.Values())
			assert.Zero(t, sem.InUse())
		})
	})
	t.Run("NewSemaphore rejects a non-positive size", func(t *testing.T) {
		assert.PanicsWithValue(t, "fanout: NewSemaphore(0): n must be positive", func() { fanout.NewSemaphore(0) })
	})
}

func TestAttemptContextUnderTaskTimeout(t *testing.T) {
	type userKey struct{}
	synctest.Test(t, func(t *testing.T) {
		parent := context.WithValue(context.Background(), userKey{}, "from the caller")
		start := time.Now()
		var deadline time.Time
		var childCause, childErr error
		var value any
		_, err := fanout.Run(parent, []fanout.Task[int]{{Key: "k", Do: func(ctx context.Context) (int, error) {
			deadline, _ = ctx.Deadline()
			value = ctx.Value(userKey{})
			child, cancel := context.WithCancel(ctx)
			defer cancel()
			<-child.Done()
			childCause, childErr = context.Cause(child), child.Err()
			return 0, ctx.Err()
		}}}, fanout.WithTaskTimeout(3*time.Second))
		assert.ErrorIs(t, err, fanout.ErrTaskTimeout)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, start.Add(3*time.Second), deadline)
		assert.Equal(t, "from the caller", value)
		assert.Equal(t, fanout.ErrTaskTimeout, childCause, "a context derived in the task learns why")
		assert.Error(t, childErr)
	})
}

func TestRunDeadlineIsEarlierThanTaskDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var deadline time.Time
		_, _ = fanout.Run(context.Background(), []fanout.Task[int]{{Key: "k", Do: func(ctx context.Context) (int, error) {
			deadline, _ = ctx.Deadline()
			return 0, nil
		}}}, fanout.WithTaskTimeout(time.Hour), fanout.WithTimeout(time.Minute))
		assert.Equal(t, start.Add(time.Minute), deadline)
	})
}

func TestFailFastCancelsAttemptsWithDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		start := time.Now()
		rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{
			hanging[int]("a"), hanging[int]("b"),
			{Key: "bad", Do: func(context.Context) (int, error) { time.Sleep(time.Second); return 0, boom }},
		}, fanout.WithFailFast(), fanout.WithTaskTimeout(time.Hour), fanout.WithLimit(3))
		assert.Equal(t, time.Second, time.Since(start))
		for _, key := range []string{"a", "b"} {
			r, _ := rs.Get(key)
			assert.ErrorIs(t, r.Err, boom, key)
			assert.ErrorIs(t, r.Err, context.Canceled, key)
			assert.NotErrorIs(t, r.Err, fanout.ErrTaskTimeout, key)
		}
	})
}

func TestSequentialDeadlinesDoNotLeak(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// One worker, one timer re-armed for each task: every task must
		// get its own full second.
		tasks := make([]fanout.Task[int], 20)
		for i := range tasks {
			tasks[i] = sleeping(fmt.Sprint(i), 999*time.Millisecond, i)
		}
		rs, err := fanout.Run(context.Background(), tasks, fanout.WithTaskTimeout(time.Second), fanout.WithLimit(1))
		require.NoError(t, err)
		assert.Equal(t, 20, rs.Succeeded())
	})
}
