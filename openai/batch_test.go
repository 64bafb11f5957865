package fanoutopenai_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutopenai "github.com/gofanout/fanout/openai"
)

func batchRequests(keys ...string) []fanoutopenai.BatchRequest {
	reqs := make([]fanoutopenai.BatchRequest, len(keys))
	for i, k := range keys {
		reqs[i] = fanoutopenai.BatchRequest{Key: k, Params: params(k)}
	}
	return reqs
}

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("k%d", i)
	}
	return out
}

// fastPolls keeps a test's batches quick.
var fastPolls = fanoutopenai.WithPollInterval(time.Millisecond, 5*time.Millisecond)

func TestRunBatch(t *testing.T) {
	t.Run("every key gets its completion, at half price", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.batchPolls = 3 })
		rs, err := fanoutopenai.RunBatch(context.Background(), api.client(), batchRequests("a", "b", "c"), fastPolls,
			fanoutopenai.WithPrices(fanoutopenai.Prices{Input: 2, Output: 8}))
		require.NoError(t, err)
		require.Equal(t, 3, rs.Succeeded())
		for i, r := range rs.All() {
			assert.Equal(t, i, r.Index)
			assert.Equal(t, "batch answer to "+r.Key, r.Value.Choices[0].Message.Content)
			assert.Equal(t, 1, r.Attempts)
			assert.Equal(t, int64(4+60), r.Cost.Tokens)
			assert.InDelta(t, (4*2.0+60*8.0)/1e6*100/2, r.Cost.Cents, 1e-12)
		}
		api.with(func() {
			assert.Equal(t, []int{3}, api.created)
			assert.GreaterOrEqual(t, api.polls, 3+3, "validating, in progress, finalizing, completed")
		})
	})
	t.Run("requests are split by count", func(t *testing.T) {
		api := newFakeAPI(t)
		rs, err := fanoutopenai.RunBatch(context.Background(), api.client(), batchRequests(keys(7)...), fastPolls,
			fanoutopenai.WithBatchLimits(3, 1<<20))
		require.NoError(t, err)
		assert.Equal(t, 7, rs.Succeeded())
		api.with(func() { assert.ElementsMatch(t, []int{3, 3, 1}, api.created) })
	})
	t.Run("requests are split by bytes", func(t *testing.T) {
		api := newFakeAPI(t)
		line := len(`{"custom_id":"k0","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"content":"k0 .............","role":"user"}],"model":"gpt-test","max_completion_tokens":100}}`) + 1
		rs, err := fanoutopenai.RunBatch(context.Background(), api.client(), batchRequests(keys(5)...), fastPolls,
			fanoutopenai.WithBatchLimits(100, 2*line))
		require.NoError(t, err)
		assert.Equal(t, 5, rs.Succeeded())
		api.with(func() { assert.ElementsMatch(t, []int{2, 2, 1}, api.created) })
	})
	t.Run("a request the batch refused fails with its classified error", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.batchFail["bad"] = badRequest() })
		api.with(func() { api.batchFail["busy"] = serverError() })
		rs, err := fanoutopenai.RunBatch(context.Background(), api.client(), batchRequests("ok", "bad", "busy"), fastPolls)
		require.Error(t, err)
		assert.Equal(t, 1, rs.Succeeded())
		bad, _ := rs.Get("bad")
		var apiErr *openai.Error
		require.ErrorAs(t, bad.Err, &apiErr)
		assert.Equal(t, 400, apiErr.StatusCode)
		assert.EqualError(t, bad.Err, "openai: 400 invalid_value: Invalid value for 'temperature'.")
		assert.False(t, fanout.Retryable(bad.Err), "sending it again would fail again")
		busy, _ := rs.Get("busy")
		assert.True(t, fanout.Retryable(busy.Err), "worth sending again")
		assert.Equal(t, 1, busy.Attempts)
	})
	t.Run("an expired batch keeps what it ran, and the rest fail with ErrBatchExpired", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.outcome = openai.BatchStatusExpired })
		rs, _ := fanoutopenai.RunBatch(context.Background(), api.client(), batchRequests(keys(4)...), fastPolls)
		assert.Equal(t, 2, rs.Succeeded())
		for _, k := range []string{"k2", "k3"} {
			r, _ := rs.Get(k)
			assert.ErrorIs(t, r.Err, fanoutopenai.ErrBatchExpired)
			assert.Zero(t, r.Attempts)
			assert.Contains(t, r.Err.Error(), "batch-")
		}
	})
	t.Run("a batch cancelled by someone else fails its rest with ErrBatchCancelled", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.outcome = openai.BatchStatusCancelled })
		rs, _ := fanoutopenai.RunBatch(context.Background(), api.client(), batchRequests(keys(4)...), fastPolls)
		assert.Equal(t, 2, rs.Succeeded())
		r, _ := rs.Get("k3")
		assert.ErrorIs(t, r.Err, fanoutopenai.ErrBatchCancelled)
	})
	t.Run("a failed batch fails every key with the API's reasons", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.outcome = openai.BatchStatusFailed })
		rs, err := fanoutopenai.RunBatch(context.Background(), api.client(), batchRequests("a", "b"), fastPolls)
		require.ErrorIs(t, err, fanoutopenai.ErrBatchFailed)
		assert.Zero(t, rs.Succeeded())
		a, _ := rs.Get("a")
		assert.ErrorContains(t, a.Err, "token_limit_exceeded: Enqueued token limit reached")
	})
	t.Run("a key the batch returned nothing for fails with ErrNoResult", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.batchDrop["b"] = true })
		rs, _ := fanoutopenai.RunBatch(context.Background(), api.client(), batchRequests("a", "b"), fastPolls)
		b, _ := rs.Get("b")
		assert.ErrorIs(t, b.Err, fanoutopenai.ErrNoResult)
		assert.Equal(t, 1, rs.Succeeded())
	})
	t.Run("a poll that fails for a while is tried again", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.getErrors = []int{500, 503} })
		rs, err := fanoutopenai.RunBatch(context.Background(), api.client(), batchRequests("a"), fastPolls)
		require.NoError(t, err)
		assert.Equal(t, 1, rs.Succeeded())
	})
	t.Run("a poll refused for good fails the batch's keys", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.getErrors = []int{403} })
		rs, err := fanoutopenai.RunBatch(context.Background(), api.client(), batchRequests("a"), fastPolls)
		require.Error(t, err)
		a, _ := rs.Get("a")
		assert.ErrorContains(t, a.Err, "openai: batch batch-2 status: 403 server_error")
		assert.False(t, fanout.Retryable(a.Err))
	})
	t.Run("no requests, no batch", func(t *testing.T) {
		api := newFakeAPI(t)
		rs, err := fanoutopenai.RunBatch(context.Background(), api.client(), nil)
		require.NoError(t, err)
		assert.Zero(t, rs.Len())
		api.with(func() { assert.Zero(t, api.nextID) })
	})
	t.Run("inside a task, the batch's cost counts in the run's budget", func(t *testing.T) {
		api := newFakeAPI(t)
		rs, err := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "batch", Do: func(ctx context.Context) (int, error) {
			rs, err := fanoutopenai.RunBatch(ctx, api.client(), batchRequests("a", "b"), fastPolls)
			return rs.Succeeded(), err
		}}})
		require.NoError(t, err)
		assert.Equal(t, int64(2*64), rs.Cost().Tokens)
	})
}

func TestRunBatchRefusesBadInput(t *testing.T) {
	noModel := batchRequests("a")
	noModel[0].Params.Model = ""
	noMessages := batchRequests("a")
	noMessages[0].Params.Messages = nil
	huge := []fanoutopenai.BatchRequest{{Key: "huge", Params: sizedParams("huge", 2000, 10)}}
	tests := []struct {
		name string
		give []fanoutopenai.BatchRequest
		opts []fanoutopenai.Option
		want string
	}{
		{"an empty key", batchRequests("a", ""), nil, `openai: RunBatch: request 1 has an empty key`},
		{"a duplicate key", batchRequests("a", "b", "a"), nil, `openai: RunBatch: duplicate key "a" (requests 0 and 2)`},
		{"a request without a model", noModel, nil, `openai: RunBatch: request "a" has no model`},
		{"a request without messages", noMessages, nil, `openai: RunBatch: request "a" has no messages`},
		{"a request too large for a file", huge, []fanoutopenai.Option{fanoutopenai.WithBatchLimits(10, 1000)},
			`openai: RunBatch: request "huge" is 2163 bytes as a batch line, over the batch file limit of 1000`},
		{"a bad batch size", batchRequests("a"), []fanoutopenai.Option{fanoutopenai.WithBatchLimits(0, 10)},
			`openai: WithBatchLimits(0, 10): want 1 to 50000 requests and 1 to 200000000 bytes`},
		{"a bad poll interval", batchRequests("a"), []fanoutopenai.Option{fanoutopenai.WithPollInterval(time.Second, time.Millisecond)},
			`openai: WithPollInterval(1s, 1ms): want 0 < first <= max`},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused before any request", func(t *testing.T) {
			api := newFakeAPI(t)
			rs, err := fanoutopenai.RunBatch(context.Background(), api.client(), tt.give, tt.opts...)
			assert.EqualError(t, err, tt.want)
			assert.Nil(t, rs)
			api.with(func() { assert.Zero(t, api.nextID, "nothing uploaded") })
		})
	}
}

func TestRunBatchCancellation(t *testing.T) {
	t.Run("cancelling the context cancels the batch on the server", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.batchPolls = 1 << 30 }) // never done
		cause := errors.New("user gave up")
		ctx, cancel := context.WithCancelCause(context.Background())
		time.AfterFunc(100*time.Millisecond, func() { cancel(cause) })
		start := time.Now()
		rs, err := fanoutopenai.RunBatch(ctx, api.client(), batchRequests(keys(5)...), fastPolls, fanoutopenai.WithBatchLimits(3, 1<<20))
		assert.Less(t, time.Since(start), 2*time.Second)
		require.Error(t, err)
		for _, r := range rs.All() {
			assert.ErrorIs(t, r.Err, fanoutopenai.ErrBatchCancelled)
			assert.ErrorIs(t, r.Err, cause, "the stop says why")
		}
		api.mu.Lock()
		defer api.mu.Unlock()
		assert.Len(t, api.cancels, 2, "both batches cancelled")
		for _, id := range api.cancels {
			assert.Equal(t, openai.BatchStatusCancelling, api.batches[id].status)
			assert.True(t, strings.HasPrefix(id, "batch-"))
		}
	})
	t.Run("a run timeout around RunBatch cancels the batch too", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.batchPolls = 1 << 30 })
		rs, err := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "batch", Do: func(ctx context.Context) (int, error) {
			rs, err := fanoutopenai.RunBatch(ctx, api.client(), batchRequests("a"), fastPolls)
			return rs.Succeeded(), err
		}}}, fanout.WithTimeout(100*time.Millisecond))
		require.ErrorIs(t, err, fanout.ErrRunTimeout)
		r, _ := rs.Get("batch")
		assert.ErrorIs(t, r.Err, fanoutopenai.ErrBatchCancelled)
		api.mu.Lock()
		defer api.mu.Unlock()
		assert.Len(t, api.cancels, 1)
	})
}
