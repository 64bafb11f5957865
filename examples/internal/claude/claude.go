// Package claude is what the examples share of calling Claude through the
// official Go SDK: one message in, its text out, with the tokens it used
// reported to fanout and its errors given the meaning fanout's retry reads.
//
// Clients made for it should turn the SDK's own retries off, with
// option.WithMaxRetries(0): then fanout's RetryPolicy.MaxAttempts is the
// true bound on the requests one key sends, and every wait (the
// Retry-After of a 429 or 529 included) shows in the run's Results and
// Observer instead of happening unseen inside a single attempt.
package claude

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/anthropics/anthropic-sdk-go"

	"github.com/gofanout/fanout"
)

// Text sends one request and returns the text of the answer. It reports
// the tokens the call used through fanout.Spend, and returns errors as
// APIError does.
func Text(ctx context.Context, client *anthropic.Client, params anthropic.MessageNewParams) (string, error) {
	msg, err := client.Messages.New(ctx, params)
	if err != nil {
		return "", APIError(err)
	}
	fanout.Spend(ctx, fanout.Cost{Tokens: msg.Usage.InputTokens + msg.Usage.OutputTokens})
	var b strings.Builder
	for _, block := range msg.Content {
		if block.Type == "text" {
			b.WriteString(block.Text)
		}
	}
	return b.String(), nil
}

// Error is an error response of the API, told in one line:
//
//	claude: 529 overloaded_error: Overloaded
//
// fanout's Retryable reads StatusCode (a 429 or 5xx is retried, any other
// 4xx is not) and WithRetry reads RetryAfter. Unwrap reaches the SDK's
// *anthropic.Error, for the request ID and the raw body, and the
// *fanout.HTTPError of the response.
type Error struct {
	StatusCode int
	Type       string        // the API's error type, such as "overloaded_error"; empty if the body had none
	Message    string        // the API's message, such as "Overloaded"
	Delay      time.Duration // what the response asked to wait before trying again
	response   *fanout.HTTPError
	sdk        *anthropic.Error
}

// Error gives the status, the API's error type and its message, and the
// delay the response asked for if any.
func (e *Error) Error() string {
	msg := "claude: " + strconv.Itoa(e.StatusCode)
	switch {
	case e.Type != "":
		msg += " " + e.Type
	case http.StatusText(e.StatusCode) != "":
		msg += " " + http.StatusText(e.StatusCode)
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Delay > 0 {
		msg += fmt.Sprintf(" (retry after %v)", e.Delay)
	}
	return msg
}

// RetryAfter returns Delay, which fanout's WithRetry waits before the next
// attempt in place of its backoff.
func (e *Error) RetryAfter() time.Duration { return e.Delay }

// Unwrap returns the response as a *fanout.HTTPError and the SDK's error.
func (e *Error) Unwrap() []error { return []error{e.response, e.sdk} }

// APIError returns an error response of the API as an *Error, and any
// other error (the network's, the context's) with a "claude: " prefix.
func APIError(err error) error {
	var sdk *anthropic.Error
	if !errors.As(err, &sdk) || sdk.Response == nil {
		return fmt.Errorf("claude: %w", err)
	}
	var response *fanout.HTTPError
	if !errors.As(fanout.CheckResponse(sdk.Response), &response) {
		return fmt.Errorf("claude: %w", err) // a status below 400: not an error response
	}
	var body struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal([]byte(sdk.RawJSON()), &body) // a body that is not the API's leaves both empty
	return &Error{
		StatusCode: response.StatusCode,
		Type:       body.Error.Type,
		Message:    body.Error.Message,
		Delay:      response.Delay,
		response:   response,
		sdk:        sdk,
	}
}
