package fanoutnats_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests in this file each reproduce one fault that fault injection
// found in an earlier version (issue 14), against real servers.

func TestCancelledRunLeavesNothingQueuedEvenWithPublishesInFlight(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	// The race is a matter of timing: three runs make it all but certain
	// that one stops with publishes in flight.
	for range 3 {
		b := c.Batch()
		const n = 3000
		tasks := make([]fanout.Task[int], n)
		for i := range tasks {
			tasks[i] = fanoutnats.Remote[int, int](b, "square", fmt.Sprint("k", i), i)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		sent := c.Stats().Sent
		go func() {
			_, err := fanout.Run(ctx, tasks, fanout.WithLimit(n))
			done <- err
		}()
		// No worker serves, so the run stops only by this cancel.
		require.Eventually(t, func() bool { return c.Stats().Sent-sent >= 300 }, 30*time.Second, time.Millisecond)
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		require.Zero(t, e.queued(), "Run returned only once its queued tasks were purged")
	}

	// A worker started now runs nothing of the dead runs: a later task
	// is the first it gets.
	w := e.worker(func(w *fanoutnats.Worker) { fanoutnats.Handle(w, "square", square) })
	rs, err := fanout.Run(context.Background(), []fanout.Task[int]{fanoutnats.Remote[int, int](c, "square", "later", 7)})
	require.NoError(t, err)
	v, _ := rs.Value("later")
	assert.Equal(t, 49, v)
	assert.Equal(t, int64(1), w.Stats().Started, "only the later task ran")
}

func TestAttemptsEndWithTheirContextWhileTheServerIsUnreachable(t *testing.T) {
	tests := []struct {
		name string
		opts []fanout.Option
		// check gets the run's outcome and how long it took.
		check func(t *testing.T, r fanout.Result[int], took time.Duration)
	}{
		{
			name: "a task timeout ends the attempt on time",
			opts: []fanout.Option{fanout.WithTaskTimeout(time.Second)},
			check: func(t *testing.T, r fanout.Result[int], took time.Duration) {
				assert.ErrorIs(t, r.Err, fanout.ErrTaskTimeout)
				assert.Less(t, took, 1900*time.Millisecond, "no clean-up request outlives the attempt")
			},
		},
		{
			name: "so retries happen before the run's deadline",
			opts: []fanout.Option{fanout.WithTimeout(3 * time.Second), fanout.WithTaskTimeout(500 * time.Millisecond),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 10, InitialInterval: 10 * time.Millisecond})},
			check: func(t *testing.T, r fanout.Result[int], took time.Duration) {
				assert.Error(t, r.Err)
				assert.GreaterOrEqual(t, r.Attempts, 3, "%v", r.Err)
				assert.Less(t, took, 3900*time.Millisecond, "the run ends at its deadline")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			c := e.client()
			started := newSignals()
			e.worker(func(w *fanoutnats.Worker) {
				fanoutnats.Handle(w, "stuck", func(ctx context.Context, _ int) (int, error) {
					started.send("stuck")
					<-ctx.Done()
					return 0, context.Cause(ctx)
				})
			})
			type out struct {
				rs   *fanout.Results[int]
				took time.Duration
			}
			done := make(chan out, 1)
			start := time.Now()
			go func() {
				rs, _ := fanout.Run(context.Background(),
					[]fanout.Task[int]{fanoutnats.Remote[int, int](c.Batch(), "stuck", "k", 2)}, tt.opts...)
				done <- out{rs, time.Since(start)}
			}()
			started.wait(t)
			e.srv.Close() // the task is stored and running: the clean-up needs the server
			o := <-done
			r, _ := o.rs.Get("k")
			tt.check(t, r, o.took)
		})
	}
}

func TestKeysOverTheLimitFailAtOnceAsTooLarge(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "len", func(ctx context.Context, _ struct{}) (int, error) {
			info, _ := fanoutnats.TaskFromContext(ctx)
			return len(info.Key), nil
		})
	})
	long := strings.Repeat("k", 64<<10)
	rs, err := fanout.Run(context.Background(),
		[]fanout.Task[int]{fanoutnats.Remote[struct{}, int](c, "len", long, struct{}{})},
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond}))
	require.ErrorIs(t, err, fanoutnats.ErrTooLarge)
	r, _ := rs.Get(long)
	assert.Equal(t, 1, r.Attempts, "retrying cannot shorten a key")
	var perm *backoff.PermanentError
	assert.ErrorAs(t, r.Err, &perm)
	assert.ErrorContains(t, r.Err, "65536 bytes, over the 4096-byte key limit")
	assert.Zero(t, c.Stats().Sent, "nothing was sent")

	// The longest key allowed arrives intact, even quoted (4 header
	// bytes per control byte).
	widest := strings.Repeat("\x00", fanoutnats.MaxKeyLen)
	rs, err = fanout.Run(context.Background(),
		[]fanout.Task[int]{fanoutnats.Remote[struct{}, int](c, "len", widest, struct{}{})})
	require.NoError(t, err)
	v, _ := rs.Value(widest)
	assert.Equal(t, fanoutnats.MaxKeyLen, v)
}

func TestMemoryServerRestartRecreatesTheStreamsAndConsumer(t *testing.T) {
	s := newRestartable(t)
	c := s.client() // memory storage, as every test's
	release := make(chan struct{})
	first := make(chan struct{}, 1)
	first <- struct{}{}
	started := newSignals()
	w := s.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "gate", func(ctx context.Context, n int) (int, error) {
			select {
			case <-first: // the first task holds the only slot
				started.send("first")
				<-release
			default:
			}
			return n * n, nil
		})
	}, fanoutnats.WithConcurrency(1))
	run := func(keys ...int) (*fanout.Results[int], error) {
		b := c.Batch()
		var tasks []fanout.Task[int]
		for _, k := range keys {
			tasks = append(tasks, fanoutnats.Remote[int, int](b, "gate", fmt.Sprint("k", k), k))
		}
		return fanout.Run(context.Background(), tasks, fanout.WithTimeout(20*time.Second))
	}

	type out struct {
		rs  *fanout.Results[int]
		err error
	}
	done := make(chan out, 1)
	go func() {
		rs, err := run(0, 1, 2, 3)
		done <- out{rs, err}
	}()
	started.wait(t)
	require.Eventually(t, func() bool { return s.queued() == 4 }, 10*time.Second, 5*time.Millisecond)
	s.restart() // the streams, the consumer and the four tasks are gone

	// The client sends again what the server lost; the worker recreates
	// its consumer and keeps serving.
	require.Eventually(t, func() bool { return c.Stats().Republished >= 3 }, 15*time.Second, 5*time.Millisecond,
		"%+v", c.Stats())
	close(release)
	o := <-done
	require.NoError(t, o.err)
	for _, k := range []int{0, 1, 2, 3} {
		v, err := o.rs.Value(fmt.Sprint("k", k))
		require.NoError(t, err)
		assert.Equal(t, k*k, v)
	}
	rs, err := run(4, 5)
	require.NoError(t, err, "a later run works too")
	assert.Equal(t, 2, rs.Succeeded())
	require.Eventually(t, func() bool { return s.queued() == 0 }, 10*time.Second, 5*time.Millisecond)
	select {
	case err := <-w.done:
		t.Fatalf("Serve returned %v", err)
	default:
	}
}

func TestRepliesSentWhileDisconnectedAreCollected(t *testing.T) {
	for _, cut := range []string{"client", "worker"} {
		t.Run("the "+cut+"'s connection cut", func(t *testing.T) {
			e := newEnv(t)
			p := newProxy(t, strings.TrimPrefix(e.srv.URL(), "nats://"))
			via := func() *nats.Conn {
				nc, err := fanoutnats.Connect([]string{p.url()}, nats.IgnoreDiscoveredServers())
				require.NoError(t, err)
				t.Cleanup(nc.Close)
				return nc
			}
			cnc, wnc := e.conn(), e.conn()
			if cut == "client" {
				cnc = via()
			} else {
				wnc = via()
			}
			c, err := fanoutnats.NewClient(context.Background(), cnc, testOpts()...)
			require.NoError(t, err)
			t.Cleanup(c.Close)
			const n = 8
			started := newSignals()
			release := make(chan struct{})
			w := e.workerOn(wnc, func(w *fanoutnats.Worker) {
				fanoutnats.Handle(w, "wait", func(ctx context.Context, k string) (string, error) {
					started.send(k)
					<-release
					return k + "!", nil
				})
			}, fanoutnats.WithConcurrency(n))

			b := c.Batch()
			var tasks []fanout.Task[string]
			for i := range n {
				tasks = append(tasks, fanoutnats.Remote[string, string](b, "wait", fmt.Sprint("k", i), fmt.Sprint("k", i)))
			}
			type out struct {
				rs  *fanout.Results[string]
				err error
			}
			done := make(chan out, 1)
			go func() {
				rs, err := fanout.Run(context.Background(), tasks, fanout.WithTimeout(15*time.Second))
				done <- out{rs, err}
			}()
			for range n {
				started.wait(t)
			}
			away := map[string]*nats.Conn{"client": cnc, "worker": wnc}[cut]
			p.setCut(true)
			require.Eventually(t, func() bool { return !away.IsConnected() }, 10*time.Second, time.Millisecond)
			close(release) // every handler replies while one side is away
			if cut == "client" {
				require.Eventually(t, func() bool { return e.storedReplies() == n }, 10*time.Second, 5*time.Millisecond)
			} else {
				require.Eventually(t, func() bool { return w.Stats().Succeeded == n }, 10*time.Second, 5*time.Millisecond)
			}
			p.setCut(false)

			o := <-done
			require.NoError(t, o.err)
			for i := range n {
				v, err := o.rs.Value(fmt.Sprint("k", i))
				require.NoError(t, err)
				assert.Equal(t, fmt.Sprint("k", i, "!"), v)
			}
			assert.Equal(t, int64(n), w.Stats().Started, "nothing ran twice")
			if cut == "client" {
				assert.Equal(t, int64(n), c.Stats().Recovered, "%+v", c.Stats())
			}
			require.Eventually(t, func() bool { return e.queued() == 0 }, 10*time.Second, 5*time.Millisecond)
		})
	}
}

func TestPullRequestsLostWithTheirServerAreSentAgain(t *testing.T) {
	// A pull request lives on the server (in a cluster, the consumer
	// leader) that holds it: when that server goes, nothing tells the
	// worker. Here a file-storage server restarts right after the worker
	// asked for a task; the stream and consumer survive, the request
	// does not.
	s := newRestartable(t)
	opts := []fanoutnats.Option{fanoutnats.WithAckWait(fastAck)} // file storage
	c, err := fanoutnats.NewClient(context.Background(), s.conn(), opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	js := s.inspect()
	_ = js
	s.workerOn(s.conn(), func(w *fanoutnats.Worker) { fanoutnats.Handle(w, "square", square) },
		append(opts, fanoutnats.WithConcurrency(1))...)
	require.Eventually(t, func() bool {
		cons, err := js.Consumer(context.Background(), "FANOUT", "workers")
		return err == nil && cons.CachedInfo().NumWaiting == 1
	}, 10*time.Second, time.Millisecond)
	restarted := time.Now()
	s.restart()

	rs, err := fanout.Run(context.Background(),
		[]fanout.Task[int]{fanoutnats.Remote[int, int](c, "square", "k", 3)}, fanout.WithTimeout(20*time.Second))
	require.NoError(t, err)
	v, _ := rs.Value("k")
	assert.Equal(t, 9, v)
	assert.Less(t, time.Since(restarted), 3*time.Second,
		"the worker asked again within a few missed heartbeats, not at its request's expiry")
}

func TestFileServerRestartMidRunLosesNothing(t *testing.T) {
	s := newRestartable(t)
	opts := []fanoutnats.Option{fanoutnats.WithAckWait(fastAck)} // file storage
	c, err := fanoutnats.NewClient(context.Background(), s.conn(), opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ran := newCalls()
	started := newSignals()
	release := make(chan struct{})
	w := s.workerOn(s.conn(), func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "hold", func(ctx context.Context, n int) (int, error) {
			info, _ := fanoutnats.TaskFromContext(ctx)
			if ran.add(info.Key) == 1 && n < 2 {
				started.send(info.Key)
				<-release // the first two hold their slots across the restart
			}
			return n * n, nil
		})
	}, append(opts, fanoutnats.WithConcurrency(2))...)
	b := c.Batch()
	var tasks []fanout.Task[int]
	for i := range 10 {
		tasks = append(tasks, fanoutnats.Remote[int, int](b, "hold", fmt.Sprint("k", i), i))
	}
	type out struct {
		rs  *fanout.Results[int]
		err error
	}
	done := make(chan out, 1)
	go func() {
		rs, err := fanout.Run(context.Background(), tasks, fanout.WithTimeout(30*time.Second))
		done <- out{rs, err}
	}()
	started.wait(t)
	started.wait(t)
	require.Eventually(t, func() bool { return s.queued() == 10 }, 10*time.Second, 5*time.Millisecond)
	s.restart()
	close(release)

	o := <-done
	require.NoError(t, o.err)
	for i := range 10 {
		v, err := o.rs.Value(fmt.Sprint("k", i))
		require.NoError(t, err)
		assert.Equal(t, i*i, v)
	}
	assert.Zero(t, c.Stats().Republished, "the stream kept every task")
	assert.LessOrEqual(t, w.Stats().Started, int64(10+2), "at most the two running across the restart ran again")
	require.Eventually(t, func() bool { return s.queued() == 0 }, 10*time.Second, 5*time.Millisecond)
}

func TestServeReturnsAnErrorWhenABoundConsumerDisappears(t *testing.T) {
	e := newEnv(t)
	e.client() // creates the streams
	_, err := fanoutnats.NewWorker(context.Background(), e.conn(), testOpts()...)
	require.NoError(t, err) // and the consumer
	w := e.worker(func(w *fanoutnats.Worker) { fanoutnats.Handle(w, "square", square) }, fanoutnats.WithBind())
	require.NoError(t, e.inspect().DeleteConsumer(context.Background(), "FANOUT", "workers"))
	select {
	case err := <-w.done:
		require.ErrorContains(t, err, `fanoutnats: WithBind: consumer "workers" of stream "FANOUT" does not exist`)
		w.done <- err
	case <-time.After(20 * time.Second):
		t.Fatal("Serve kept running without its consumer")
	}
}
