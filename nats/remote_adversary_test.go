package fanoutnats_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests attack the remote path's documented promises from the
// outside: hostile handlers, payloads that do not decode, stopped
// workers, cancelled runs, the core's retries and hedges, resumed
// batches, tenants, key limits, misuse and Close.

const eventually = 10 * time.Second

// retryThree retries twice more, quickly.
var retryThree = fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond})

// runOne runs one remote task through a fresh batch of c and returns its
// result.
func runOne[A, T any](t *testing.T, c *fanoutnats.Client, name, key string, args A, opts ...fanout.Option) fanout.Result[T] {
	t.Helper()
	rs, _ := fanout.Run(context.Background(),
		[]fanout.Task[T]{fanoutnats.Remote[A, T](c.Batch(), name, key, args)},
		append([]fanout.Option{fanout.WithTimeout(20 * time.Second)}, opts...)...)
	r, ok := rs.Get(key)
	require.True(t, ok)
	return r
}

func TestAdversaryHandlerPanicIsOneAttemptWithTheWorkersStack(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "boom", func(context.Context, string) (string, error) {
			panic(fmt.Errorf("handler exploded"))
		})
	})
	r := runOne[string, string](t, c, "boom", "k", "x", retryThree)
	var pe *fanout.PanicError
	require.ErrorAs(t, r.Err, &pe)
	assert.Contains(t, string(pe.Stack), "remote_adversary_test.go", "the worker's stack travels")
	var re *fanoutnats.RemoteError
	require.ErrorAs(t, r.Err, &re)
	assert.Equal(t, fanoutnats.CodePanic, re.Code)
	assert.Equal(t, 1, r.Attempts, "a panic is not retried")
	assert.Equal(t, int64(1), w.Stats().Started)
	assert.Equal(t, int64(1), w.Stats().Failed)
}

func TestAdversaryHandlerGoexitFailsTheKeyOnceWithErrGoexit(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	var ran atomic.Int32
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "exit", func(context.Context, string) (string, error) {
			ran.Add(1)
			runtime.Goexit()
			return "unreachable", nil
		})
		fanoutnats.Handle(w, "ok", func(context.Context, string) (string, error) { return "fine", nil })
	}, fanoutnats.WithConcurrency(1))
	r := runOne[string, string](t, c, "exit", "k", "x", retryThree)
	require.ErrorIs(t, r.Err, fanout.ErrGoexit, "as a local task's Goexit")
	assert.Equal(t, 1, r.Attempts, "a Goexit is not retried")
	assert.Equal(t, int32(1), ran.Load(), "the handler ran once: no redelivery")
	assert.Equal(t, int64(1), w.Stats().Failed)
	assert.Zero(t, c.Stats().MaxDelivers)
	// The worker survives it, its slot free again.
	r = runOne[string, string](t, c, "ok", "next", "x")
	require.NoError(t, r.Err)
	assert.Equal(t, "fine", r.Value)
}

func TestAdversaryHandlerIgnoringItsDeadlineEndsTheAttemptAndItsReplyCountsLate(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	release := make(chan struct{})
	started := newSignals()
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "stubborn", func(ctx context.Context, s string) (string, error) {
			started.send(s)
			<-release // ignores ctx
			return "too late", nil
		})
	})
	defer close(release)
	start := time.Now()
	r := runOne[string, string](t, c, "stubborn", "k", "x", fanout.WithTaskTimeout(200*time.Millisecond))
	require.ErrorIs(t, r.Err, fanout.ErrTaskTimeout)
	assert.Less(t, time.Since(start), 5*time.Second, "the attempt ends with its context")
	assert.Equal(t, "x", started.wait(t))
	require.Eventually(t, func() bool { return e.queued() == 0 }, eventually, 5*time.Millisecond,
		"the attempt's task is removed from the queue")

	release <- struct{}{}
	require.Eventually(t, func() bool { return c.Stats().Late == 1 }, eventually, 5*time.Millisecond)
	assert.Zero(t, c.Stats().Replies)
	assert.Zero(t, c.Stats().Duplicates)
	assert.Equal(t, int64(1), w.Stats().Started, "not redelivered while it ran")
}

func TestAdversaryResultOverMaxPayloadIsOnePermanentTooLarge(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "huge", func(_ context.Context, n int) (string, error) {
			return strings.Repeat("x", n), nil
		})
	})
	limit := int(e.conn().MaxPayload())
	r := runOne[int, string](t, c, "huge", "k", limit+1, retryThree)
	require.ErrorIs(t, r.Err, fanoutnats.ErrTooLarge)
	var perm *backoff.PermanentError
	require.ErrorAs(t, r.Err, &perm)
	assert.Equal(t, 1, r.Attempts)
	assert.Contains(t, r.Err.Error(), fmt.Sprint(limit), "names the limit")
	assert.Equal(t, int64(1), w.Stats().Started)

	// Arguments over it fail before anything is sent.
	sent := c.Stats().Sent
	r = runOne[string, string](t, c, "huge", "big-args", strings.Repeat("y", limit+1), retryThree)
	require.ErrorIs(t, r.Err, fanoutnats.ErrTooLarge)
	assert.Equal(t, 1, r.Attempts)
	assert.Equal(t, sent, c.Stats().Sent)
}

// unencodable fails to encode as JSON.
type unencodable struct{ F float64 }

func TestAdversaryPayloadsThatDoNotDecodeArePermanent(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "int-in", func(_ context.Context, n int) (int, error) { return n, nil })
		fanoutnats.Handle(w, "string-out", func(context.Context, int) (string, error) { return "not a number", nil })
		fanoutnats.Handle(w, "nan-out", func(context.Context, int) (unencodable, error) {
			return unencodable{F: math.NaN()}, nil
		})
	})
	tests := []struct {
		give     string
		run      func() fanout.Result[int]
		wantCode fanoutnats.Code // "" when the client fails to decode
	}{
		{give: "arguments of a type the handler does not take", wantCode: fanoutnats.CodeBadArgs,
			run: func() fanout.Result[int] { return runOne[string, int](t, c, "int-in", "a", "seven", retryThree) }},
		{give: "a result of a type the client does not expect",
			run: func() fanout.Result[int] { return runOne[int, int](t, c, "string-out", "b", 1, retryThree) }},
		{give: "a result the worker cannot encode", wantCode: fanoutnats.CodePermanent,
			run: func() fanout.Result[int] { return runOne[int, int](t, c, "nan-out", "c", 1, retryThree) }},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			before := w.Stats().Started
			r := tt.run()
			require.Error(t, r.Err)
			var perm *backoff.PermanentError
			assert.ErrorAs(t, r.Err, &perm, "decoding again cannot succeed: %v", r.Err)
			assert.Equal(t, 1, r.Attempts, "not retried: %v", r.Err)
			if tt.wantCode != "" {
				var re *fanoutnats.RemoteError
				require.ErrorAs(t, r.Err, &re)
				assert.Equal(t, tt.wantCode, re.Code)
			} else {
				assert.Contains(t, r.Err.Error(), "decode result")
			}
			assert.Equal(t, before+1, w.Stats().Started, "the worker ran it once")
		})
	}
}

func TestAdversaryUnknownTaskNameFailsAtOnceWithoutRunning(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "known", func(context.Context, int) (int, error) { return 1, nil })
	}, fanoutnats.WithName("only-known"))
	r := runOne[int, int](t, c, "unknown", "k", 1, retryThree)
	var re *fanoutnats.RemoteError
	require.ErrorAs(t, r.Err, &re)
	assert.Equal(t, fanoutnats.CodeNoHandler, re.Code)
	assert.Equal(t, "only-known", re.Worker)
	assert.Contains(t, re.Message, `"unknown"`)
	assert.Equal(t, 1, r.Attempts)
	assert.Zero(t, w.Stats().Started)
	require.Eventually(t, func() bool { return e.queued() == 0 }, eventually, 5*time.Millisecond,
		"the task is acknowledged")
}

func TestAdversaryStoppedWorkerStoresAResultItAlreadyHas(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	release := make(chan struct{})
	started := newSignals()
	first := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(ctx context.Context, s string) (string, error) {
			started.send(s)
			<-release // finishes its work whatever ctx says
			return "first", nil
		})
	}, fanoutnats.WithName("first"))

	done := runJobInBackground(c.Batch())
	started.wait(t)
	go first.stop() // Serve's context ends while the handler runs
	var again atomic.Int32
	second := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(context.Context, string) (string, error) {
			again.Add(1)
			return "second", nil
		})
	}, fanoutnats.WithName("second"))
	close(release)

	r := <-done
	require.NoError(t, r.Err)
	assert.Equal(t, "first", r.Value, "a result in hand is stored, not thrown away")
	first.shutdown()
	assert.Zero(t, again.Load(), "the task did not run twice")
	assert.Zero(t, second.Stats().Started)
	assert.Equal(t, int64(1), first.Stats().Succeeded)
}

func TestAdversaryStoppedWorkerHandsBackAndTheTaskRunsOnceMore(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	started := newSignals()
	first := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(ctx context.Context, s string) (string, error) {
			started.send(s)
			<-ctx.Done()
			return "", context.Cause(ctx)
		})
	}, fanoutnats.WithName("first"), fanoutnats.WithConcurrency(1))

	done := runJobInBackground(c.Batch())
	started.wait(t)
	first.shutdown()
	second := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(context.Context, string) (string, error) { return "second", nil })
	}, fanoutnats.WithName("second"))

	r := <-done
	require.NoError(t, r.Err)
	assert.Equal(t, "second", r.Value)
	assert.Equal(t, 1, r.Attempts, "a hand-back is a redelivery, not a new attempt")
	assert.Equal(t, int64(1), second.Stats().Started)
	assert.Equal(t, int64(1), second.Stats().Redelivered)
	assert.Zero(t, first.Stats().Failed, "no error reply from the stopped worker")
	assert.Equal(t, int64(1), c.Stats().Replies)
	assert.Zero(t, c.Stats().Duplicates+c.Stats().Late)
}

func TestAdversaryStoppedRunLeavesNothingQueued(t *testing.T) {
	errStop := errors.New("caller stopped the run")
	tests := []struct {
		give string
		// stop ends the run once its first task runs; timed runs send
		// their deadline along, which the worker may notice first.
		stop  func(cancel context.CancelCauseFunc)
		opts  []fanout.Option
		timed bool
	}{
		{give: "cancelled by the caller", stop: func(cancel context.CancelCauseFunc) { cancel(errStop) }},
		{give: "timed out", stop: func(context.CancelCauseFunc) {},
			opts: []fanout.Option{fanout.WithTimeout(300 * time.Millisecond)}, timed: true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			e := newEnv(t)
			c := e.client()
			release := make(chan struct{})
			started := newSignals()
			w := e.worker(func(w *fanoutnats.Worker) {
				fanoutnats.Handle(w, "slow", func(ctx context.Context, s string) (string, error) {
					started.send(s)
					<-release // ignores the cancel
					return "late", nil
				})
			}, fanoutnats.WithConcurrency(1))
			defer close(release)
			var tasks []fanout.Task[string]
			b := c.Batch()
			for i := range 10 {
				tasks = append(tasks, fanoutnats.Remote[string, string](b, "slow", fmt.Sprint("k", i), fmt.Sprint(i)))
			}
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			go func() {
				if started.wait(t) == "0" {
					tt.stop(cancel)
				}
			}()
			rs, err := fanout.Run(ctx, tasks, tt.opts...)
			require.Error(t, err)
			for _, r := range rs.All() {
				require.Error(t, r.Err, r.Key)
				if !tt.timed {
					assert.ErrorIs(t, r.Err, errStop, "the caller's cause, not a bare Canceled")
				}
			}
			assert.Zero(t, e.queued(), "nothing left queued when Run returns")
			assert.Equal(t, int64(1), c.Stats().Purges)

			release <- struct{}{}
			s := func() fanoutnats.WorkerStats { return w.Stats() }
			require.Eventually(t, func() bool { return s().Cancelled+s().Succeeded == 1 }, eventually, 5*time.Millisecond)
			require.Eventually(t, func() bool { return c.Stats().Late == s().Succeeded }, eventually, 5*time.Millisecond,
				"a reply stored after all counts late")
			if !tt.timed {
				assert.Equal(t, int64(1), s().Cancelled, "the worker heard the cancel")
				assert.Zero(t, e.storedReplies(), "a cancelled task's result is not stored")
			}
			assert.Equal(t, int64(1), s().Started, "no other task of the batch ran")
			assert.Zero(t, c.Stats().Replies)
			assert.Zero(t, e.queued())
		})
	}
}

func TestAdversaryAttemptsMatchWhatWorkersRan(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	var mu sync.Mutex
	runs := map[string]int{}
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(ctx context.Context, mode string) (string, error) {
			info, _ := fanoutnats.TaskFromContext(ctx)
			mu.Lock()
			runs[info.Key]++
			n := runs[info.Key]
			mu.Unlock()
			switch {
			case mode == "flaky" && n < 3:
				return "", errors.New("transient")
			case mode == "slow-first" && n == 1:
				<-ctx.Done()
				return "", context.Cause(ctx)
			case mode == "hedge" && n == 1:
				<-ctx.Done() // the hedged copy wins
				return "", context.Cause(ctx)
			}
			return fmt.Sprint(mode, n), nil
		})
	}, fanoutnats.WithConcurrency(4))

	tests := []struct {
		give         string
		opts         []fanout.Option
		wantValue    string
		wantAttempts int
		wantHedges   int
	}{
		{give: "flaky", opts: []fanout.Option{retryThree}, wantValue: "flaky3", wantAttempts: 3},
		{give: "slow-first", opts: []fanout.Option{retryThree, fanout.WithTaskTimeout(300 * time.Millisecond)},
			wantValue: "slow-first2", wantAttempts: 2},
		{give: "hedge", opts: []fanout.Option{fanout.WithHedge(fanout.HedgePolicy{Delay: 50 * time.Millisecond, MaxExtra: 1})},
			wantValue: "hedge2", wantAttempts: 2, wantHedges: 1},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			r := runOne[string, string](t, c, "job", tt.give, tt.give, tt.opts...)
			require.NoError(t, r.Err)
			assert.Equal(t, tt.wantValue, r.Value)
			assert.Equal(t, tt.wantAttempts, r.Attempts)
			assert.Equal(t, tt.wantHedges, r.Hedges)
			mu.Lock()
			assert.Equal(t, tt.wantAttempts, runs[tt.give], "each attempt ran once on a worker")
			mu.Unlock()
		})
	}
	require.Eventually(t, func() bool { return w.Stats().Started == w.Stats().Succeeded+w.Stats().Failed+w.Stats().Cancelled },
		eventually, 5*time.Millisecond)
	assert.Zero(t, w.Stats().Redelivered)
	assert.Zero(t, c.Stats().Duplicates)
}

func TestAdversaryResumeBatchWithBadForeignOrExpiredIDs(t *testing.T) {
	e := newEnv(t)
	var ran atomic.Int32
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(_ context.Context, s string) (string, error) {
			ran.Add(1)
			return s, nil
		})
	})
	t.Run("malformed IDs are refused before any work", func(t *testing.T) {
		c := e.client()
		for _, id := range []string{"", "a.b", "*", ">", "a b", "a\nb", "tenant.batch"} {
			b, err := c.ResumeBatch(id)
			require.Error(t, err, "%q", id)
			assert.Nil(t, b)
			assert.True(t, strings.HasPrefix(err.Error(), "fanoutnats: "), err.Error())
		}
		assert.Zero(t, c.Stats().Sent)
	})
	t.Run("another tenant's batch ID resumes nothing of theirs", func(t *testing.T) {
		acme := e.client(fanoutnats.WithTenant("acme"))
		other := e.client(fanoutnats.WithTenant("other"))
		b := acme.Batch()
		_, err := fanout.Run(context.Background(),
			[]fanout.Task[string]{fanoutnats.Remote[string, string](b, "job", "k", "acme's")},
			fanout.WithTimeout(20*time.Second))
		require.NoError(t, err)

		foreign, err := other.ResumeBatch(b.ID())
		require.NoError(t, err)
		before := ran.Load()
		rs, err := fanout.Run(context.Background(),
			[]fanout.Task[string]{fanoutnats.Remote[string, string](foreign, "job", "k", "other's")},
			fanout.WithTimeout(20*time.Second))
		require.NoError(t, err)
		v, _ := rs.Value("k")
		assert.Equal(t, "other's", v, "never acme's stored result")
		assert.Zero(t, other.Stats().Resumed)
		assert.Equal(t, before+1, ran.Load())
	})
	t.Run("an unknown ID runs every key", func(t *testing.T) {
		c := e.client()
		b, err := c.ResumeBatch("never-used-before")
		require.NoError(t, err)
		before := ran.Load()
		rs, err := fanout.Run(context.Background(),
			[]fanout.Task[string]{fanoutnats.Remote[string, string](b, "job", "k", "fresh")},
			fanout.WithTimeout(20*time.Second))
		require.NoError(t, err)
		v, _ := rs.Value("k")
		assert.Equal(t, "fresh", v)
		assert.Equal(t, before+1, ran.Load())
		assert.Zero(t, c.Stats().Resumed+c.Stats().Adopted)
	})
}

func TestAdversaryResumeBatchAfterItsRepliesExpiredRunsAgain(t *testing.T) {
	e := newEnv(t)
	c := e.client(fanoutnats.WithReplyRetention(time.Second))
	var ran atomic.Int32
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(_ context.Context, s string) (string, error) {
			ran.Add(1)
			return s, nil
		})
	})
	b := c.Batch()
	task := []fanout.Task[string]{fanoutnats.Remote[string, string](b, "job", "k", "v")}
	_, err := fanout.Run(context.Background(), task, fanout.WithTimeout(20*time.Second))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.storedReplies() == 0 }, eventually, 20*time.Millisecond)

	resumed, err := c.ResumeBatch(b.ID())
	require.NoError(t, err)
	task = []fanout.Task[string]{fanoutnats.Remote[string, string](resumed, "job", "k", "v")}
	rs, err := fanout.Run(context.Background(), task, fanout.WithTimeout(20*time.Second))
	require.NoError(t, err)
	v, _ := rs.Value("k")
	assert.Equal(t, "v", v)
	assert.Equal(t, int32(2), ran.Load(), "an expired reply cannot be resumed: the key runs again")
	assert.Zero(t, c.Stats().Resumed)
}

func TestAdversaryTwoClientsOnTheSamePrefixGetOnlyTheirOwnReplies(t *testing.T) {
	e := newEnv(t)
	c1, c2 := e.client(), e.client()
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "echo", func(_ context.Context, s string) (string, error) { return s, nil })
	})
	const n = 30
	run := func(c *fanoutnats.Client, who string) (*fanout.Results[string], error) {
		b := c.Batch()
		var tasks []fanout.Task[string]
		for i := range n {
			tasks = append(tasks, fanoutnats.Remote[string, string](b, "echo", fmt.Sprint("k", i), fmt.Sprint(who, i)))
		}
		return fanout.Run(context.Background(), tasks, fanout.WithTimeout(20*time.Second))
	}
	var wg sync.WaitGroup
	var rs1, rs2 *fanout.Results[string]
	var err1, err2 error
	wg.Go(func() { rs1, err1 = run(c1, "one") })
	wg.Go(func() { rs2, err2 = run(c2, "two") })
	wg.Wait()
	require.NoError(t, err1)
	require.NoError(t, err2)
	for i := range n {
		assert.Equal(t, fmt.Sprint("one", i), rs1.All()[i].Value)
		assert.Equal(t, fmt.Sprint("two", i), rs2.All()[i].Value)
	}
	for _, c := range []*fanoutnats.Client{c1, c2} {
		s := c.Stats()
		assert.Equal(t, int64(n), s.Replies)
		assert.Zero(t, s.Duplicates+s.Late)
	}
}

func TestAdversaryTasksNamingAnotherTenantsReplySubjectAreRefused(t *testing.T) {
	e := newEnv(t)
	e.client(fanoutnats.WithTenant("mallory")) // creates the streams
	var ran atomic.Int32
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "job", func(context.Context, string) (string, error) {
			ran.Add(1)
			return "secret", nil
		})
	})
	spy := e.conn()
	heard := make(chan *nats.Msg, 16)
	sub, err := spy.ChanSubscribe("fanout.reply.>", heard)
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	require.NoError(t, spy.Flush())

	task := "fanout.task.mallory.job.B1.k"
	replies := []string{
		"fanout.reply.alice.C1.B1.k",           // another tenant
		"fanout.reply.mallory.C1.B2.k",         // another batch
		"fanout.reply.mallory.C1.B1.other",     // another key
		"fanout.reply.mallory.*.B1.k",          // a wildcard client
		"fanout.reply.mallory.>",               // a wildcard tail
		"fanout.reply.mallory.C1.B1.k.extra",   // an extra token
		"fanout.reply.mallory.C1.x.B1.k",       // a tenant's subject shifted
		"fanout.status.w",                      // not a reply at all
		"fanout.reply.mallory.C1.B1",           // too short
		"other.reply.mallory.C1.B1.k",          // another prefix
		"fanout.reply.mallory..B1.k",           // an empty client token
		"fanout.reply.mallory.C1.B1.k\r\nX: y", // a header injection
	}
	js := e.inspect()
	for i, reply := range replies {
		m := nats.NewMsg(task)
		m.Data = []byte(`"x"`)
		m.Header.Set("Fanout-Task", fmt.Sprint("forged-", i))
		m.Header.Set("Fanout-Reply", reply)
		_, err := js.PublishMsg(context.Background(), m)
		require.NoError(t, err, reply)
	}
	require.Eventually(t, func() bool { return w.Stats().Refused == int64(len(replies)) }, eventually, 5*time.Millisecond)
	assert.Zero(t, ran.Load())
	assert.Zero(t, e.storedReplies())
	assert.Empty(t, heard)
	assert.Zero(t, e.queued())
}

func TestAdversaryKeysAtAndOverMaxKeyLen(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "key", func(ctx context.Context, _ int) ([]byte, error) {
			info, _ := fanoutnats.TaskFromContext(ctx)
			return []byte(info.Key), nil // JSON keeps bytes, not invalid UTF-8 in strings
		})
	})
	tests := []struct {
		give    string
		key     string
		wantErr bool
	}{
		{give: "plain at the limit", key: strings.Repeat("k", fanoutnats.MaxKeyLen)},
		{give: "dots and spaces at the limit", key: strings.Repeat("a. ", fanoutnats.MaxKeyLen/3) + "z"},
		{give: "control bytes at the limit", key: strings.Repeat("\x00\n", fanoutnats.MaxKeyLen/2)},
		{give: "invalid UTF-8 at the limit", key: strings.Repeat("\xff", fanoutnats.MaxKeyLen)},
		{give: "one byte over", key: strings.Repeat("k", fanoutnats.MaxKeyLen+1), wantErr: true},
		{give: "far over", key: strings.Repeat("\xff", 100*fanoutnats.MaxKeyLen), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if !tt.wantErr {
				require.Len(t, tt.key, fanoutnats.MaxKeyLen)
			}
			sent := c.Stats().Sent
			r := runOne[int, []byte](t, c, "key", tt.key, 0, retryThree)
			if tt.wantErr {
				require.ErrorIs(t, r.Err, fanoutnats.ErrTooLarge)
				var perm *backoff.PermanentError
				require.ErrorAs(t, r.Err, &perm)
				assert.Equal(t, 1, r.Attempts)
				assert.Equal(t, sent, c.Stats().Sent, "nothing sent")
				assert.Less(t, len(r.Err.Error()), 1024, "the error does not quote the whole key")
				return
			}
			require.NoError(t, r.Err)
			assert.True(t, tt.key == string(r.Value), "the key arrives intact")
		})
	}
}

func TestAdversaryNilArgumentsAndBadOptionsFailBeforeAnyWork(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	t.Run("nil connections are errors", func(t *testing.T) {
		_, err := fanoutnats.NewClient(ctx, nil)
		require.ErrorContains(t, err, "fanoutnats: ")
		_, err = fanoutnats.NewWorker(ctx, nil)
		require.ErrorContains(t, err, "fanoutnats: ")
		_, err = fanoutnats.OpenJournal(ctx, nil, "run")
		require.ErrorContains(t, err, "fanoutnats: ")
	})
	t.Run("bad options create nothing", func(t *testing.T) {
		nc := e.conn()
		for _, opt := range []fanoutnats.Option{
			nil, fanoutnats.WithTenant(""), fanoutnats.WithTenant("a.b"), fanoutnats.WithReplicas(0),
			fanoutnats.WithAckWait(0), fanoutnats.WithConcurrency(0), fanoutnats.WithResultTimeout(-1),
			fanoutnats.WithPrefix(">"), fanoutnats.WithStream("A B"), fanoutnats.WithCodec(nil),
			fanoutnats.WithMaxDeliver(0), fanoutnats.WithReplyRetention(0), fanoutnats.WithConsumer("*"),
		} {
			_, err := fanoutnats.NewClient(ctx, nc, opt)
			require.ErrorContains(t, err, "fanoutnats: ")
			_, err = fanoutnats.NewWorker(ctx, nc, opt)
			require.ErrorContains(t, err, "fanoutnats: ")
		}
		js := e.inspect()
		_, err := js.Stream(ctx, "FANOUT")
		require.Error(t, err, "no stream was created")
	})
	t.Run("nil handlers and scopes panic at once, naming the package", func(t *testing.T) {
		w, err := fanoutnats.NewWorker(ctx, e.conn(), testOpts()...)
		require.NoError(t, err)
		assertPanicsWithPrefix(t, func() {
			fanoutnats.Handle[int, int](w, "nil", nil)
		})
		assertPanicsWithPrefix(t, func() {
			fanoutnats.Handle(nil, "job", func(context.Context, int) (int, error) { return 0, nil })
		})
		assertPanicsWithPrefix(t, func() { fanoutnats.Remote[int, int](nil, "job", "k", 1) })
		var c *fanoutnats.Client
		assertPanicsWithPrefix(t, func() { fanoutnats.Remote[int, int](c, "job", "k", 1) })
		var b *fanoutnats.Batch
		assertPanicsWithPrefix(t, func() { fanoutnats.Remote[int, int](b, "job", "k", 1) })
	})
	t.Run("a bad task name is a permanent error before anything is sent", func(t *testing.T) {
		c := e.client()
		for _, name := range []string{"", "a.b", "*", ">", "a b"} {
			r := runOne[int, int](t, c, name, "k", 1, retryThree)
			var perm *backoff.PermanentError
			require.ErrorAs(t, r.Err, &perm, "%q", name)
			assert.Equal(t, 1, r.Attempts)
		}
		assert.Zero(t, c.Stats().Sent)
	})
}

func assertPanicsWithPrefix(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		p := recover()
		require.NotNil(t, p, "no panic")
		assert.True(t, strings.HasPrefix(fmt.Sprint(p), "fanoutnats: "), "panic %q does not name the package", p)
	}()
	f()
}

func TestAdversaryCloseTwiceAndDuringRuns(t *testing.T) {
	e := newEnv(t)
	c, err := fanoutnats.NewClient(context.Background(), e.conn(), testOpts()...)
	require.NoError(t, err)
	release := make(chan struct{})
	defer close(release)
	started := newSignals()
	cancelled := make(chan struct{}, 1)
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "slow", func(ctx context.Context, s string) (string, error) {
			started.send(s)
			select {
			case <-release:
			case <-ctx.Done():
				cancelled <- struct{}{}
			}
			return s, nil
		})
	})
	done := make(chan *fanout.Results[string], 1)
	go func() {
		// No deadline: Close alone must end the waiting attempt.
		rs, _ := fanout.Run(context.Background(),
			[]fanout.Task[string]{fanoutnats.Remote[string, string](c.Batch(), "slow", "k", "v")},
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3}))
		done <- rs
	}()
	started.wait(t)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(c.Close)
	}
	wg.Wait()
	c.Close()
	select {
	case rs := <-done:
		r, _ := rs.Get("k")
		require.ErrorIs(t, r.Err, fanoutnats.ErrClientClosed)
		assert.Equal(t, 1, r.Attempts, "ErrClientClosed is permanent")
	case <-time.After(eventually):
		t.Fatal("a run outlived Close")
	}
	select {
	case <-cancelled:
	case <-time.After(eventually):
		t.Fatal("the waiting attempt's task was not cancelled on the worker")
	}

	sent := c.Stats().Sent
	rs, err := fanout.Run(context.Background(),
		[]fanout.Task[string]{fanoutnats.Remote[string, string](c.Batch(), "slow", "after", "v")})
	require.ErrorIs(t, err, fanoutnats.ErrClientClosed)
	r, _ := rs.Get("after")
	assert.Equal(t, 1, r.Attempts)
	assert.Equal(t, sent, c.Stats().Sent, "nothing is sent through a closed client")
}

func TestAdversaryWorkerNameCannotForgeReplyHeaders(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "fail", func(context.Context, int) (int, error) { return 0, errors.New("no") })
	}, fanoutnats.WithName("evil\r\nFanout-Status: ok"))
	r := runOne[int, int](t, c, "fail", "k", 1)
	var re *fanoutnats.RemoteError
	require.ErrorAs(t, r.Err, &re, "the handler's error, whatever the worker's name")
	assert.Equal(t, fanoutnats.CodeError, re.Code)
}

// runJobInBackground runs key "k" of task "job" through b, and delivers
// its Result once the run ends, within 20 s.
func runJobInBackground(b *fanoutnats.Batch) <-chan fanout.Result[string] {
	done := make(chan fanout.Result[string], 1)
	go func() {
		rs, _ := fanout.Run(context.Background(),
			[]fanout.Task[string]{fanoutnats.Remote[string, string](b, "job", "k", "x")},
			fanout.WithTimeout(20*time.Second))
		r, _ := rs.Get("k")
		done <- r
	}()
	return done
}
