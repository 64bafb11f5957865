// Package fanoutanthropic runs Claude calls made with the official Go SDK
// (github.com/anthropics/anthropic-sdk-go) as fanout tasks, without glue.
//
// Start with [Message]: it turns one request into a task's Do,
//
//	fanout.Task[*anthropic.Message]{Key: k, Tokens: fanoutanthropic.Estimate(params),
//		Do: fanoutanthropic.Message(client, params, fanoutanthropic.WithLimits(limits))}
//
// and does what a fan-out of paid calls needs on every call:
//
//   - the SDK's own retries are off for the request, so that fanout's
//     WithRetry is the one retry loop and RetryPolicy.MaxAttempts is the
//     number of requests the server sees;
//   - an error is passed through [Classify], which gives fanout the API's
//     meaning: which errors a retry can fix, and how long the server asked
//     to wait;
//   - the usage of the answer is reported with fanout.Spend (tokens, and
//     cents given [WithPrices]) and settled with fanout.Settle, so that a
//     token limiter charged the estimate in Task.Tokens is charged what the
//     call really used.
//
// [Limits] reads the rate-limit headers of every response and holds every
// task that shares it until the server's budgets have room, so that a
// fan-out waits for its budget to refill instead of finding out with a 429
// per branch. Pass it to the run with fanout.WithRateLimit and to Message
// with [WithLimits].
//
// [RunBatch] sends the same requests through the Message Batches API, at
// half the price, and returns the answers keyed like a fanout run's.
//
// Everything in the package is safe for concurrent use.
package fanoutanthropic
