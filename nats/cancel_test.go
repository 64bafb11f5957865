package fanoutnats_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStoppingTheRunPurgesQueuedTasksAndCancelsRunningOnes(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		// run starts the run with trigger as a local task's signal to
		// fail or succeed, and cancel as the caller's context cancel.
		run func(ctx context.Context, tasks []fanout.Task[string]) error
		// stop makes the run stop, once two remote tasks are running.
		stop func(trigger chan<- error, cancel context.CancelFunc)
	}{
		{
			name: "fail-fast after a local failure",
			run: func(ctx context.Context, tasks []fanout.Task[string]) error {
				_, err := fanout.Run(ctx, tasks, fanout.WithFailFast())
				return err
			},
			stop: func(trigger chan<- error, _ context.CancelFunc) { trigger <- boom },
		},
		{
			name: "an aggregator that decided early",
			run: func(ctx context.Context, tasks []fanout.Task[string]) error {
				_, err := fanout.Gather(ctx, tasks, fanout.First[string]())
				return err
			},
			stop: func(trigger chan<- error, _ context.CancelFunc) { trigger <- nil },
		},
		{
			name: "the caller cancelling its context",
			run: func(ctx context.Context, tasks []fanout.Task[string]) error {
				_, err := fanout.Run(ctx, tasks)
				return err
			},
			stop: func(_ chan<- error, cancel context.CancelFunc) { cancel() },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			c := e.client()
			running := newSignals()
			stopped := make(chan error, 10)
			w := e.worker(func(w *fanoutnats.Worker) {
				fanoutnats.Handle(w, "block", func(ctx context.Context, _ struct{}) (string, error) {
					info, _ := fanoutnats.TaskFromContext(ctx)
					running.send(info.Key)
					<-ctx.Done()
					stopped <- context.Cause(ctx)
					return "", context.Cause(ctx)
				})
			}, fanoutnats.WithConcurrency(2))

			trigger := make(chan error)
			b := c.Batch()
			tasks := []fanout.Task[string]{{Key: "local", Do: func(ctx context.Context) (string, error) {
				select {
				case err := <-trigger:
					return "local", err
				case <-ctx.Done():
					return "", context.Cause(ctx)
				}
			}}}
			for i := range 10 {
				tasks = append(tasks, fanoutnats.Remote[struct{}, string](b, "block", fmt.Sprint("r", i), struct{}{}))
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- tt.run(ctx, tasks) }()

			running.wait(t)
			running.wait(t)
			require.Eventually(t, func() bool { return c.Stats().Sent == 10 }, 10*time.Second, 5*time.Millisecond)
			tt.stop(trigger, cancel)
			<-done

			assert.Zero(t, e.queued(), "the run's queued tasks were purged before it returned")
			assert.Equal(t, int64(1), c.Stats().Purges)
			for range 2 {
				assert.ErrorIs(t, <-stopped, fanoutnats.ErrCancelledForTest)
			}
			assert.Equal(t, int64(2), w.Stats().Started, "no queued task started after the stop")
		})
	}
}

func TestHedgedCopyThatLosesIsCancelledAlone(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	loserStopped := make(chan error, 1)
	first := make(chan struct{}, 1)
	first <- struct{}{}
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "maybe-slow", func(ctx context.Context, _ struct{}) (string, error) {
			select {
			case <-first: // the first copy hangs
				<-ctx.Done()
				loserStopped <- context.Cause(ctx)
				return "", context.Cause(ctx)
			default:
				return "fast copy", nil
			}
		})
	}, fanoutnats.WithConcurrency(2))
	b := c.Batch()
	rs, err := fanout.Run(context.Background(),
		[]fanout.Task[string]{fanoutnats.Remote[struct{}, string](b, "maybe-slow", "k", struct{}{})},
		fanout.WithHedge(fanout.HedgePolicy{Delay: 50 * time.Millisecond, MaxExtra: 1}))
	require.NoError(t, err)
	r, _ := rs.Get("k")
	assert.Equal(t, "fast copy", r.Value)
	assert.Equal(t, 1, r.Hedges)
	assert.ErrorIs(t, <-loserStopped, fanoutnats.ErrCancelledForTest)
	assert.Zero(t, c.Stats().Purges, "a lost race cancels one attempt, not the batch")
}
