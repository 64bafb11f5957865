package fanoutopenai_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutopenai "github.com/gofanout/fanout/openai"
)

// apiError is an *openai.Error as the SDK makes it from a response.
func apiError(status int, code, typ string, header map[string]string) *openai.Error {
	h := http.Header{"X-Request-Id": {"req_123"}}
	for k, v := range header {
		h.Set(k, v)
	}
	return &openai.Error{
		StatusCode: status, Code: code, Type: typ, Message: "what went wrong",
		Response: &http.Response{StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), Header: h},
	}
}

func TestClassify(t *testing.T) {
	httpDate := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name      string
		give      *openai.Error
		wantRetry bool
		wantDelay time.Duration
		wantMsg   string
	}{
		{"400 is permanent", apiError(400, "invalid_value", "invalid_request_error", nil), false, 0, "openai: 400 invalid_value: what went wrong"},
		{"401 is permanent", apiError(401, "invalid_api_key", "invalid_request_error", nil), false, 0, "openai: 401 invalid_api_key: what went wrong"},
		{"403 is permanent", apiError(403, "", "permission_error", nil), false, 0, "openai: 403 permission_error: what went wrong"},
		{"404 is permanent", apiError(404, "model_not_found", "invalid_request_error", nil), false, 0, ""},
		{"413 is permanent", apiError(413, "", "", nil), false, 0, "openai: 413 Request Entity Too Large: what went wrong"},
		{"422 is permanent", apiError(422, "", "invalid_request_error", nil), false, 0, ""},
		{"408 is retried", apiError(408, "", "", nil), true, 0, ""},
		{"409 is retried", apiError(409, "", "", nil), true, 0, ""},
		{"500 is retried", apiError(500, "", "server_error", nil), true, 0, "openai: 500 server_error: what went wrong"},
		{"503 is retried", apiError(503, "", "", nil), true, 0, ""},
		{"429 is retried after retry-after-ms",
			apiError(429, "rate_limit_exceeded", "tokens", map[string]string{"retry-after-ms": "1500", "retry-after": "2"}), true, 1500 * time.Millisecond,
			"openai: 429 rate_limit_exceeded: what went wrong"},
		{"429 is retried after Retry-After in seconds",
			apiError(429, "rate_limit_exceeded", "requests", map[string]string{"Retry-After": "2"}), true, 2 * time.Second, ""},
		{"429 is retried after the reset of the spent request budget",
			apiError(429, "rate_limit_exceeded", "requests", map[string]string{
				"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms",
				"x-ratelimit-remaining-tokens": "9000", "x-ratelimit-reset-tokens": "6m0s"}), true, 20 * time.Millisecond, ""},
		{"429 is retried after the reset of the tokens when requests are left",
			apiError(429, "rate_limit_exceeded", "tokens", map[string]string{
				"x-ratelimit-remaining-requests": "12", "x-ratelimit-reset-requests": "20ms",
				"x-ratelimit-remaining-tokens": "200", "x-ratelimit-reset-tokens": "1.5s"}), true, 1500 * time.Millisecond, ""},
		{"429 with both budgets spent waits for the later reset",
			apiError(429, "rate_limit_exceeded", "tokens", map[string]string{
				"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s",
				"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}), true, 6 * time.Minute, ""},
		{"a reset header on a 5xx is not a delay", apiError(503, "", "", map[string]string{"x-ratelimit-reset-requests": "1s"}), true, 0, ""},
		{"429 insufficient_quota is permanent, by code",
			apiError(429, "insufficient_quota", "insufficient_quota", map[string]string{"retry-after": "1"}), false, 0,
			"openai: 429 insufficient_quota: what went wrong"},
		{"429 insufficient_quota is permanent, by type", apiError(429, "", "insufficient_quota", nil), false, 0, ""},
		{"x-should-retry: true retries a 400", apiError(400, "", "", map[string]string{"x-should-retry": "true"}), true, 0, ""},
		{"x-should-retry: false stops a 503", apiError(503, "", "", map[string]string{"x-should-retry": "false", "retry-after": "1"}), false, 0, ""},
		{"x-should-retry: false stops a 429", apiError(429, "rate_limit_exceeded", "", map[string]string{"x-should-retry": "false"}), false, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := fanoutopenai.Classify(tt.give)
			assert.Equal(t, tt.wantRetry, fanout.Retryable(err), "fanout.Retryable")
			var perm *backoff.PermanentError
			assert.Equal(t, !tt.wantRetry, errors.As(err, &perm), "wrapped in backoff.Permanent")

			var got *openai.Error
			require.ErrorAs(t, err, &got, "errors.As still finds the SDK's error")
			assert.Same(t, tt.give, got)

			var e *fanoutopenai.APIError
			require.ErrorAs(t, err, &e)
			assert.Same(t, tt.give, errors.Unwrap(e), "APIError unwraps to the SDK's error")
			assert.Equal(t, tt.wantRetry, e.Retryable(), "APIError.Retryable")
			assert.Equal(t, tt.wantRetry, e.Retry)
			assert.Equal(t, tt.wantDelay, e.RetryAfter())
			assert.Equal(t, tt.give.StatusCode, e.Status)
			assert.Equal(t, "req_123", e.RequestID)
			if tt.wantMsg != "" {
				assert.EqualError(t, err, tt.wantMsg)
			}
		})
	}
	t.Run("Retry-After as an HTTP date is a delay", func(t *testing.T) {
		var e *fanoutopenai.APIError
		require.ErrorAs(t, fanoutopenai.Classify(apiError(503, "", "", map[string]string{"Retry-After": httpDate})), &e)
		assert.InDelta(t, 90*time.Second, e.RetryAfter(), float64(2*time.Second))
	})
}

func TestClassifyPassesOtherErrorsThrough(t *testing.T) {
	t.Run("nil is nil", func(t *testing.T) {
		assert.NoError(t, fanoutopenai.Classify(nil))
	})
	t.Run("an error without an API error is returned as it is", func(t *testing.T) {
		err := fmt.Errorf("dial: %w", context.DeadlineExceeded)
		assert.Same(t, err, fanoutopenai.Classify(err))
	})
	t.Run("a wrapped API error is found", func(t *testing.T) {
		err := fanoutopenai.Classify(fmt.Errorf("call: %w", apiError(400, "", "", nil)))
		assert.False(t, fanout.Retryable(err))
	})
	t.Run("classifying twice changes nothing", func(t *testing.T) {
		once := fanoutopenai.Classify(apiError(400, "", "", nil))
		assert.Same(t, once, fanoutopenai.Classify(once))
	})
	t.Run("an error without a response is classified by its status and code", func(t *testing.T) {
		err := fanoutopenai.Classify(&openai.Error{StatusCode: 429, Code: "insufficient_quota"})
		assert.False(t, fanout.Retryable(err))
		assert.EqualError(t, err, "openai: 429 insufficient_quota")
	})
	t.Run("a long message is cut and kept on one line", func(t *testing.T) {
		e := apiError(400, "", "", nil)
		e.Message = "line one\nline two " + strings.Repeat("x", 400)
		msg := fanoutopenai.Classify(e).Error()
		assert.NotContains(t, msg, "\n")
		assert.Less(t, len(msg), 340)
		assert.Contains(t, msg, "line one line two")
	})
}
