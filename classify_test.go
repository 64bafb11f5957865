package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"testing/synctest"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"

	"github.com/gofanout/fanout"
)

// statusMethodError says its status through a method, as some SDKs do.
type statusMethodError struct{ code int }

func (e *statusMethodError) Error() string   { return fmt.Sprintf("sdk: status %d", e.code) }
func (e *statusMethodError) StatusCode() int { return e.code }

// statusFieldError has the shape of anthropic-sdk-go's and openai-go's
// *Error: a StatusCode field and the response.
type statusFieldError struct {
	StatusCode int
	Response   *http.Response
}

func (e *statusFieldError) Error() string { return "sdk: request refused" }

// responseError carries only the response.
type responseError struct{ Response *http.Response }

func (e *responseError) Error() string { return "sdk: bad response" }

// embeddedError promotes StatusCode from a nil embedded pointer.
type embeddedError struct{ *statusFieldError }

func (e embeddedError) Error() string { return "sdk: embedded" }

// stringError is an error that is not a struct.
type stringError string

func (e stringError) Error() string { return string(e) }

func response(code int) *http.Response { return &http.Response{StatusCode: code} }

func TestHTTPStatus(t *testing.T) {
	tests := []struct {
		name     string
		give     error
		wantCode int
		wantOK   bool
	}{
		{"an *HTTPError", &fanout.HTTPError{StatusCode: 429}, 429, true},
		{"an *HTTPError under backoff.Permanent", backoff.Permanent(&fanout.HTTPError{StatusCode: 404}), 404, true},
		{"a StatusCode method", &statusMethodError{code: 503}, 503, true},
		{"a StatusCode field", &statusFieldError{StatusCode: 401}, 401, true},
		{"a StatusCode field wins over the response", &statusFieldError{StatusCode: 401, Response: response(500)}, 401, true},
		{"a zero StatusCode field falls back to the response", &statusFieldError{Response: response(502)}, 502, true},
		{"only a Response field", &responseError{Response: response(400)}, 400, true},
		{"a nil Response field", &responseError{}, 0, false},
		{"wrapped with %w", fmt.Errorf("call: %w", &statusFieldError{StatusCode: 403}), 403, true},
		{"inside errors.Join", errors.Join(errors.New("other"), &statusMethodError{code: 409}), 409, true},
		{"the first in the chain decides", fmt.Errorf("%w: %w", &statusMethodError{code: 500}, &responseError{Response: response(400)}), 500, true},
		{"a nil *HTTPError", (*fanout.HTTPError)(nil), 0, false},
		{"a nil pointer with a StatusCode method", (*statusMethodError)(nil), 0, false},
		{"a nil pointer with a StatusCode field", (*statusFieldError)(nil), 0, false},
		{"a nil embedded pointer", embeddedError{}, 0, false},
		{"wrapped nil pointer", fmt.Errorf("call: %w", (*responseError)(nil)), 0, false},
		{"a non-struct error", stringError("plain"), 0, false},
		{"a status out of range", &statusMethodError{code: 42}, 0, false},
		{"no status at all", errors.New("plain"), 0, false},
		{"nil", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, ok := fanout.HTTPStatus(tt.give)
			assert.Equal(t, tt.wantOK, ok)
			assert.Equal(t, tt.wantCode, code)
		})
	}
}

func TestRetryableHTTPStatus(t *testing.T) {
	tests := []struct {
		give int
		want bool
	}{
		{400, false}, {401, false}, {403, false}, {404, false}, {422, false}, {451, false},
		{408, true}, {409, true}, {425, true}, {429, true},
		{500, true}, {502, true}, {503, true}, {529, true},
		{200, true}, {302, true},
	}
	for _, tt := range tests {
		carriers := []struct {
			name string
			err  error
		}{
			{"*HTTPError", &fanout.HTTPError{StatusCode: tt.give}},
			{"StatusCode method", &statusMethodError{code: tt.give}},
			{"StatusCode field", fmt.Errorf("sdk: %w", &statusFieldError{StatusCode: tt.give})},
			{"Response field", errors.Join(&responseError{Response: response(tt.give)})},
		}
		for _, c := range carriers {
			t.Run(fmt.Sprintf("%d as %s", tt.give, c.name), func(t *testing.T) {
				assert.Equal(t, tt.want, fanout.Retryable(c.err))
			})
		}
	}
}

func TestRetryableKeepsItsRules(t *testing.T) {
	tests := []struct {
		name string
		give error
		want bool
	}{
		{"a permanent 503", backoff.Permanent(&fanout.HTTPError{StatusCode: 503}), false},
		{"a panic", &fanout.PanicError{Value: "bug"}, false},
		{"the run's cancellation over a 503", fmt.Errorf("%w: %w", context.Canceled, &statusMethodError{code: 503}), false},
		{"the run's timeout", fanout.ErrRunTimeout, false},
		{"a task timeout over a 400", fmt.Errorf("%w: %w", fanout.ErrTaskTimeout, &statusMethodError{code: 400}), true},
		{"an error with no status", errors.New("connection reset"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, fanout.Retryable(tt.give))
		})
	}
}

func TestRetryBySDKStatus(t *testing.T) {
	tests := []struct {
		name      string
		give      error
		wantCalls int
	}{
		{"a 401 is tried once", &statusFieldError{StatusCode: http.StatusUnauthorized}, 1},
		{"a 400 response is tried once", &responseError{Response: response(http.StatusBadRequest)}, 1},
		{"a 409 is retried", &statusFieldError{StatusCode: http.StatusConflict}, 2},
		{"a 503 is retried", &statusMethodError{code: http.StatusServiceUnavailable}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				task, log := flaky("k", 1, tt.give)
				_, _ = fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(exact(3)))
				assert.Len(t, log.times(), tt.wantCalls)
			})
		})
	}
}

func TestCheckResponseFollowsRetryable(t *testing.T) {
	for code := 400; code <= 599; code++ {
		err := fanout.CheckResponse(&http.Response{StatusCode: code, Header: http.Header{}})
		var perm *backoff.PermanentError
		permanent := errors.As(err, &perm)
		if retried := fanout.Retryable(&fanout.HTTPError{StatusCode: code}); permanent == retried {
			t.Errorf("CheckResponse(%d): permanent is %v, and Retryable of its status is %v", code, permanent, retried)
		}
	}
	assert.True(t, fanout.Retryable(checkStatus(t, http.StatusConflict)), "a 409 conflict may clear on another try")
}
