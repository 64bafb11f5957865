package fanoutanthropic_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// always answers every request of every key with status and kind, asking
// to wait a millisecond so that retries are quick.
func always(status int, kind string, kv ...string) func(string, int) (int, string, http.Header) {
	return func(string, int) (int, string, http.Header) {
		return status, kind, headers(append([]string{"Retry-After-Ms", "1"}, kv...)...)
	}
}

// ledger is a token limiter that charges every wait and records every
// settlement, so that what it holds in the end is what the calls used.
type ledger struct {
	mu      sync.Mutex
	charged int
	settled int // the corrections, used - charged
	settles int
}

func (l *ledger) WaitN(_ context.Context, n int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.charged += n
	return nil
}

func (l *ledger) Settle(charged, used int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.settled += used - charged
	l.settles++
}

func (l *ledger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.charged + l.settled
}

func task(client anthropic.Client, key string, opts ...fanoutanthropic.Option) fanout.Task[*anthropic.Message] {
	params := ask(key, 100)
	return fanout.Task[*anthropic.Message]{Key: key, Tokens: fanoutanthropic.Estimate(params),
		Do: fanoutanthropic.Message(client, params, opts...)}
}

func TestMessage(t *testing.T) {
	t.Run("one call is one request: the SDK's retries are off", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		f.fail = always(529, "overloaded_error")
		client := f.client()

		_, err := fanoutanthropic.Message(client, ask("glue", 10))(t.Context())
		assert.EqualError(t, err, "anthropic: 529 overloaded_error: Overloaded")
		assert.Equal(t, 1, f.hitsOf("glue"))

		_, err = client.Messages.New(t.Context(), ask("sdk", 10))
		assert.Error(t, err)
		assert.Equal(t, 3, f.hitsOf("sdk"), "the SDK alone tries three times")
	})

	t.Run("under WithRetry the server sees MaxAttempts requests", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		f.fail = always(529, "overloaded_error")
		rs, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{task(f.client(), "k")},
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond}))
		assert.EqualError(t, err, `fanout: task "k": anthropic: 529 overloaded_error: Overloaded`)
		r, _ := rs.Get("k")
		assert.Equal(t, 3, r.Attempts)
		assert.Equal(t, 3, f.hitsOf("k"))
	})

	t.Run("a permanent error is tried once", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			status int
			kind   string
			kv     []string
		}{
			{"400", 400, "invalid_request_error", nil},
			{"401", 401, "authentication_error", nil},
			{"500 with x-should-retry: false", 500, "api_error", []string{"X-Should-Retry", "false"}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				f := newFakeAPI()
				defer f.Close()
				f.fail = always(tt.status, tt.kind, tt.kv...)
				rs, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{task(f.client(), "k")},
					fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 4, InitialInterval: time.Millisecond}))
				require.Error(t, err)
				r, _ := rs.Get("k")
				assert.Equal(t, 1, r.Attempts)
				assert.Equal(t, 1, f.hitsOf("k"))
				var sdk *anthropic.Error
				assert.ErrorAs(t, err, &sdk)
			})
		}
	})

	t.Run("a 429 waits what the server asked", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		f.fail = func(key string, hit int) (int, string, http.Header) {
			if hit == 1 {
				return 429, "rate_limit_error", headers("Retry-After-Ms", "300", "Retry-After", "1")
			}
			return 0, "", nil
		}
		var retries []fanout.RetryInfo
		obs := &fanout.Observer{Retry: func(_ context.Context, r fanout.RetryInfo) { retries = append(retries, r) }}
		start := time.Now()
		_, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{task(f.client(), "k")},
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2}), fanout.WithObserver(obs))
		require.NoError(t, err)
		require.Len(t, retries, 1)
		assert.True(t, retries[0].ServerDirected)
		assert.GreaterOrEqual(t, retries[0].Wait, 300*time.Millisecond)
		assert.LessOrEqual(t, retries[0].Wait, 360*time.Millisecond, "at most a fifth more")
		assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	})

	t.Run("reports the usage with Spend and settles it", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		f.fail = func(key string, hit int) (int, string, http.Header) {
			if hit == 1 && key < "k5" { // half the keys are refused once: settled 0
				return 429, "rate_limit_error", headers("Retry-After-Ms", "1")
			}
			return 0, "", nil
		}
		tokens := &ledger{}
		client := f.client()
		var tasks []fanout.Task[*anthropic.Message]
		for _, k := range []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"} {
			tasks = append(tasks, task(client, k))
		}
		rs, err := fanout.Run(t.Context(), tasks, fanout.WithRateLimit(tokens),
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2}))
		require.NoError(t, err)

		used := 0
		for _, r := range rs.All() {
			u := r.Value.Usage
			used += int(u.InputTokens + u.OutputTokens)
			assert.Equal(t, u.InputTokens+u.OutputTokens, r.Cost.Tokens, r.Key)
			assert.Zero(t, r.Cost.Cents, "no prices, no cents")
		}
		assert.Equal(t, int64(used), rs.Cost().Tokens)
		assert.Equal(t, used, tokens.total(), "the limiter holds what the calls used, not the estimates")
		assert.Equal(t, 15, tokens.settles, "each attempt settles: 10 answers and 5 refusals")
		assert.NotEqual(t, tokens.charged, tokens.total(), "the estimates differ from the usage")
	})

	t.Run("prices the usage in cents", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		rs, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{
			task(f.client(), "k", fanoutanthropic.WithPrices(fanoutanthropic.Prices{Input: 3, Output: 15})),
		})
		require.NoError(t, err)
		r, _ := rs.Get("k")
		u := r.Value.Usage
		assert.InDelta(t, (float64(u.InputTokens)*3+float64(u.OutputTokens)*15)/1e6*100, r.Cost.Cents, 1e-12)
		assert.Positive(t, r.Cost.Cents)
	})

	t.Run("WithTokenCount counts otherwise", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		outputOnly := func(u anthropic.Usage) int { return int(u.OutputTokens) }
		rs, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{
			task(f.client(), "k", fanoutanthropic.WithTokenCount(outputOnly)),
		})
		require.NoError(t, err)
		r, _ := rs.Get("k")
		assert.Equal(t, int64(20), r.Cost.Tokens)
	})

	t.Run("WithRequestOptions can turn the SDK's retries back on", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		f.fail = always(529, "overloaded_error")
		_, err := fanoutanthropic.Message(f.client(), ask("k", 10),
			fanoutanthropic.WithRequestOptions(option.WithMaxRetries(2)))(t.Context())
		assert.Error(t, err)
		assert.Equal(t, 3, f.hitsOf("k"))
	})

	t.Run("a bad option fails every call, never retried", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		rs, err := fanout.Run(t.Context(), []fanout.Task[*anthropic.Message]{
			task(f.client(), "k", fanoutanthropic.WithPrices(fanoutanthropic.Prices{Input: -1})),
		}, fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3}))
		assert.ErrorContains(t, err, "fanoutanthropic: WithPrices")
		r, _ := rs.Get("k")
		assert.Equal(t, 1, r.Attempts)
		assert.Zero(t, f.hitsOf("k"))
	})
}

func TestEstimate(t *testing.T) {
	params := ask("k", 100) // 400 bytes of text, 20 tokens of answer
	assert.Equal(t, 100+4+20, fanoutanthropic.Estimate(params))

	params.System = []anthropic.TextBlockParam{{Text: "Answer in one word."}}
	params.Messages = append(params.Messages, anthropic.NewUserMessage(anthropic.NewImageBlockBase64("image/png", "iVBORw0KGgo=")))
	assert.Equal(t, 100+4+20+5+4+1600, fanoutanthropic.Estimate(params))
}

// TestMessageWithoutUsageKeepsTheEstimate: a served message whose
// response reports no usage (a proxy that strips it, say) gives the
// limiter nothing to correct its charge by: the estimate stands.
func TestMessageWithoutUsageKeepsTheEstimate(t *testing.T) {
	api := newRawAPI(t, answer(200, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5",`+
		`"content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn"}`, "Content-Type", "application/json"))
	l := &ledger{}
	tk := task(api.client(), "a")
	_, err := fanout.Run(context.Background(), []fanout.Task[*anthropic.Message]{tk}, fanout.WithRateLimit(l))
	require.NoError(t, err)
	assert.Equal(t, tk.Tokens, l.total())
	assert.Zero(t, l.settles)
}
