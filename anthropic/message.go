package fanoutanthropic

import (
	"context"
	"errors"
	"slices"

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
// the server may have counted it.
//
// With [WithLimits], every response's rate-limit headers feed the [Limits]
// the run waits on. A bad option makes every call fail with the option's
// error, never retried.
func Message(client anthropic.Client, params anthropic.MessageNewParams, opts ...Option) func(context.Context) (*anthropic.Message, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		err = backoff.Permanent(err)
		return func(context.Context) (*anthropic.Message, error) { return nil, err }
	}
	messages := client.Messages
	requestOpts := cfg.requestOptions()
	return func(ctx context.Context) (*anthropic.Message, error) {
		msg, err := messages.New(ctx, params, requestOpts...)
		if err != nil {
			err = Classify(err)
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				fanout.Settle(ctx, 0)
			}
			return nil, err
		}
		used := cfg.count(msg.Usage)
		fanout.Spend(ctx, fanout.Cost{Tokens: int64(used), Cents: cfg.prices.cents(msg.Usage, 1)})
		fanout.Settle(ctx, used)
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
