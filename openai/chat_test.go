package fanoutopenai_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutopenai "github.com/gofanout/fanout/openai"
)

// ledger is a fanout.Limiter and fanout.Settler that records what it was
// charged, net of settlements.
type ledger struct {
	mu      sync.Mutex
	charged int
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
	l.charged += used - charged
}

func (l *ledger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.charged
}

func chatTask(client openai.Client, key string, opts ...fanoutopenai.Option) fanout.Task[*openai.ChatCompletion] {
	return fanout.Task[*openai.ChatCompletion]{Key: key, Tokens: 104, Do: fanoutopenai.Chat(client, params(key), opts...)}
}

func TestChat(t *testing.T) {
	t.Run("a served call returns the completion and reports its usage and cost", func(t *testing.T) {
		api := newFakeAPI(t)
		prices := fanoutopenai.Prices{Input: 2, Output: 8} // dollars per million tokens
		rs, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{
			chatTask(api.client(), "a", fanoutopenai.WithPrices(prices)),
		})
		require.NoError(t, err)
		r, _ := rs.Get("a")
		assert.Equal(t, "answer to a", r.Value.Choices[0].Message.Content)
		assert.Equal(t, int64(4+60), r.Cost.Tokens, "prompt and completion tokens")
		assert.InDelta(t, (4*2.0+60*8.0)/1e6*100, r.Cost.Cents, 1e-12)
	})
	t.Run("cached prompt tokens are priced as cached", func(t *testing.T) {
		api := newFakeAPI(t)
		api.with(func() { api.cached = 4 })
		prices := fanoutopenai.Prices{Input: 2, CachedInput: 0.5, Output: 8}
		rs, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{
			chatTask(api.client(), "a", fanoutopenai.WithPrices(prices)),
		})
		require.NoError(t, err)
		assert.InDelta(t, (4*0.5+60*8.0)/1e6*100, rs.Cost().Cents, 1e-12)
	})
	t.Run("the limiters are settled to the tokens used, and a rejected call to none", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("bad", badRequest())
		api.script("quota", noQuota())
		l := &ledger{}
		client := api.client()
		_, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{
			chatTask(client, "a"), chatTask(client, "bad"), chatTask(client, "quota"),
		}, fanout.WithRateLimit(l), fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3}))
		require.Error(t, err)
		assert.Equal(t, 64, l.total(), "a used 64 of its 104; the rejected calls used nothing")
		s := api.stats()
		assert.Equal(t, 1, s.hits["bad"], "a 400 is not retried")
		assert.Equal(t, 1, s.hits["quota"], "an exhausted quota is not retried")
	})
	t.Run("a served call that reports no usage keeps its estimate", func(t *testing.T) {
		api := newRawAPI(t, answer(200, "application/json",
			`{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"ok"}}]}`))
		l := &ledger{}
		_, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{chatTask(api.client(), "a")},
			fanout.WithRateLimit(l))
		require.NoError(t, err)
		assert.Equal(t, 104, l.total(), "nothing to settle by: the estimate stands")
	})
	t.Run("a call cut before the answer keeps its estimate", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("slow", slow(10*time.Second))
		l := &ledger{}
		_, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{chatTask(api.client(), "slow")},
			fanout.WithRateLimit(l), fanout.WithTaskTimeout(50*time.Millisecond))
		require.ErrorIs(t, err, fanout.ErrTaskTimeout)
		assert.Equal(t, 104, l.total())
	})
}

func TestChatLeavesRetriesToFanout(t *testing.T) {
	t.Run("without WithRetry a 500 is one request, not three", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("a", serverError(), serverError(), serverError())
		rs, _ := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{chatTask(api.client(), "a")})
		r, _ := rs.Get("a")
		require.Error(t, r.Err)
		assert.Equal(t, 1, api.stats().hits["a"])
		assert.EqualError(t, r.Err, "openai: 500 server_error: The server had an error while processing your request.")
	})
	t.Run("MaxAttempts is the number of requests the server sees", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("a", serverError(), serverError(), serverError(), serverError())
		rs, _ := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{chatTask(api.client(), "a")},
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond}))
		r, _ := rs.Get("a")
		assert.Equal(t, 3, r.Attempts)
		assert.Equal(t, 3, api.stats().hits["a"])
	})
	t.Run("WithRequestOptions can turn the SDK's retries back on", func(t *testing.T) {
		api := newFakeAPI(t)
		api.script("a", serverError(), serverError())
		rs, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{
			chatTask(api.client(), "a", fanoutopenai.WithRequestOptions(option.WithMaxRetries(2), option.WithMaxRetryDelay(time.Millisecond))),
		})
		require.NoError(t, err)
		r, _ := rs.Get("a")
		assert.Equal(t, 1, r.Attempts)
		assert.Equal(t, 3, api.stats().hits["a"])
	})
	t.Run("x-should-retry obeyed over the status", func(t *testing.T) {
		api := newFakeAPI(t)
		noRetry := serverError()
		noRetry.header = map[string]string{"x-should-retry": "false"}
		retry := badRequest()
		retry.header = map[string]string{"x-should-retry": "true"}
		api.script("stop", noRetry)
		api.script("go", retry)
		client := api.client()
		rs, _ := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{chatTask(client, "stop"), chatTask(client, "go")},
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond}))
		assert.Equal(t, 1, api.stats().hits["stop"])
		assert.Equal(t, 2, api.stats().hits["go"])
		_, err := rs.Value("go")
		assert.NoError(t, err)
	})
	t.Run("a 429 waits what the server asked, and so does every task of the run", func(t *testing.T) {
		api := newFakeAPI(t)
		limited := reply{status: 429, typ: "requests", code: "rate_limit_exceeded", message: "Rate limit reached.",
			header: map[string]string{"retry-after-ms": "300"}}
		api.script("a", limited)
		l := fanoutopenai.NewLimits()
		var waits []time.Duration
		var mu sync.Mutex
		obs := &fanout.Observer{Retry: func(_ context.Context, r fanout.RetryInfo) {
			mu.Lock()
			defer mu.Unlock()
			if r.ServerDirected {
				waits = append(waits, r.Wait)
			}
		}}
		start := time.Now()
		_, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{chatTask(api.client(), "a")},
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2}), fanout.WithRateLimit(l), fanout.WithObserver(obs))
		require.NoError(t, err)
		require.Len(t, waits, 1)
		assert.GreaterOrEqual(t, waits[0], 300*time.Millisecond)
		assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
		start = time.Now()
		require.NoError(t, l.WaitN(context.Background(), 1), "the pause is over for everyone")
		assert.Less(t, time.Since(start), 50*time.Millisecond)
	})
}

func TestChatRejectsBadOptions(t *testing.T) {
	assert.PanicsWithError(t, "openai: WithLimits(nil): limits must not be nil", func() {
		fanoutopenai.Chat(openai.Client{}, params("a"), fanoutopenai.WithLimits(nil))
	})
	assert.Panics(t, func() {
		fanoutopenai.Chat(openai.Client{}, params("a"), fanoutopenai.WithPrices(fanoutopenai.Prices{Input: -1}))
	})
}

// TestAZeroClientFailsEveryCallAtOnce: a client not made by
// openai.NewClient has no base URL; its calls fail before any request,
// saying so, and fanout does not retry them.
func TestAZeroClientFailsEveryCallAtOnce(t *testing.T) {
	tasks := []fanout.Task[any]{
		{Key: "chat", Do: func(ctx context.Context) (any, error) { return fanoutopenai.Chat(openai.Client{}, params("a"))(ctx) }},
		{Key: "response", Do: func(ctx context.Context) (any, error) {
			return fanoutopenai.Response(openai.Client{}, responses.ResponseNewParams{})(ctx)
		}},
	}
	rs, err := fanout.Run(context.Background(), tasks, fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3}))
	require.Error(t, err)
	for _, key := range []string{"chat", "response"} {
		r, _ := rs.Get(key)
		require.ErrorContains(t, r.Err, "make it with openai.NewClient", key)
		assert.Equal(t, 1, r.Attempts, "%s: not retried", key)
	}
}

func TestResponse(t *testing.T) {
	api := newFakeAPI(t)
	api.script("b", serverError())
	l := &ledger{}
	do := func(key string) func(context.Context) (*responses.Response, error) {
		return fanoutopenai.Response(api.client(), responses.ResponseNewParams{
			Model: "gpt-test",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(key + " what is the capital of France?")},
		}, fanoutopenai.WithPrices(fanoutopenai.Prices{Input: 1, Output: 1}))
	}
	var calls atomic.Int32
	rs, err := fanout.Run(context.Background(), []fanout.Task[*responses.Response]{
		{Key: "a", Tokens: 40, Do: do("a")},
		{Key: "b", Tokens: 40, Do: func(ctx context.Context) (*responses.Response, error) {
			calls.Add(1)
			return do("b")(ctx)
		}},
	}, fanout.WithRateLimit(l), fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Millisecond}))
	require.NoError(t, err)
	a, _ := rs.Get("a")
	assert.Equal(t, "answer to a", a.Value.OutputText())
	assert.Equal(t, int64(8+9), a.Cost.Tokens, "8 prompt tokens and 60% of the default 16")
	assert.Equal(t, int32(2), calls.Load())
	assert.Equal(t, 2*17, l.total(), "each served call settled at its usage, the 500 at none")
	var apiErr *openai.Error
	assert.False(t, errors.As(err, &apiErr))
}

// TestShouldRetryOverrulesTheStatusBehindIt runs fanout.Run with WithRetry
// and its default RetryIf, fanout.Retryable, over errors whose chain holds
// the SDK's *openai.Error with a status that says the opposite of the
// server's x-should-retry: the verdict is Classify's, read through
// APIError's Retryable method, not the status's.
func TestShouldRetryOverrulesTheStatusBehindIt(t *testing.T) {
	withHeader := func(rep reply, shouldRetry string) reply {
		rep.header = map[string]string{"x-should-retry": shouldRetry}
		return rep
	}
	tests := []struct {
		name         string
		give         []reply // the answers before the fake serves the key
		wantHits     int
		wantErr      bool
		wantStatuses []int // of the *openai.Error behind each failed attempt
	}{
		{
			name:         "x-should-retry: true on a 400 is retried until served",
			give:         []reply{withHeader(badRequest(), "true"), withHeader(badRequest(), "true")},
			wantHits:     3,
			wantStatuses: []int{400, 400},
		},
		{
			name:         "x-should-retry: false on a 500 is not retried",
			give:         []reply{withHeader(serverError(), "false"), withHeader(serverError(), "false")},
			wantHits:     1,
			wantErr:      true,
			wantStatuses: []int{500},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t)
			api.script("a", tt.give...)
			var mu sync.Mutex
			var statuses []int
			obs := &fanout.Observer{AttemptDone: func(_ context.Context, a fanout.AttemptInfo) {
				var sdk *openai.Error
				if errors.As(a.Err, &sdk) {
					mu.Lock()
					defer mu.Unlock()
					statuses = append(statuses, sdk.StatusCode)
				}
			}}
			rs, err := fanout.Run(context.Background(), []fanout.Task[*openai.ChatCompletion]{chatTask(api.client(), "a")},
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond}),
				fanout.WithObserver(obs))
			assert.Equal(t, tt.wantErr, err != nil, "Run's error: %v", err)
			r, _ := rs.Get("a")
			assert.Equal(t, tt.wantHits, r.Attempts)
			assert.Equal(t, tt.wantHits, api.stats().hits["a"], "requests the server saw")
			mu.Lock()
			defer mu.Unlock()
			assert.Equal(t, tt.wantStatuses, statuses, "Unwrap exposes the SDK's error and its status")
		})
	}
}
