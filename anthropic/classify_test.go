package fanoutanthropic_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// sdkError builds the *anthropic.Error the SDK returns for a response of
// status with headers h and JSON body.
func sdkError(t testing.TB, status int, h http.Header, body string) *anthropic.Error {
	t.Helper()
	if h == nil {
		h = http.Header{}
	}
	req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1/v1/messages", nil)
	require.NoError(t, err)
	e := &anthropic.Error{StatusCode: status, Request: req, Response: &http.Response{StatusCode: status, Header: h}}
	require.NoError(t, e.UnmarshalJSON([]byte(body)))
	return e
}

// sdkErrorFor is a 429 to req, with headers h.
func sdkErrorFor(b *testing.B, req *http.Request, h http.Header) *anthropic.Error {
	e := &anthropic.Error{StatusCode: 429, Request: req, Response: &http.Response{StatusCode: 429, Header: h}}
	if err := e.UnmarshalJSON([]byte(apiBody("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"))); err != nil {
		b.Fatal(err)
	}
	return e
}

func apiBody(kind, message string) string {
	return fmt.Sprintf(`{"type":"error","error":{"type":%q,"message":%q}}`, kind, message)
}

func headers(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestClassify(t *testing.T) {
	// Each case classifies in a synctest bubble, whose clock starts at
	// the epoch below and stands still: dates in headers give exact waits.
	now := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	{
		rfc3339 := func(d time.Duration) string { return now.Add(d).UTC().Format(time.RFC3339Nano) }
		tests := []struct {
			name      string
			give      *anthropic.Error
			wantRetry bool
			wantDelay time.Duration
			wantMsg   string
		}{
			{"400 is permanent", sdkError(t, 400, nil, apiBody("invalid_request_error", "max_tokens: Field required")),
				false, 0, "anthropic: 400 invalid_request_error: max_tokens: Field required"},
			{"401 is permanent", sdkError(t, 401, nil, apiBody("authentication_error", "invalid x-api-key")),
				false, 0, "anthropic: 401 authentication_error: invalid x-api-key"},
			{"403 is permanent", sdkError(t, 403, nil, apiBody("permission_error", "no access")), false, 0,
				"anthropic: 403 permission_error: no access"},
			{"404 is permanent", sdkError(t, 404, nil, apiBody("not_found_error", "model: x")), false, 0,
				"anthropic: 404 not_found_error: model: x"},
			{"413 is permanent", sdkError(t, 413, nil, apiBody("request_too_large", "Request exceeds the maximum size")), false, 0,
				"anthropic: 413 request_too_large: Request exceeds the maximum size"},
			{"422 is permanent", sdkError(t, 422, nil, `{}`), false, 0, "anthropic: 422 Unprocessable Entity"},
			{"408 is retried", sdkError(t, 408, nil, apiBody("timeout_error", "Request timed out")), true, 0,
				"anthropic: 408 timeout_error: Request timed out"},
			{"409 is retried", sdkError(t, 409, nil, `{}`), true, 0, "anthropic: 409 Conflict"},
			{"429 waits retry-after-ms", sdkError(t, 429, headers("Retry-After-Ms", "1500", "Retry-After", "2"),
				apiBody("rate_limit_error", "rate limited")), true, 1500 * time.Millisecond, "anthropic: 429 rate_limit_error: rate limited"},
			{"429 waits Retry-After seconds", sdkError(t, 429, headers("Retry-After", "2"), apiBody("rate_limit_error", "x")),
				true, 2 * time.Second, "anthropic: 429 rate_limit_error: x"},
			{"429 waits Retry-After as an HTTP date", sdkError(t, 429,
				headers("Retry-After", now.Add(10*time.Second).UTC().Format(http.TimeFormat)), apiBody("rate_limit_error", "x")),
				true, now.Add(10 * time.Second).Truncate(time.Second).Sub(now), "anthropic: 429 rate_limit_error: x"},
			{"429 without Retry-After waits for the spent budget's reset", sdkError(t, 429, headers(
				"Anthropic-Ratelimit-Tokens-Remaining", "0", "Anthropic-Ratelimit-Tokens-Reset", rfc3339(3*time.Second),
				"Anthropic-Ratelimit-Requests-Remaining", "40", "Anthropic-Ratelimit-Requests-Reset", rfc3339(time.Second),
			), apiBody("rate_limit_error", "x")), true, 3 * time.Second, "anthropic: 429 rate_limit_error: x"},
			{"429 with no budget spent waits for the soonest reset", sdkError(t, 429, headers(
				"Anthropic-Ratelimit-Input-Tokens-Remaining", "100", "Anthropic-Ratelimit-Input-Tokens-Reset", rfc3339(4*time.Second),
				"Anthropic-Ratelimit-Output-Tokens-Remaining", "10", "Anthropic-Ratelimit-Output-Tokens-Reset", rfc3339(2*time.Second),
			), apiBody("rate_limit_error", "x")), true, 2 * time.Second, "anthropic: 429 rate_limit_error: x"},
			{"500 is retried", sdkError(t, 500, nil, apiBody("api_error", "Internal server error")), true, 0,
				"anthropic: 500 api_error: Internal server error"},
			{"502 with an HTML body reads as its status", sdkError(t, 502, nil, "<html>bad gateway</html>"), true, 0,
				"anthropic: 502 Bad Gateway"},
			{"529 is retried", sdkError(t, 529, nil, apiBody("overloaded_error", "Overloaded")), true, 0,
				"anthropic: 529 overloaded_error: Overloaded"},
			{"x-should-retry: false beats a 503, and drops its wait", sdkError(t, 503, headers("X-Should-Retry", "false", "Retry-After", "5"),
				apiBody("api_error", "x")), false, 0, "anthropic: 503 api_error: x"},
			{"x-should-retry: true beats a 400", sdkError(t, 400, headers("X-Should-Retry", "true"),
				apiBody("invalid_request_error", "x")), true, 0, "anthropic: 400 invalid_request_error: x"},
			{"a long message is cut", sdkError(t, 400, nil, apiBody("invalid_request_error", strings.Repeat("ab\n", 200))),
				false, 0, "anthropic: 400 invalid_request_error: " + strings.TrimSpace(strings.Repeat("ab ", 100)) + "…"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var err error
				synctest.Test(t, func(t *testing.T) {
					require.Equal(t, now, time.Now().UTC())
					err = fanoutanthropic.Classify(tt.give)
				})
				assert.Equal(t, tt.wantMsg, err.Error())
				assert.Equal(t, tt.wantRetry, fanout.Retryable(err), "fanout.Retryable")

				var apiErr *fanoutanthropic.APIError
				require.ErrorAs(t, err, &apiErr)
				assert.Equal(t, tt.give.StatusCode, apiErr.Status)
				assert.Equal(t, tt.wantRetry, apiErr.Retry)
				assert.Equal(t, tt.wantDelay, apiErr.RetryAfter())

				var sdk *anthropic.Error
				require.ErrorAs(t, err, &sdk, "errors.As still finds the SDK's error")
				assert.Same(t, tt.give, sdk)

				var perm *backoff.PermanentError
				assert.Equal(t, !tt.wantRetry, errors.As(err, &perm), "wrapped with backoff.Permanent")
				assert.Equal(t, "error", fanout.ErrorKind(err))
			})
		}
	}

	t.Run("other errors pass through", func(t *testing.T) {
		assert.NoError(t, fanoutanthropic.Classify(nil))
		plain := errors.New("dial tcp 127.0.0.1:1: connection refused")
		assert.Same(t, plain, fanoutanthropic.Classify(plain))
	})

	t.Run("classifying twice changes nothing", func(t *testing.T) {
		once := fanoutanthropic.Classify(sdkError(t, 400, nil, apiBody("invalid_request_error", "x")))
		assert.Same(t, once, fanoutanthropic.Classify(once))
	})

	t.Run("a wrapped SDK error is found", func(t *testing.T) {
		err := fanoutanthropic.Classify(fmt.Errorf("calling: %w", sdkError(t, 529, nil, apiBody("overloaded_error", "Overloaded"))))
		assert.EqualError(t, err, "anthropic: 529 overloaded_error: Overloaded")
	})
}
