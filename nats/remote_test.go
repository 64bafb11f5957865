package fanoutnats_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type echoArgs struct {
	N int `json:"n"`
}

func TestTwoWorkersBothDoWork(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	var mu sync.Mutex
	seen := map[string]bool{}
	both := make(chan struct{})
	register := func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "square", func(ctx context.Context, a echoArgs) (string, error) {
			info, _ := fanoutnats.TaskFromContext(ctx)
			mu.Lock()
			seen[info.Worker] = true
			if len(seen) == 2 && !isClosed(both) {
				close(both)
			}
			mu.Unlock()
			// Hold the first tasks until both workers have one, so the
			// test shows sharing rather than hoping for it.
			select {
			case <-both:
			case <-ctx.Done():
				return "", context.Cause(ctx)
			}
			return fmt.Sprintf("%s:%d", info.Worker, a.N*a.N), nil
		})
	}
	e.worker(register, fanoutnats.WithName("w1"), fanoutnats.WithConcurrency(1))
	e.worker(register, fanoutnats.WithName("w2"), fanoutnats.WithConcurrency(1))

	b := c.Batch()
	var tasks []fanout.Task[string]
	for i := range 20 {
		tasks = append(tasks, fanoutnats.Remote[echoArgs, string](b, "square", fmt.Sprint("k", i), echoArgs{N: i}))
	}
	rs, err := fanout.Run(context.Background(), tasks, fanout.WithLimit(8))
	require.NoError(t, err)
	byWorker := map[string]int{}
	for i, r := range rs.All() {
		worker, val, ok := strings.Cut(r.Value, ":")
		require.True(t, ok, r.Value)
		assert.Equal(t, fmt.Sprint(i*i), val)
		byWorker[worker]++
	}
	assert.Len(t, byWorker, 2, "both workers took tasks: %v", byWorker)
	assert.Equal(t, int64(20), c.Stats().Replies)
	assert.Zero(t, c.Stats().Duplicates)
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestKeysWithSubjectSpecialCharactersArriveIntact(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "echo-key", func(ctx context.Context, _ struct{}) (string, error) {
			info, _ := fanoutnats.TaskFromContext(ctx)
			return info.Key, nil
		})
	})
	keys := []string{"plain", "a.b.c", "*", ">", "with space", " lead", "héllo-ünïcode", "日本語",
		"tab\there", "new\nline", "x.*.>", strings.Repeat("long.", 40), "q\"uote"}
	var tasks []fanout.Task[string]
	for _, k := range keys {
		tasks = append(tasks, fanoutnats.Remote[struct{}, string](c, "echo-key", k, struct{}{}))
	}
	rs, err := fanout.Run(context.Background(), tasks)
	require.NoError(t, err)
	for _, k := range keys {
		v, err := rs.Value(k)
		require.NoError(t, err)
		assert.Equal(t, k, v)
	}
}

func TestDeadlineTravelsWithTaskAndIsEnforcedOnWorker(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	type seen struct {
		deadline time.Time
		cause    error
	}
	got := make(chan seen, 1)
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "slow", func(ctx context.Context, _ struct{}) (string, error) {
			d, _ := ctx.Deadline()
			<-ctx.Done()
			got <- seen{d, context.Cause(ctx)}
			return "", context.Cause(ctx)
		})
	})
	start := time.Now()
	rs, err := fanout.Run(context.Background(),
		[]fanout.Task[string]{fanoutnats.Remote[struct{}, string](c, "slow", "k", struct{}{})},
		fanout.WithTaskTimeout(300*time.Millisecond))
	require.ErrorIs(t, err, fanout.ErrTaskTimeout)
	_, kerr := rs.Value("k")
	require.ErrorIs(t, kerr, fanout.ErrTaskTimeout)

	s := <-got
	assert.ErrorIs(t, s.cause, fanout.ErrTaskTimeout, "the worker's own deadline ended the handler")
	assert.WithinDuration(t, start.Add(300*time.Millisecond), s.deadline, 100*time.Millisecond)
}

func TestTaskWhoseDeadlinePassedWhileQueuedIsNotStarted(t *testing.T) {
	e := newEnv(t)
	c := e.client()

	// A client's own timed-out attempt is removed from the queue at once.
	_, err := fanout.Run(context.Background(),
		[]fanout.Task[string]{fanoutnats.Remote[struct{}, string](c, "never", "gone", struct{}{})},
		fanout.WithTaskTimeout(50*time.Millisecond))
	require.ErrorIs(t, err, fanout.ErrTaskTimeout)
	require.Eventually(t, func() bool { return e.queued() == 0 }, 10*time.Second, 5*time.Millisecond,
		"the timed-out attempt is deleted from the stream, in the background")

	// A task left behind (its client died) with a past deadline is
	// acknowledged without running.
	require.NoError(t, fanoutnats.EnqueueForTest(context.Background(), c, "never", "stale", struct{}{},
		time.Now().Add(-time.Second)))
	require.Equal(t, uint64(1), e.queued())
	started := make(chan struct{}, 1)
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "never", func(context.Context, struct{}) (string, error) {
			started <- struct{}{}
			return "", nil
		})
	})
	require.Eventually(t, func() bool { return w.Stats().Expired == 1 }, 10*time.Second, 10*time.Millisecond)
	assert.Zero(t, w.Stats().Started)
	assert.Empty(t, started)
	require.Eventually(t, func() bool { return e.queued() == 0 }, 10*time.Second, 10*time.Millisecond)
}

func TestKilledWorkersTaskIsRedeliveredToAnother(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	started := newSignals()
	a := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(ctx context.Context, _ struct{}) (string, error) {
			started.send("a")
			<-ctx.Done() // stuck until the crash
			return "", context.Cause(ctx)
		})
	}, fanoutnats.WithName("a"))

	type out struct {
		rs  *fanout.Results[string]
		err error
	}
	done := make(chan out, 1)
	go func() {
		rs, err := fanout.Run(context.Background(),
			[]fanout.Task[string]{fanoutnats.Remote[struct{}, string](c, "job", "k", struct{}{})})
		done <- out{rs, err}
	}()
	require.Equal(t, "a", started.wait(t))
	b := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(ctx context.Context, _ struct{}) (string, error) {
			info, _ := fanoutnats.TaskFromContext(ctx)
			return fmt.Sprintf("%s delivery %d", info.Worker, info.Delivery), nil
		})
	}, fanoutnats.WithName("b"))
	a.kill(t)

	o := <-done
	require.NoError(t, o.err)
	v, _ := o.rs.Value("k")
	assert.Equal(t, "b delivery 2", v)
	assert.Equal(t, int64(1), c.Stats().Redelivered)
	assert.Equal(t, int64(1), b.Stats().Redelivered)
	assert.Zero(t, c.Stats().Duplicates)
}

func TestLongTaskIsKeptAliveByHeartbeats(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	register := func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "long", func(ctx context.Context, _ struct{}) (int, error) {
			// Real work, three AckWaits long.
			select {
			case <-time.After(3 * fastAck):
				info, _ := fanoutnats.TaskFromContext(ctx)
				return info.Delivery, nil
			case <-ctx.Done():
				return 0, context.Cause(ctx)
			}
		})
	}
	w1 := e.worker(register)
	w2 := e.worker(register)
	rs, err := fanout.Run(context.Background(),
		[]fanout.Task[int]{fanoutnats.Remote[struct{}, int](c, "long", "k", struct{}{})})
	require.NoError(t, err)
	v, _ := rs.Value("k")
	assert.Equal(t, 1, v, "delivered once")
	assert.Equal(t, int64(1), w1.Stats().Started+w2.Stats().Started)
	assert.Zero(t, c.Stats().Redelivered+c.Stats().Duplicates)
}

func TestDuplicateRepliesAreDroppedAndCounted(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	secondStarted := make(chan struct{})
	firstDone := make(chan struct{})
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "twice", func(ctx context.Context, _ struct{}) (string, error) {
			info, _ := fanoutnats.TaskFromContext(ctx)
			if info.Delivery == 1 {
				// Stall past AckWait without heartbeats: JetStream hands the
				// task out again, and then this copy finishes as well.
				defer close(firstDone)
				<-secondStarted
				return "first", nil
			}
			close(secondStarted)
			<-firstDone
			return "second", nil
		})
	}, fanoutnats.WithoutHeartbeatForTest(), fanoutnats.WithConcurrency(2))

	rs, err := fanout.Run(context.Background(),
		[]fanout.Task[string]{fanoutnats.Remote[struct{}, string](c, "twice", "k", struct{}{})})
	require.NoError(t, err)
	assert.Equal(t, 1, rs.Len())
	v, _ := rs.Value("k")
	assert.Contains(t, []string{"first", "second"}, v)
	require.Eventually(t, func() bool { return c.Stats().Duplicates == 1 }, 10*time.Second, 10*time.Millisecond, "%+v", c.Stats())
	assert.Equal(t, int64(1), c.Stats().Replies)
}

func TestTaskExhaustingDeliveriesBecomesKeyError(t *testing.T) {
	e := newEnv(t)
	c := e.client(fanoutnats.WithMaxDeliver(2))
	cancelled := make(chan error, 2)
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "stall", func(ctx context.Context, _ struct{}) (string, error) {
			<-ctx.Done()
			cancelled <- context.Cause(ctx)
			return "", context.Cause(ctx)
		})
	}, fanoutnats.WithoutHeartbeatForTest(), fanoutnats.WithMaxDeliver(2), fanoutnats.WithConcurrency(3))

	rs, err := fanout.Run(context.Background(),
		[]fanout.Task[string]{fanoutnats.Remote[struct{}, string](c, "stall", "k", struct{}{})})
	require.ErrorIs(t, err, fanoutnats.ErrMaxDeliveries)
	_, kerr := rs.Value("k")
	assert.ErrorContains(t, kerr, `2 deliveries of key "k"`)
	assert.Equal(t, int64(1), c.Stats().MaxDelivers)
	// Both stalled copies are told to stop, and nothing is left queued.
	assert.ErrorIs(t, <-cancelled, fanoutnats.ErrCancelledForTest)
	assert.ErrorIs(t, <-cancelled, fanoutnats.ErrCancelledForTest)
	require.Eventually(t, func() bool { return e.queued() == 0 }, 10*time.Second, 5*time.Millisecond)
}

func TestStoppedWorkerHandsItsRunningTasksBack(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	started := newSignals()
	a := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(ctx context.Context, _ struct{}) (string, error) {
			started.send("a")
			<-ctx.Done()
			return "", context.Cause(ctx)
		})
	}, fanoutnats.WithName("a"))
	done := make(chan *fanout.Results[string], 1)
	go func() {
		rs, _ := fanout.Run(context.Background(),
			[]fanout.Task[string]{fanoutnats.Remote[struct{}, string](c, "job", "k", struct{}{})})
		done <- rs
	}()
	require.Equal(t, "a", started.wait(t))
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(ctx context.Context, _ struct{}) (string, error) {
			info, _ := fanoutnats.TaskFromContext(ctx)
			return fmt.Sprintf("%s delivery %d", info.Worker, info.Delivery), nil
		})
	}, fanoutnats.WithName("b"))
	a.shutdown() // graceful: the task is nak'ed, not left to time out

	v, err := (<-done).Value("k")
	require.NoError(t, err)
	assert.Equal(t, "b delivery 2", v)
}

func TestReplyAfterTheAttemptGaveUpCountsAsLateNotDuplicate(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	started := newSignals()
	release := make(chan struct{})
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "ignores-deadline", func(context.Context, struct{}) (string, error) {
			started.send("started")
			<-release // past the deadline, then it replies all the same
			return "too late", nil
		})
	})
	_, err := fanout.Run(context.Background(),
		[]fanout.Task[string]{fanoutnats.Remote[struct{}, string](c, "ignores-deadline", "k", struct{}{})},
		fanout.WithTaskTimeout(500*time.Millisecond))
	require.ErrorIs(t, err, fanout.ErrTaskTimeout)
	require.Equal(t, "started", started.wait(t))
	close(release)

	require.Eventually(t, func() bool { s := c.Stats(); return s.Late+s.Duplicates > 0 }, 10*time.Second, 5*time.Millisecond)
	st := c.Stats()
	assert.Equal(t, int64(1), st.Late, "%+v", st)
	assert.Zero(t, st.Duplicates, "%+v", st)
	assert.Zero(t, st.Replies, "%+v", st)
}

func TestStalledFleetEndsAtTheRunsDeadlineNotAHang(t *testing.T) {
	e := newEnv(t)
	c := e.client(fanoutnats.WithMaxDeliver(2))
	stuck := newSignals()
	release := make(chan struct{})
	defer close(release) // before the worker's clean-up waits for it
	// One slot, stuck in a handler that ignores its context, without
	// heartbeats: JetStream would redeliver the task, but no worker is
	// free to take it, so the max-deliveries advisory never comes. The
	// run's deadline is the backstop.
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "stall", func(context.Context, struct{}) (string, error) {
			stuck.send("stuck")
			<-release
			return "", errors.New("released")
		})
	}, fanoutnats.WithoutHeartbeatForTest(), fanoutnats.WithMaxDeliver(2), fanoutnats.WithConcurrency(1))

	b := c.Batch()
	var tasks []fanout.Task[string]
	for i := range 3 {
		tasks = append(tasks, fanoutnats.Remote[struct{}, string](b, "stall", fmt.Sprint("k", i), struct{}{}))
	}
	rs, err := fanout.Run(context.Background(), tasks, fanout.WithTimeout(3*fastAck))
	require.ErrorIs(t, err, fanout.ErrRunTimeout)
	assert.Equal(t, "stuck", stuck.wait(t))
	for _, r := range rs.All() {
		assert.ErrorIs(t, r.Err, fanout.ErrRunTimeout, r.Key)
	}
	assert.Zero(t, c.Stats().MaxDelivers, "no advisory: the deadline ended the run")
	assert.Zero(t, e.queued(), "the run's tasks were purged")
	assert.Equal(t, int64(1), w.Stats().Started)
}
