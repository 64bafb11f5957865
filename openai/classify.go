package fanoutopenai

import (
	"cmp"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/openai/openai-go/v3"

	"github.com/gofanout/fanout"
)

// APIError is an error answer of the OpenAI API, as [Classify] gives it
// to fanout: the HTTP status, the API's own error code, type and message,
// whether another try may succeed, and how long the server asked to wait
// first. Its message is the API's: "openai: 429 rate_limit_exceeded: Rate
// limit reached for ...".
//
// It wraps the SDK's *openai.Error (with the param, the raw JSON, the
// request and the response), which errors.As finds. fanout.Retryable asks
// its Retryable method before reading any HTTP status in the chain, so the
// verdict is Classify's, which obeys the server's x-should-retry header
// over the status.
type APIError struct {
	// Status is the HTTP status; for a request of a batch, the status the
	// batch answered it with.
	Status int
	// Code is the API's error code ("rate_limit_exceeded",
	// "insufficient_quota", "invalid_api_key", ...), Type its error type
	// ("invalid_request_error", "tokens", "server_error", ...); either may
	// be empty.
	Code, Type string
	// Message is the API's explanation.
	Message string
	// RequestID is the x-request-id header, to quote to support.
	RequestID string
	// Retry reports whether another try may succeed.
	Retry bool
	// Delay is how long the server asked to wait before another try: zero
	// if it did not say, or if another try cannot succeed.
	Delay time.Duration

	sdk *openai.Error
}

// Error reads "openai: STATUS CODE: MESSAGE", with the type, or else the
// status text, when the API gave no code. Unlike the SDK's own summary it
// includes the API's message, which says what to fix; it never includes
// the URL, the headers or the request.
func (e *APIError) Error() string { return "openai: " + e.detail() }

// detail is Error without its prefix.
func (e *APIError) detail() string {
	s := strconv.Itoa(e.Status)
	if what := cmp.Or(e.Code, e.Type, http.StatusText(e.Status)); what != "" {
		s += " " + what
	}
	if msg := oneLine(e.Message, 300); msg != "" {
		s += ": " + msg
	}
	return s
}

// RetryAfter returns Delay: fanout's WithRetry waits that long before the
// next attempt, and pauses every [Limits] and fanout.Throttle of the run.
func (e *APIError) RetryAfter() time.Duration { return e.Delay }

// Retryable reports Retry: fanout.Retryable asks it first.
func (e *APIError) Retryable() bool { return e.Retry }

// Unwrap returns the SDK's *openai.Error; nil for an APIError that
// Classify did not make.
func (e *APIError) Unwrap() error {
	if e.sdk == nil {
		return nil
	}
	return e.sdk
}

// Classify turns the first *openai.Error in err's chain into an [*APIError]
// that fanout's retries understand; any other error, nil included, is
// returned as it is, and so is an error Classify already made.
//
// Whether another try can succeed is decided by the first rule that fits:
//
//   - x-should-retry: true or false, sent by the server, decides;
//   - a 429 whose code or type is insufficient_quota (billing, not rate)
//     never succeeds;
//   - otherwise the status decides, as fanout.Retryable's table does:
//     408, 409, 425, 429 and 5xx are worth another try; 400, 401, 403,
//     404, 413, 422 and every other 4xx are not.
//
// An error that another try cannot fix is wrapped in backoff.Permanent
// (v4), so that fanout.Retryable, and any RetryIf that checks for
// permanent errors, stop at once. One that can carries the delay the server
// asked for, from the first of these headers present: retry-after-ms,
// Retry-After (seconds or an HTTP date), and, for a 429,
// x-ratelimit-reset-requests or x-ratelimit-reset-tokens (Go durations
// such as "1s", "6m0s", "20ms"; the reset of the budget that is spent).
// fanout waits that long before the next attempt, and pauses its Throttles
// and [Limits] for every task, not only the one told to wait.
func Classify(err error) error {
	var done *APIError
	var api *openai.Error
	if err == nil || errors.As(err, &done) || !errors.As(err, &api) {
		return err
	}
	e := &APIError{
		Status: api.StatusCode, Code: api.Code, Type: api.Type, Message: api.Message,
		RequestID: header(api, "X-Request-Id"), Retry: retryable(api), sdk: api,
	}
	if !e.Retry {
		return backoff.Permanent(e)
	}
	e.Delay = serverDelay(api)
	return e
}

func retryable(api *openai.Error) bool {
	switch strings.ToLower(header(api, "X-Should-Retry")) {
	case "true":
		return true
	case "false":
		return false
	}
	if api.StatusCode == http.StatusTooManyRequests && (api.Code == "insufficient_quota" || api.Type == "insufficient_quota") {
		return false
	}
	return fanout.Retryable(&fanout.HTTPError{StatusCode: api.StatusCode})
}

// serverDelay is the wait the server asked for in the response of api.
func serverDelay(api *openai.Error) time.Duration {
	if api.Response == nil || api.Response.StatusCode < 400 {
		return 0
	}
	var he *fanout.HTTPError
	if errors.As(fanout.CheckResponse(api.Response), &he) && he.Delay > 0 {
		return he.Delay
	}
	if api.StatusCode == http.StatusTooManyRequests {
		return resetDelay(api.Response.Header)
	}
	return 0
}

func header(api *openai.Error, name string) string {
	if api.Response == nil {
		return ""
	}
	return strings.TrimSpace(api.Response.Header.Get(name))
}

// oneLine is s on one line, cut to at most n bytes on a rune boundary.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// opError names the operation of RunBatch that failed, under one "openai: "
// prefix.
type opError struct {
	op  string
	err error
}

func (e *opError) Error() string {
	return "openai: " + e.op + ": " + strings.TrimPrefix(e.err.Error(), "openai: ")
}

func (e *opError) Unwrap() error { return e.err }
