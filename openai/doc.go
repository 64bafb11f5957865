// Package fanoutopenai runs calls of the official OpenAI Go SDK
// (github.com/openai/openai-go/v3) as fanout tasks, without glue.
//
// Start with [Chat]: one line turns a Chat Completions request into a
// fanout.Task's Do, so that fanout's retries, limits, budgets, hedging and
// aggregators apply to it:
//
//	limits := fanoutopenai.NewLimits()
//	tasks := []fanout.Task[*openai.ChatCompletion]{
//		{Key: "fr", Tokens: 600, Do: fanoutopenai.Chat(client, frParams, fanoutopenai.WithLimits(limits))},
//		{Key: "de", Tokens: 600, Do: fanoutopenai.Chat(client, deParams, fanoutopenai.WithLimits(limits))},
//	}
//	rs, err := fanout.Run(ctx, tasks,
//		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 4}),
//		fanout.WithRateLimit(limits))
//
// Each call of the task makes exactly one HTTP request: the SDK's own
// retries are off, so that fanout's RetryPolicy.MaxAttempts is the number
// of requests the server sees for a key, not three times it. The error of
// a failed call goes through [Classify], which tells fanout what the
// server meant: whether another try can succeed (the status, the
// x-should-retry header, an exhausted quota) and how long to wait first
// (retry-after-ms, Retry-After, the x-ratelimit-reset-* headers). The
// usage of a served call is reported with fanout.Spend (tokens, and cents
// given [WithPrices]) and fanout.Settle (the real tokens, against the
// task's estimate).
//
// [Limits] is a fanout.Limiter fed by the x-ratelimit-* headers of every
// response: once the server says a budget is spent until a reset, every
// task sharing the Limits waits for the reset, instead of each finding out
// with a 429.
//
// [RunBatch] sends many requests through OpenAI's Batch API at half the
// price, and returns one fanout.Result per key, as fanout.Run does.
//
// Errors of this package start with "openai: ".
package fanoutopenai
