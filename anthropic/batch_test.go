package fanoutanthropic_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// quickPolls polls every few milliseconds, for tests.
var quickPolls = fanoutanthropic.WithPollInterval(2*time.Millisecond, 10*time.Millisecond)

func batchOf(keys ...string) []fanoutanthropic.BatchRequest {
	reqs := make([]fanoutanthropic.BatchRequest, len(keys))
	for i, k := range keys {
		reqs[i] = fanoutanthropic.BatchRequest{Key: k, Params: ask(k, 50)}
	}
	return reqs
}

func TestRunBatch(t *testing.T) {
	t.Run("answers every key, in batches within the limits", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		keys := []string{"a", "b", "paper 7/abstract", "d", "e", "é", "g"}
		rs, err := fanoutanthropic.RunBatch(t.Context(), f.client(), batchOf(keys...),
			fanoutanthropic.WithBatchLimits(3, fanoutanthropic.MaxBatchBytes), quickPolls)
		require.NoError(t, err)
		assert.ElementsMatch(t, []int{3, 3, 1}, f.created, "batches are created concurrently")
		require.Equal(t, len(keys), rs.Len())
		for i, r := range rs.All() {
			assert.Equal(t, keys[i], r.Key)
			assert.Equal(t, i, r.Index)
			require.NoError(t, r.Err)
			assert.Equal(t, "answer to "+keys[i], r.Value.Content[0].Text, "each answer is mapped back to its key")
			assert.Equal(t, 1, r.Attempts)
		}
	})

	t.Run("splits by bytes", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		// Each request is some 350 bytes of JSON: two fit in 1 000.
		_, err := fanoutanthropic.RunBatch(t.Context(), f.client(), batchOf("a", "b", "c", "d", "e", "f", "g"),
			fanoutanthropic.WithBatchLimits(100, 1_000), quickPolls)
		require.NoError(t, err)
		assert.ElementsMatch(t, []int{2, 2, 2, 1}, f.created)
	})

	t.Run("each outcome", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		reqs := batchOf("ok", "errored", "canceled", "expired")
		for i, tag := range []string{"", " #errored", " #canceled", " #expired"} {
			reqs[i].Params.Messages[0].Content[0].OfText.Text = "[" + reqs[i].Key + "]" + tag
		}
		rs, err := fanoutanthropic.RunBatch(t.Context(), f.client(), reqs, quickPolls,
			fanoutanthropic.WithPrices(fanoutanthropic.Prices{Input: 3, Output: 15}))
		require.Error(t, err)
		assert.Equal(t, 1, rs.Succeeded())

		ok, _ := rs.Get("ok")
		require.NoError(t, ok.Err)
		u := ok.Value.Usage
		assert.Equal(t, u.InputTokens+u.OutputTokens, ok.Cost.Tokens)
		assert.InDelta(t, (float64(u.InputTokens)*3+float64(u.OutputTokens)*15)/1e6*100/2, ok.Cost.Cents, 1e-12, "half price")
		assert.Equal(t, ok.Cost, rs.Cost())

		errored, _ := rs.Get("errored")
		var apiErr *fanoutanthropic.APIError
		require.ErrorAs(t, errored.Err, &apiErr)
		assert.Equal(t, "invalid_request_error", apiErr.Type)
		assert.EqualError(t, errored.Err, "anthropic: invalid_request_error: max_tokens: Field required")
		assert.False(t, fanout.Retryable(errored.Err))

		canceled, _ := rs.Get("canceled")
		assert.ErrorIs(t, canceled.Err, fanoutanthropic.ErrBatchCanceled)
		assert.EqualError(t, canceled.Err, "fanoutanthropic: batch request canceled (batch msgbatch_01)")

		expired, _ := rs.Get("expired")
		assert.ErrorIs(t, expired.Err, fanoutanthropic.ErrBatchExpired)
		for _, r := range rs.All() {
			if r.Err != nil {
				assert.Equal(t, "error", fanout.ErrorKind(r.Err), r.Key)
			}
		}
		assert.ErrorContains(t, err, `fanout: task "expired": fanoutanthropic: batch request expired (batch msgbatch_01)`)
	})

	t.Run("no requests, no batch", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		rs, err := fanoutanthropic.RunBatch(t.Context(), f.client(), nil)
		require.NoError(t, err)
		assert.Zero(t, rs.Len())
		assert.Empty(t, f.created)
	})

	t.Run("polls until the batch ends", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		f.batchPolls = 4
		rs, err := fanoutanthropic.RunBatch(t.Context(), f.client(), batchOf("a"), quickPolls)
		require.NoError(t, err)
		assert.Equal(t, 1, rs.Succeeded())
		assert.Equal(t, 4, f.batches["msgbatch_01"].polls)
	})

	t.Run("ending the context cancels the batches on the server", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		f.batchPolls = 0 // never ends by itself
		stop := errors.New("user pressed stop")
		ctx, cancel := context.WithCancelCause(t.Context())
		go func() {
			for f.pollsOf("msgbatch_02") == 0 {
				time.Sleep(time.Millisecond)
			}
			cancel(stop)
		}()
		rs, err := fanoutanthropic.RunBatch(ctx, f.client(), batchOf("a", "b", "c"),
			fanoutanthropic.WithBatchLimits(2, fanoutanthropic.MaxBatchBytes), quickPolls)
		require.Error(t, err)
		assert.ElementsMatch(t, []string{"msgbatch_01", "msgbatch_02"}, f.canceledBatches())
		for _, r := range rs.All() {
			assert.ErrorIs(t, r.Err, fanoutanthropic.ErrBatchCanceled, r.Key)
			assert.ErrorIs(t, r.Err, stop, r.Key)
		}
		a, _ := rs.Get("a")
		assert.Regexp(t, `^fanoutanthropic: batch request canceled \(batch msgbatch_0[12]\): user pressed stop$`, a.Err.Error())
	})

	t.Run("a creation refused with a 429 is tried again", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		f.fail = func(key string, hit int) (int, string, http.Header) {
			if key == "batch:create" && hit == 1 {
				return 429, "rate_limit_error", headers("Retry-After-Ms", "5")
			}
			return 0, "", nil
		}
		rs, err := fanoutanthropic.RunBatch(t.Context(), f.client(), batchOf("a", "b"), quickPolls)
		require.NoError(t, err)
		assert.Equal(t, 2, rs.Succeeded())
		assert.Equal(t, 2, f.hitsOf("batch:create"))
	})

	t.Run("a creation refused for good fails its batch's keys only", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		f.fail = func(key string, hit int) (int, string, http.Header) {
			if key == "batch:create" && hit == 1 {
				return 400, "invalid_request_error", nil
			}
			return 0, "", nil
		}
		rs, err := fanoutanthropic.RunBatch(t.Context(), f.client(), batchOf("a", "b", "c"),
			fanoutanthropic.WithBatchLimits(1, fanoutanthropic.MaxBatchBytes), quickPolls)
		require.Error(t, err)
		assert.Equal(t, 2, rs.Succeeded(), "the other batches ran")
		assert.Equal(t, 3, f.hitsOf("batch:create"), "and the refused one was not tried again")
	})

	t.Run("bad input is refused before any request", func(t *testing.T) {
		big := batchOf("big")
		big[0].Params = ask("big", 1000)
		for _, tt := range []struct {
			name string
			give []fanoutanthropic.BatchRequest
			opts []fanoutanthropic.Option
			want string
		}{
			{"an empty key", batchOf("a", ""), nil, "fanoutanthropic: request 1 has an empty key"},
			{"a duplicate key", batchOf("a", "b", "a"), nil, `fanoutanthropic: duplicate key "a" (requests 0 and 2)`},
			{"a request larger than a batch", big, []fanoutanthropic.Option{fanoutanthropic.WithBatchLimits(10, 1000)},
				`fanoutanthropic: request "big" is `},
			{"a bad option", batchOf("a"), []fanoutanthropic.Option{fanoutanthropic.WithBatchLimits(0, 1)},
				"fanoutanthropic: WithBatchLimits(0, 1)"},
			{"a bad poll interval", batchOf("a"), []fanoutanthropic.Option{fanoutanthropic.WithPollInterval(time.Second, 0)},
				"fanoutanthropic: WithPollInterval(1s, 0s)"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				f := newFakeAPI()
				defer f.Close()
				rs, err := fanoutanthropic.RunBatch(t.Context(), f.client(), tt.give, tt.opts...)
				assert.ErrorContains(t, err, tt.want)
				assert.Nil(t, rs)
				assert.Empty(t, f.created)
				assert.Zero(t, f.hitsOf("batch:create"))
			})
		}
	})

	t.Run("custom ids are unique and valid", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		keys := []string{"a b-1", "a_b-1", "a b", "a_b-2"} // "a b" at 2 would be "a_b-2", which is taken
		for i := range 70 {
			keys = append(keys, "long key number "+strconv.Itoa(i)+" with spaces and more spaces to pass sixty-four bytes")
		}
		rs, err := fanoutanthropic.RunBatch(t.Context(), f.client(), batchOf(keys...), quickPolls)
		require.NoError(t, err)
		assert.Equal(t, len(keys), rs.Succeeded())
		ids := map[string]bool{}
		for _, line := range f.batches["msgbatch_01"].requests {
			assert.Regexp(t, `^[a-zA-Z0-9_-]{1,64}$`, line.CustomID)
			assert.False(t, ids[line.CustomID], "duplicate id %s", line.CustomID)
			ids[line.CustomID] = true
		}
		assert.True(t, ids["a_b-1"] && ids["a_b-2"] && ids["a_b-2-2"], "valid keys are kept as ids: %v", ids)
	})

	t.Run("reports the batch's cost with Spend inside a task", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		outer, err := fanout.Run(t.Context(), []fanout.Task[int]{{Key: "batch", Do: func(ctx context.Context) (int, error) {
			rs, err := fanoutanthropic.RunBatch(ctx, f.client(), batchOf("a", "b"), quickPolls)
			if err != nil {
				return 0, err
			}
			return rs.Succeeded(), nil
		}}})
		require.NoError(t, err)
		r, _ := outer.Get("batch")
		assert.Equal(t, 2, r.Value)
		assert.Positive(t, r.Cost.Tokens)
	})
}

func (f *fakeAPI) pollsOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.batches[id]; ok {
		return b.polls
	}
	return 0
}

func (f *fakeAPI) canceledBatches() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.canceled...)
}
