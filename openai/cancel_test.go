package fanoutopenai_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

// hold is an answer that never comes in time.
var hold = slow(30 * time.Second)

// requireClosed waits until the fake's handler of key has seen its
// request's context end: the client closed the connection.
func requireClosed(t *testing.T, api *fakeAPI, key string) {
	t.Helper()
	require.Eventually(t, func() bool { return api.cancelledCount(key) == 1 }, 5*time.Second, 5*time.Millisecond,
		"the server never saw the request of %q end", key)
}

// after is task, called once the fake has received a request of key:
// a task that decides the run only once the request to be cut is in
// flight.
func after(api *fakeAPI, key string, task fanout.Task[*openai.ChatCompletion]) fanout.Task[*openai.ChatCompletion] {
	do := task.Do
	task.Do = func(ctx context.Context) (*openai.ChatCompletion, error) {
		select {
		case <-api.arrived(key):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return do(ctx)
	}
	return task
}

func TestCancellationClosesTheRequest(t *testing.T) {
	t.Run("a run timeout", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("slow", hold)
		_, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{chatTask(api.client(), "slow")},
			fanout.WithTimeout(time.Second))
		require.ErrorIs(t, err, fanout.ErrRunTimeout)
		requireClosed(t, api, "slow")
	})
	t.Run("a task timeout", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("slow", hold)
		_, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{chatTask(api.client(), "slow")},
			fanout.WithTaskTimeout(time.Second))
		require.ErrorIs(t, err, fanout.ErrTaskTimeout)
		requireClosed(t, api, "slow")
	})
	t.Run("First decided", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("slow", hold)
		client := api.client()
		first, err := fanout.Gather(context.Background(),
			[]fanout.Task[*openai.ChatCompletion]{chatTask(client, "slow"), after(api, "slow", chatTask(client, "fast"))},
			fanout.First[*openai.ChatCompletion]())
		require.NoError(t, err)
		assert.Equal(t, "fast", first.Key)
		requireClosed(t, api, "slow")
	})
	t.Run("Vote decided", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("slow", hold)
		client := api.client()
		tally, err := fanout.Gather(context.Background(),
			[]fanout.Task[*openai.ChatCompletion]{after(api, "slow", chatTask(client, "a")), chatTask(client, "slow"), after(api, "slow", chatTask(client, "b"))},
			fanout.Vote(func(c *openai.ChatCompletion) string { return c.Model }))
		require.NoError(t, err)
		assert.True(t, tally.Decided)
		assert.Equal(t, "gpt-test", tally.Winner)
		requireClosed(t, api, "slow")
	})
	t.Run("a hedge lost", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("h", hold) // the first copy hangs, the hedge is served
		task := chatTask(api.client(), "h")
		var calls atomic.Int32
		first, hedge := task.Do, after(api, "h", task).Do
		task.Do = func(ctx context.Context) (*openai.ChatCompletion, error) {
			if calls.Add(1) == 1 {
				return first(ctx)
			}
			return hedge(ctx)
		}
		rs, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{task},
			fanout.WithHedge(fanout.HedgePolicy{Delay: 50 * time.Millisecond, MaxExtra: 1}))
		require.NoError(t, err)
		r, _ := rs.Get("h")
		assert.Equal(t, 1, r.Hedges)
		requireClosed(t, api, "h")
	})
	t.Run("a Stream's consumer breaking off", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("slow", hold)
		client := api.client()
		seq, err := fanout.Stream(context.Background(),
			[]fanout.Task[*openai.ChatCompletion]{chatTask(client, "slow"), after(api, "slow", chatTask(client, "fast"))})
		require.NoError(t, err)
		for r := range seq {
			assert.Equal(t, "fast", r.Key)
			break
		}
		requireClosed(t, api, "slow")
	})
}
