package fanout_test

import (
	"context"
	"errors"
	"runtime"
	"strconv"
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

// These tests hold the package to the promises of its doc comments where
// they meet: user code that panics, calls runtime.Goexit or blocks, beside
// options that each work alone.

// goexitTask returns a task that calls runtime.Goexit, as t.FailNow does.
func goexitTask(key string, calls *atomic.Int32) fanout.Task[int] {
	return fanout.Task[int]{Key: key, Do: func(context.Context) (int, error) {
		calls.Add(1)
		runtime.Goexit()
		return 1, nil
	}}
}

// outcomeGuard admits every attempt and keeps the outcome it is told of
// each, counting the attempts it admitted.
type outcomeGuard struct {
	mu       sync.Mutex
	admitted int
	outcomes []fanout.Outcome
}

func (g *outcomeGuard) Admit(context.Context, fanout.Admission) (func(fanout.Outcome), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.admitted++
	return func(o fanout.Outcome) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.outcomes = append(g.outcomes, o)
	}, nil
}

func (g *outcomeGuard) told() (admitted int, outcomes []fanout.Outcome) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.admitted, append([]fanout.Outcome(nil), g.outcomes...)
}

// exitingGuard calls runtime.Goexit in Admit.
type exitingGuard struct{}

func (exitingGuard) Admit(context.Context, fanout.Admission) (func(fanout.Outcome), error) {
	runtime.Goexit()
	return nil, nil
}

func TestJournalNeverRecordsAnUnfinishedTaskAsASuccess(t *testing.T) {
	// WithJournal: "Failed keys are recorded too, and run again"; Run: a
	// task that calls runtime.Goexit fails its own key with ErrGoexit.
	for name, task := range map[string]func(calls *atomic.Int32) (fanout.Task[int], []fanout.Option){
		"a task that calls Goexit": func(calls *atomic.Int32) (fanout.Task[int], []fanout.Option) {
			return goexitTask("a", calls), nil
		},
		"a task whose limiter panics": func(calls *atomic.Int32) (fanout.Task[int], []fanout.Option) {
			return fanout.Task[int]{Key: "a", Do: func(context.Context) (int, error) {
				calls.Add(1)
				return 1, nil
			}}, []fanout.Option{fanout.WithRateLimit(panickyLimiter{})}
		},
	} {
		t.Run(name, func(t *testing.T) {
			j := fanout.NewMemoryJournal()
			var calls atomic.Int32
			tk, opts := task(&calls)
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{tk}, append(opts, fanout.WithJournal(j))...)
			require.Error(t, err)
			r, _ := rs.Get("a")
			require.Error(t, r.Err)
			assert.False(t, r.Replayed)

			e, ok, err := j.Lookup(context.Background(), "a")
			require.NoError(t, err)
			if ok {
				assert.False(t, e.OK(), "a key that failed is recorded as a failure, never as a success")
				assert.Equal(t, fanout.ErrorKind(r.Err), e.Kind)
			}

			// The rerun must run it again, not replay a zero value.
			rs, _ = fanout.Run(context.Background(), []fanout.Task[int]{value("a", 7)}, fanout.WithJournal(j))
			r, _ = rs.Get("a")
			assert.False(t, r.Replayed, "a failed key runs again")
			assert.Equal(t, 7, r.Value)
		})
	}
	t.Run("the failure of a task that calls Goexit is recorded with its kind", func(t *testing.T) {
		j := fanout.NewMemoryJournal()
		var calls atomic.Int32
		_, err := fanout.Run(context.Background(), []fanout.Task[int]{goexitTask("a", &calls), value("b", 2)}, fanout.WithJournal(j))
		require.ErrorIs(t, err, fanout.ErrGoexit)
		e, ok, err := j.Lookup(context.Background(), "a")
		require.NoError(t, err)
		require.True(t, ok, "Journal records each key's final outcome as it completes")
		assert.Equal(t, "goexit", e.Kind)
		e, ok, _ = j.Lookup(context.Background(), "b")
		require.True(t, ok)
		assert.True(t, e.OK())
	})
}

func TestGuardIsToldOfEveryAttemptItAdmitted(t *testing.T) {
	// Guard.Admit returns "the function the run calls once with the
	// attempt's outcome".
	t.Run("a task that calls Goexit did not succeed", func(t *testing.T) {
		g := &outcomeGuard{}
		var calls atomic.Int32
		rs, err := fanout.Run(context.Background(), []fanout.Task[int]{goexitTask("a", &calls)}, fanout.WithGuard(g))
		require.ErrorIs(t, err, fanout.ErrGoexit)
		assert.Equal(t, 1, rs.Len())
		admitted, outcomes := g.told()
		assert.Equal(t, 1, admitted)
		require.Len(t, outcomes, 1)
		assert.ErrorIs(t, outcomes[0].Err, fanout.ErrGoexit, "the outcome of an attempt that called Goexit is no success")
	})
	t.Run("a hedged attempt that calls Goexit did not succeed either", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := &outcomeGuard{}
			var calls atomic.Int32
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{goexitTask("a", &calls)},
				fanout.WithGuard(g), fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second}))
			require.ErrorIs(t, err, fanout.ErrGoexit)
			_, outcomes := g.told()
			require.Len(t, outcomes, 1)
			assert.ErrorIs(t, outcomes[0].Err, fanout.ErrGoexit)
		})
	})
	for name, bad := range map[string]fanout.Guard{"panics": panickyGuard{}, "calls Goexit": exitingGuard{}} {
		t.Run("a guard passed before one that "+name+" is told the attempt never started", func(t *testing.T) {
			g := &outcomeGuard{}
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{value("a", 1), value("b", 2)},
				fanout.WithGuard(g), fanout.WithGuard(bad), fanout.WithLimit(1))
			require.Error(t, err)
			assert.Equal(t, 2, rs.Len())
			admitted, outcomes := g.told()
			assert.Equal(t, 2, admitted)
			require.Len(t, outcomes, 2, "every admitted attempt has its outcome told once")
			for _, o := range outcomes {
				assert.False(t, o.Started)
				assert.Error(t, o.Err)
			}
		})
	}
	t.Run("an AdaptiveLimiter before a guard that panics keeps no slot", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Initial: 1, Max: 1})
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{value("a", 1), value("b", 2)},
				fanout.WithGuard(l), fanout.WithGuard(panickyGuard{}), fanout.WithLimit(1))
			require.Error(t, err)
			assert.Zero(t, l.InFlight(), "the slots of attempts that never started come back")
		})
	})
}

func TestAGuardThatPanicsGivesTheBudgetBack(t *testing.T) {
	// WithBudget: an attempt waits for the attempts in flight to end, and
	// is refused if it cannot fit even then; a panic in user code fails
	// its own key and the run returns.
	for name, bad := range map[string]fanout.Guard{"panics": panickyGuard{}, "calls Goexit": exitingGuard{}} {
		t.Run("a guard that "+name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var ran atomic.Int32
				tasks := []fanout.Task[int]{
					{Key: "a", Tokens: 6, Do: func(context.Context) (int, error) { ran.Add(1); return 1, nil }},
					{Key: "b", Tokens: 6, Do: func(context.Context) (int, error) { ran.Add(1); return 2, nil }},
				}
				rs, err := fanout.Run(context.Background(), tasks, fanout.WithLimit(1),
					fanout.WithBudget(fanout.Cost{Tokens: 10}), fanout.WithGuard(bad))
				require.Error(t, err)
				require.Equal(t, 2, rs.Len())
				for _, r := range rs.All() {
					assert.Error(t, r.Err, r.Key)
					assert.NotErrorIs(t, r.Err, fanout.ErrBudgetExceeded, "nothing was spent: %s", r.Key)
				}
				assert.Zero(t, ran.Load())
			})
		})
	}
}

func TestMergeMapJoinsFailuresInInputOrder(t *testing.T) {
	// MergeMap: "Its error, like Run's, joins the failed keys' errors",
	// and Run joins them in input order.
	synctest.Test(t, func(t *testing.T) {
		late := func(key string, d time.Duration) fanout.Task[int] {
			return fanout.Task[int]{Key: key, Do: func(context.Context) (int, error) {
				time.Sleep(d)
				return 0, errors.New(key + " failed")
			}}
		}
		tasks := []fanout.Task[int]{late("a", 3*time.Second), value("b", 2), late("c", time.Second), late("d", 2*time.Second)}
		_, runErr := fanout.Run(context.Background(), tasks)
		require.Error(t, runErr)
		m, err := fanout.Gather(context.Background(), tasks, fanout.MergeMap[int]())
		assert.Equal(t, map[string]int{"b": 2}, m)
		require.Error(t, err)
		assert.Equal(t, runErr.Error(), err.Error())
	})
}

func TestTaskStartIsNotCalledForAKeySkippedForASpentBudget(t *testing.T) {
	// Observer.TaskStart: "A key skipped before that (the run had
	// stopped, the budget was spent) gets TaskDone alone."
	var mu sync.Mutex
	started, done := map[string]int{}, map[string]int{}
	obs := &fanout.Observer{
		TaskStart: func(_ context.Context, key string) { mu.Lock(); started[key]++; mu.Unlock() },
		TaskDone:  func(_ context.Context, ti fanout.TaskInfo) { mu.Lock(); done[ti.Key]++; mu.Unlock() },
	}
	spender := func(key string) fanout.Task[int] {
		return fanout.Task[int]{Key: key, Do: func(ctx context.Context) (int, error) {
			fanout.Spend(ctx, fanout.Cost{Cents: 5})
			return 1, nil
		}}
	}
	rs, err := fanout.Run(context.Background(), []fanout.Task[int]{spender("a"), spender("b"), spender("c")},
		fanout.WithLimit(1), fanout.WithBudget(fanout.Cost{Cents: 5}), fanout.WithObserver(obs))
	require.Error(t, err)
	r, _ := rs.Get("b")
	require.ErrorIs(t, r.Err, fanout.ErrSkipped)
	require.ErrorIs(t, r.Err, fanout.ErrBudgetExceeded)
	assert.Equal(t, map[string]int{"a": 1}, started)
	assert.Equal(t, map[string]int{"a": 1, "b": 1, "c": 1}, done)
}

// panickyJournal records nothing: its Record panics.
type panickyJournal struct{ *fanout.MemoryJournal }

func (panickyJournal) Record(context.Context, string, fanout.Entry) error { panic("journal bug") }

func TestUserCodeThatFailsAfterATaskThatCalledGoexit(t *testing.T) {
	// The package doc: user code that panics or calls Goexit never takes
	// a worker down with it; Gather: if agg panics, Gather returns the
	// panic as a *PanicError. So too when the Result agg is given is that
	// of a task that called Goexit itself.
	var calls atomic.Int32
	tasks := []fanout.Task[int]{goexitTask("a", &calls), value("b", 2)}
	t.Run("an aggregator that panics", func(t *testing.T) {
		_, err := fanout.Gather(context.Background(), tasks, fanout.Reduce(0, func(acc int, r fanout.Result[int]) int {
			if r.Err != nil {
				panic("agg bug")
			}
			return acc + r.Value
		}))
		var pe *fanout.PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "agg bug", pe.Value)
	})
	t.Run("an aggregator that calls Goexit", func(t *testing.T) {
		_, err := fanout.Gather(context.Background(), tasks, fanout.Reduce(0, func(acc int, r fanout.Result[int]) int {
			if r.Err != nil {
				runtime.Goexit()
			}
			return acc + r.Value
		}))
		require.ErrorIs(t, err, fanout.ErrGoexit)
	})
	t.Run("a journal whose Record panics", func(t *testing.T) {
		rs, err := fanout.Run(context.Background(), tasks, fanout.WithJournal(panickyJournal{fanout.NewMemoryJournal()}))
		require.Error(t, err)
		require.Equal(t, 2, rs.Len())
		r, _ := rs.Get("a")
		assert.Error(t, r.Err)
	})
	t.Run("a TaskDone hook that calls Goexit", func(t *testing.T) {
		var done atomic.Int32
		obs := &fanout.Observer{TaskDone: func(context.Context, fanout.TaskInfo) { done.Add(1); runtime.Goexit() }}
		var got []string
		seq, err := fanout.Stream(context.Background(), tasks, fanout.WithObserver(obs), fanout.WithLimit(1))
		require.NoError(t, err)
		for r := range seq {
			got = append(got, r.Key)
		}
		assert.ElementsMatch(t, []string{"a", "b"}, got)
		assert.Equal(t, int32(2), done.Load())
	})
}

func TestRetryMakesMaxAttemptsWhateverTheJitter(t *testing.T) {
	// RetryPolicy: MaxAttempts caps the tries; Jitter randomises each wait
	// by ±Jitter of itself. A wait cannot be negative, so a large Jitter
	// must not end the retries early.
	synctest.Test(t, func(t *testing.T) {
		tasks := make([]fanout.Task[int], 20)
		for i := range tasks {
			tasks[i] = failing[int](string(rune('a'+i)), errors.New("flake"))
		}
		rs, err := fanout.Run(context.Background(), tasks,
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 5, InitialInterval: time.Second, Jitter: 3}))
		if err == nil {
			t.Fatal("every task fails")
		}
		if rs == nil {
			return // refusing such a Jitter up front keeps the promise too
		}
		for _, r := range rs.All() {
			assert.Equal(t, 5, r.Attempts, r.Key)
		}
	})
}

func TestRunSummaryAgreesWithTheResults(t *testing.T) {
	// Observer: TaskDone once per key with its outcome; RunSummary totals
	// the run. Checked under many options at once, with tasks that fail,
	// panic, call Goexit, hang and are slow.
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		tasks := []fanout.Task[int]{
			value("ok", 1),
			failing[int]("fail", errors.New("boom")),
			{Key: "panic", Do: func(context.Context) (int, error) { panic("bug") }},
			goexitTask("goexit", &calls),
			{Key: "slow", Tokens: 2, Do: func(ctx context.Context) (int, error) {
				select {
				case <-time.After(3 * time.Second):
					fanout.Spend(ctx, fanout.Cost{Tokens: 2})
					return 5, nil
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}},
			hanging[int]("hang"),
			value("late", 7),
		}
		var mu sync.Mutex
		done := map[string]fanout.TaskInfo{}
		var summary fanout.RunSummary
		var runsDone int
		obs := &fanout.Observer{
			TaskDone: func(_ context.Context, ti fanout.TaskInfo) {
				mu.Lock()
				defer mu.Unlock()
				_, twice := done[ti.Key]
				assert.False(t, twice, "TaskDone twice for %s", ti.Key)
				done[ti.Key] = ti
			},
			RunDone: func(_ context.Context, s fanout.RunSummary) { mu.Lock(); summary = s; runsDone++; mu.Unlock() },
		}
		seq, err := fanout.Stream(context.Background(), tasks, fanout.WithObserver(obs), fanout.WithLimit(3),
			fanout.WithTaskTimeout(5*time.Second), fanout.WithTimeout(20*time.Second),
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Second}),
			fanout.WithHedge(fanout.HedgePolicy{Delay: 2 * time.Second, MaxExtra: 1}),
			fanout.WithBudget(fanout.Cost{Tokens: 100}), fanout.WithOrdered())
		require.NoError(t, err)
		var got []fanout.Result[int]
		for r := range seq {
			got = append(got, r)
		}
		require.Len(t, got, len(tasks))
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, 1, runsDone)
		var want fanout.RunSummary
		want.Tasks = len(got)
		for i, r := range got {
			assert.Equal(t, i, r.Index, "WithOrdered yields in input order")
			ti, ok := done[r.Key]
			require.True(t, ok, r.Key)
			assert.Equal(t, r.Err, ti.Err, r.Key)
			assert.Equal(t, r.Attempts, ti.Attempts, r.Key)
			want.Attempts += r.Attempts
			want.Hedges += r.Hedges
			switch {
			case r.Err == nil:
				want.Succeeded++
			case errors.Is(r.Err, fanout.ErrSkipped):
				want.Skipped++
			default:
				want.Failed++
			}
		}
		want.Cost, want.Elapsed = summary.Cost, summary.Elapsed
		assert.Equal(t, want, summary)
		assert.Equal(t, fanout.Cost{Tokens: 2}, summary.Cost)
	})
}

func TestGroupTryGoShedsBeyondTheQueue(t *testing.T) {
	// WithQueue: TryGo refuses a task beyond n tasks added but not yet
	// started with ErrQueueFull; Go ignores the bound.
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		block := func(context.Context) (int, error) { <-release; return 1, nil }
		g, err := fanout.NewGroup[int](context.Background(), fanout.WithLimit(1), fanout.WithQueue(1))
		require.NoError(t, err)
		require.NoError(t, g.TryGo("running", block))
		synctest.Wait()
		require.NoError(t, g.TryGo("queued", block))
		assert.ErrorIs(t, g.TryGo("shed", block), fanout.ErrQueueFull)
		require.NoError(t, g.Go("forced", block))
		queued, running := g.Len()
		assert.Equal(t, 2, queued)
		assert.Equal(t, 1, running)
		close(release)
		rs, err := g.Wait()
		require.NoError(t, err)
		assert.Equal(t, 3, rs.Len())
		_, ok := rs.Get("shed")
		assert.False(t, ok, "a shed task has no Result")
	})
}

func TestAnAlreadyCancelledContextSkipsEveryKey(t *testing.T) {
	// ErrSkipped: a key whose task never started because the run had
	// already stopped; its error wraps the reason, which is the cause.
	cause := errors.New("caller gave up")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	var ran atomic.Int32
	task := func(key string) fanout.Task[int] {
		return fanout.Task[int]{Key: key, Do: func(context.Context) (int, error) { ran.Add(1); return 1, nil }}
	}
	tasks := []fanout.Task[int]{task("a"), task("b")}
	check := func(t *testing.T, r fanout.Result[int]) {
		t.Helper()
		assert.ErrorIs(t, r.Err, fanout.ErrSkipped, r.Key)
		assert.ErrorIs(t, r.Err, cause, r.Key)
		assert.Zero(t, r.Attempts, r.Key)
	}
	for name, opts := range map[string][]fanout.Option{
		"plain":         nil,
		"every option":  {fanout.WithLimit(1), fanout.WithRetry(fanout.RetryPolicy{}), fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second}), fanout.WithTaskTimeout(time.Second), fanout.WithTimeout(time.Minute), fanout.WithFailFast(), fanout.WithObserver(&fanout.Observer{}), fanout.WithBudget(fanout.Cost{Tokens: 10}), fanout.WithRateLimit(rate.NewLimiter(1, 1)), fanout.WithGuard(&outcomeGuard{})},
		"semaphore":     {fanout.WithSemaphore(fanout.NewSemaphore(1))},
		"resource caps": {fanout.WithResourceLimit(1)},
	} {
		t.Run(name, func(t *testing.T) {
			rs, err := fanout.Run(ctx, tasks, opts...)
			require.Error(t, err)
			for _, r := range rs.All() {
				check(t, r)
			}
			seq, err := fanout.Stream(ctx, tasks, opts...)
			require.NoError(t, err)
			n := 0
			for r := range seq {
				check(t, r)
				n++
			}
			assert.Equal(t, 2, n)
			all, err := fanout.Gather(ctx, tasks, fanout.Collect(func(_ context.Context, rs []fanout.Result[int]) ([]fanout.Result[int], error) {
				return rs, nil
			}), opts...)
			require.NoError(t, err)
			require.Len(t, all, 2)
			for _, r := range all {
				check(t, r)
			}
			_, err = fanout.Call(ctx, task("c").Do, opts...)
			assert.ErrorIs(t, err, fanout.ErrSkipped)
			assert.ErrorIs(t, err, cause)
		})
	}
	t.Run("a group", func(t *testing.T) {
		g, err := fanout.NewGroup[int](ctx, fanout.WithLimit(1))
		require.NoError(t, err)
		require.NoError(t, g.Go("a", task("a").Do))
		rs, err := g.Wait()
		require.Error(t, err)
		check(t, rs.All()[0])
	})
	assert.Zero(t, ran.Load(), "no task runs")
}

func TestAConsumerThatPanicsStillStopsAndWaitsForTheTasks(t *testing.T) {
	// Stream: leaving the loop cancels the tasks still running, with cause
	// ErrStopped, and waits for them before the loop ends; a panic in the
	// loop's body leaves it too.
	synctest.Test(t, func(t *testing.T) {
		var causes sync.Map
		var ended atomic.Int32
		hang := func(key string) fanout.Task[int] {
			return fanout.Task[int]{Key: key, Do: func(ctx context.Context) (int, error) {
				defer ended.Add(1)
				<-ctx.Done()
				time.Sleep(time.Second) // slow to stop: the loop must wait
				causes.Store(key, context.Cause(ctx))
				return 0, ctx.Err()
			}}
		}
		seq, err := fanout.Stream(context.Background(), []fanout.Task[int]{value("a", 1), hang("b"), hang("c")},
			fanout.WithRetry(fanout.RetryPolicy{}), fanout.WithHedge(fanout.HedgePolicy{Delay: time.Hour}))
		require.NoError(t, err)
		assert.PanicsWithValue(t, "consumer bug", func() {
			for range seq {
				panic("consumer bug")
			}
		})
		assert.Equal(t, int32(2), ended.Load(), "every task has ended when the loop has")
		for _, key := range []string{"b", "c"} {
			cause, _ := causes.Load(key)
			assert.Equal(t, fanout.ErrStopped, cause, key)
		}
	})
}

func TestBreakingAStreamSeqStopsItsSource(t *testing.T) {
	// StreamSeq: the source is no longer pulled once the run has stopped;
	// a source that does not block is stopped (its defers run) before
	// the loop ends, and leaves no goroutine behind.
	var stopped atomic.Bool
	src := func(yield func(fanout.Task[int]) bool) {
		defer stopped.Store(true)
		for i := 0; ; i++ {
			if !yield(value(strconv.Itoa(i), i)) {
				return
			}
		}
	}
	seq, err := fanout.StreamSeq(context.Background(), src, fanout.WithLimit(2), fanout.WithOrdered())
	require.NoError(t, err)
	n := 0
	for r := range seq {
		assert.Equal(t, n, r.Index)
		if n++; n == 5 {
			break
		}
	}
	assert.True(t, stopped.Load())
}

func TestGroupGivesEveryKeyOneResultWhateverItsTasksDo(t *testing.T) {
	// Group: each key gets one Result, as Run gives; tasks may add tasks.
	// Tasks that panic or call Goexit, from inside other tasks, under a
	// limit of 1 and a fail-free aggregator, must not lose a key or a
	// worker.
	synctest.Test(t, func(t *testing.T) {
		g, err := fanout.NewGroup[int](context.Background(), fanout.WithLimit(1), fanout.WithGuard(&outcomeGuard{}))
		require.NoError(t, err)
		var calls atomic.Int32
		require.NoError(t, g.Go("root", func(context.Context) (int, error) {
			for i := range 3 {
				require.NoError(t, g.GoTask(goexitTask("exit"+strconv.Itoa(i), &calls)))
				require.NoError(t, g.Go("panic"+strconv.Itoa(i), func(context.Context) (int, error) { panic("bug") }))
				require.NoError(t, g.Go("ok"+strconv.Itoa(i), func(context.Context) (int, error) { return i, nil }))
			}
			return -1, nil
		}))
		sum, err := fanout.GatherGroup(g, fanout.Reduce(0, func(n int, r fanout.Result[int]) int {
			if r.Err != nil {
				return n + 100
			}
			return n + r.Value + 1
		}))
		require.NoError(t, err)
		assert.Equal(t, 600+0+1+2+3+0, sum)
		assert.Equal(t, int32(3), calls.Load())
	})
}
