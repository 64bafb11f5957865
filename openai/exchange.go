package fanoutopenai

import (
	"context"
	"errors"
	"net/http"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// exchange remembers the last response of a call's requests, so that an
// error status still counts as the API's error when the SDK could not
// read its body (a connection reset mid-body) or parse it (a gateway's
// {"error": "Unauthorized"}): the SDK then returns the reading or parsing
// error alone, without the status, and a 401 would look like a dropped
// connection worth retrying. An exchange serves one goroutine at a time.
type exchange struct{ last *http.Response }

// option is the middleware that records each response.
func (x *exchange) option() option.RequestOption {
	return option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		res, err := next(req)
		x.last = res
		return res, err
	})
}

// apiError returns err as it is, unless it is not an *openai.Error while
// the last response had an error status and ctx is live: then an
// *openai.Error of that response, with no message.
func (x *exchange) apiError(ctx context.Context, err error) error {
	var api *openai.Error
	if err == nil || ctx.Err() != nil || errors.As(err, &api) || x.last == nil || x.last.StatusCode < 400 {
		return err
	}
	return &openai.Error{StatusCode: x.last.StatusCode, Request: x.last.Request, Response: x.last}
}
