package fanoutopenai

import (
	"context"
	"errors"
	"slices"

	"github.com/cenkalti/backoff/v4"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/gofanout/fanout"
)

// Chat returns the Do of a fanout.Task that sends params to Chat
// Completions with client, once per call:
//
//	{Key: "fr", Tokens: 600, Do: fanoutopenai.Chat(client, params)}
//
// Each call makes exactly one HTTP request. The SDK retries a failed
// request twice by default, inside the call, where fanout cannot see it:
// with fanout.RetryPolicy{MaxAttempts: 3} a key could hit the server nine
// times, on the SDK's schedule rather than the server's. So Chat turns
// them off (option.WithMaxRetries(0)) and leaves retries to fanout, which
// also shares the server's waits between tasks.
//
// A failed call returns its error through [Classify]; an error status
// whose body the SDK could not read or parse (a proxy's page, a reset
// connection) still counts as the API's error, by its status and headers.
// A served call
// reports its usage: fanout.Spend with its total tokens, and its cost in
// cents given [WithPrices]; and fanout.Settle with its total tokens, so
// that the limiters of fanout.WithRateLimit, charged the task's
// estimated Tokens before the call, are corrected to what it really used.
// A call the server rejected (any API error: it served nothing) is
// settled at 0. A call cut before the server answered (a timeout, a
// cancellation, a broken connection) is not settled: the server may have
// served it, so the estimate stands; so does the estimate of a served
// call whose response reports no usage (a proxy that strips it, say).
//
// Options: [WithPrices], [WithLimits], [WithRequestOptions]. Chat panics
// if an option is invalid (a negative price, a nil Limits): that is a
// mistake in the program, found where the task is built. A zero
// openai.Client (one not made by openai.NewClient) fails every call with
// an error saying so, before any request, never retried.
func Chat(client openai.Client, params openai.ChatCompletionNewParams, opts ...Option) func(context.Context) (*openai.ChatCompletion, error) {
	cfg := mustConfig(opts)
	return func(ctx context.Context) (*openai.ChatCompletion, error) {
		if client.Options == nil {
			return nil, backoff.Permanent(errZeroClient)
		}
		return call(ctx, cfg, func(ctx context.Context, o ...option.RequestOption) (*openai.ChatCompletion, error) {
			return client.Chat.Completions.New(ctx, params, o...)
		}, func(c *openai.ChatCompletion) usage { return chatUsage(c.Usage) })
	}
}

// Response is [Chat] for the Responses API: the Do of a fanout.Task that
// sends params with client.Responses.New, once per call, with the same
// retries, classification, usage and settlement.
func Response(client openai.Client, params responses.ResponseNewParams, opts ...Option) func(context.Context) (*responses.Response, error) {
	cfg := mustConfig(opts)
	return func(ctx context.Context) (*responses.Response, error) {
		if client.Options == nil {
			return nil, backoff.Permanent(errZeroClient)
		}
		return call(ctx, cfg, func(ctx context.Context, o ...option.RequestOption) (*responses.Response, error) {
			return client.Responses.New(ctx, params, o...)
		}, func(r *responses.Response) usage {
			return usage{
				input:  r.Usage.InputTokens,
				cached: r.Usage.InputTokensDetails.CachedTokens,
				output: r.Usage.OutputTokens,
				total:  r.Usage.TotalTokens,
			}
		})
	}
}

// errZeroClient is the error of a client made without openai.NewClient,
// which has no base URL, no key and no HTTP client: every request would
// fail, so none is made.
var errZeroClient = errors.New("openai: a zero openai.Client: make it with openai.NewClient")

// call makes one request with do, reports what it used and classifies its
// error.
func call[T any](ctx context.Context, cfg *config, do func(context.Context, ...option.RequestOption) (T, error), used func(T) usage) (T, error) {
	var x exchange
	v, err := do(ctx, append(slices.Clip(cfg.callOpts), x.option())...)
	if err != nil {
		err = x.apiError(ctx, err)
		var api *openai.Error
		if errors.As(err, &api) {
			fanout.Settle(ctx, 0)
		}
		var zero T
		return zero, Classify(err)
	}
	u := used(v)
	if u.total > 0 { // no usage reported: nothing to correct the estimate by
		fanout.Settle(ctx, int(u.total))
	}
	fanout.Spend(ctx, fanout.Cost{Tokens: u.total, Cents: cfg.prices.cents(u)})
	return v, nil
}

// mustConfig is the configuration of Chat or Response, with the request
// options of each of its calls: the SDK's retries off, the Limits' feed,
// then the caller's.
func mustConfig(opts []Option) *config {
	cfg, err := newConfig(opts)
	if err != nil {
		panic(err)
	}
	cfg.callOpts = []option.RequestOption{option.WithMaxRetries(0)}
	if cfg.limits != nil {
		cfg.callOpts = append(cfg.callOpts, option.WithMiddleware(cfg.limits.Middleware()))
	}
	cfg.callOpts = append(cfg.callOpts, cfg.reqOpts...)
	return cfg
}
