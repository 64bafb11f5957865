package fanoutanthropic

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/cenkalti/backoff/v4"

	"github.com/gofanout/fanout"
)

// Message returns a task's Do that sends params to the Messages API with
// client, once per call:
//
//	fanout.Task[*anthropic.Message]{Key: k, Tokens: fanoutanthropic.Estimate(params),
//		Do: fanoutanthropic.Message(client, params)}
//
// Each call makes exactly one request. The SDK retries a failed request
// twice by default, on its own schedule, before fanout sees the error; so
// under fanout.WithRetry with MaxAttempts 3 a key could reach the server
// nine times, and fanout's server-directed waits, Throttles and budget
// would only see every third failure. Message turns the SDK's retries off
// for its requests (option.WithMaxRetries(0)) and leaves retrying to
// fanout, which decides with [Classify]: the error returned is classified.
//
// What the call used is reported to the run: its tokens, counted by
// [RateLimitedTokens] (or [WithTokenCount]), and their price given
// [WithPrices], with fanout.Spend; and the same tokens with fanout.Settle,
// which corrects what the run's token limiters charged for Task.Tokens. An
// error answer of the API settles 0, since the server rejected the call
// without serving it; a call cut short (a timeout, a lost hedge, a
// cancelled run) settles nothing, and keeps the estimate charged, since
// the server may have counted it; so does a served call whose response
// reports no usage.
//
// With [WithLimits], every response's rate-limit headers feed the [Limits]
// the run waits on. An answer with an error status whose body was cut off
// is classified by its status and headers all the same. A bad option, or
// a zero anthropic.Client (one not made by anthropic.NewClient), makes
// every call fail with an error saying so, before any request, never
// retried.
func Message(client anthropic.Client, params anthropic.MessageNewParams, opts ...Option) func(context.Context) (*anthropic.Message, error) {
	cfg, err := newConfig(opts)
	if len(client.Messages.Options) == 0 {
		err = errors.Join(errZeroClient, err)
	}
	if err != nil {
		err = backoff.Permanent(err)
		return func(context.Context) (*anthropic.Message, error) { return nil, err }
	}
	messages := client.Messages
	requestOpts := cfg.requestOptions()
	return func(ctx context.Context) (*anthropic.Message, error) {
		last := &lastAnswer{}
		msg, err := messages.New(ctx, params, last.watch(requestOpts)...)
		if err != nil {
			err = last.classify(ctx, err)
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				fanout.Settle(ctx, 0)
			}
			return nil, err
		}
		used := cfg.count(msg.Usage)
		fanout.Spend(ctx, fanout.Cost{Tokens: int64(used), Cents: cfg.prices.cents(msg.Usage, 1)})
		if used > 0 { // no usage reported: nothing to correct the estimate by
			fanout.Settle(ctx, used)
		}
		return msg, nil
	}
}

// requestOptions are the SDK options of every request: no SDK retries,
// the Limits' middleware, then the caller's own, which may override both.
func (c *config) requestOptions() []option.RequestOption {
	opts := []option.RequestOption{option.WithMaxRetries(0)}
	if c.limits != nil {
		opts = append(opts, option.WithMiddleware(c.limits.Middleware()))
	}
	return slices.Concat(opts, c.requests)
}

// lastAnswer remembers the last response of a call. When the body of an
// error status cannot be read, the SDK returns the read error alone; the
// status and headers the server sent still say what the answer means.
type lastAnswer struct{ res *http.Response }

// watch returns opts and a middleware that remembers each response.
func (a *lastAnswer) watch(opts []option.RequestOption) []option.RequestOption {
	return append(slices.Clip(opts), option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		res, err := next(req)
		a.res = res
		return res, err
	}))
}

// classify is Classify, and for an error status whose body could not be
// read, the *APIError of the status and headers, with the read error as
// its message. An error of ctx ending stays as it is.
func (a *lastAnswer) classify(ctx context.Context, err error) error {
	err = Classify(err)
	var apiErr *APIError
	if errors.As(err, &apiErr) || ctx.Err() != nil || a.res == nil || a.res.StatusCode < 400 {
		return err
	}
	res := a.res
	answered := classify(&anthropic.Error{StatusCode: res.StatusCode, Request: res.Request, Response: res}, time.Now())
	errors.As(answered, &apiErr)
	apiErr.Message = shorten(err.Error())
	return answered
}
