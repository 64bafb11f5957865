package claude_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gofanout/fanout"
	"github.com/gofanout/fanout/examples/internal/claude"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newClient returns a client of the real SDK, its own retries off, that
// talks to a local server answering with handler.
func newClient(t *testing.T, handler http.HandlerFunc) *anthropic.Client {
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	client := anthropic.NewClient(option.WithBaseURL(srv.URL), option.WithAPIKey("test-key"),
		option.WithMaxRetries(0), option.WithHTTPClient(srv.Client()))
	return &client
}

// ask sends one message through client.
func ask(ctx context.Context, client *anthropic.Client) (string, error) {
	return claude.Text(ctx, client, anthropic.MessageNewParams{
		Model:     "claude-test",
		MaxTokens: 10,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
}

// refuse answers every request with status, header and body.
func refuse(status int, header map[string]string, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func apiError(typ, message string) string {
	return `{"type":"error","error":{"type":"` + typ + `","message":"` + message + `"}}`
}

func TestErrorsReadInOneLine(t *testing.T) {
	tests := []struct {
		name          string
		give          http.HandlerFunc
		want          string
		wantDelay     time.Duration
		wantRetryable bool
	}{
		{
			name:          "an overload says its status once",
			give:          refuse(529, nil, apiError("overloaded_error", "Overloaded")),
			want:          "claude: 529 overloaded_error: Overloaded",
			wantRetryable: true,
		},
		{
			name: "a rate limit says how long to wait",
			give: refuse(http.StatusTooManyRequests, map[string]string{"Retry-After-Ms": "50"},
				apiError("rate_limit_error", "Number of requests has exceeded your rate limit")),
			want:          "claude: 429 rate_limit_error: Number of requests has exceeded your rate limit (retry after 50ms)",
			wantDelay:     50 * time.Millisecond,
			wantRetryable: true,
		},
		{
			name: "an overload may say how long to wait too",
			give: refuse(529, map[string]string{"Retry-After": "7"}, apiError("overloaded_error", "Overloaded")),
			want: "claude: 529 overloaded_error: Overloaded (retry after 7s)", wantDelay: 7 * time.Second,
			wantRetryable: true,
		},
		{
			name:          "a bad request is not retried",
			give:          refuse(http.StatusBadRequest, nil, apiError("invalid_request_error", "max_tokens: too small")),
			want:          "claude: 400 invalid_request_error: max_tokens: too small",
			wantRetryable: false,
		},
		{
			name:          "a body that is not the API's gives the status text",
			give:          refuse(http.StatusBadGateway, nil, "<html>bad gateway</html>"),
			want:          "claude: 502 Bad Gateway",
			wantRetryable: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ask(context.Background(), newClient(t, tt.give))
			require.EqualError(t, err, tt.want)
			var apiErr *claude.Error
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, tt.wantDelay, apiErr.RetryAfter())
			assert.Equal(t, tt.wantRetryable, fanout.Retryable(err))
			var sdkErr *anthropic.Error
			assert.ErrorAs(t, err, &sdkErr, "the SDK's error is reachable, for its request ID")
			var httpErr *fanout.HTTPError
			require.ErrorAs(t, err, &httpErr, "fanout's view of the response is reachable")
			assert.Equal(t, tt.wantDelay, httpErr.Delay)
		})
	}
}

func TestARateLimitIsRetriedAfterTheDelayItAsks(t *testing.T) {
	var calls int // the handler runs for one attempt at a time
	var refused time.Time
	client := newClient(t, func(w http.ResponseWriter, r *http.Request) {
		if calls++; calls == 1 {
			refused = time.Now()
			refuse(http.StatusTooManyRequests, map[string]string{"Retry-After-Ms": "50"}, apiError("rate_limit_error", "slow down"))(w, r)
			return
		}
		assert.GreaterOrEqual(t, time.Since(refused), 50*time.Millisecond, "the retry waits what the server asked")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-test",`+
			`"content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}`)
	})
	results, err := fanout.Run(context.Background(), []fanout.Task[string]{{Key: "ask", Do: func(ctx context.Context) (string, error) {
		return ask(ctx, client)
	}}}, fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2}))
	require.NoError(t, err)
	r, _ := results.Get("ask")
	assert.Equal(t, "hello", r.Value)
	assert.Equal(t, 2, r.Attempts)
	assert.Equal(t, fanout.Cost{Tokens: 5}, r.Cost, "the tokens used are reported")
}
