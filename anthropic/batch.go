package fanoutanthropic

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/anthropics/anthropic-sdk-go"

	"github.com/gofanout/fanout"
)

// BatchRequest is one request of [RunBatch], with the key its answer comes
// back under.
type BatchRequest struct {
	Key    string
	Params anthropic.MessageNewParams
}

var (
	// ErrBatchCanceled is the error, with errors.Is, of a key whose batch
	// request was canceled before it ran: by the server, or because
	// RunBatch's context ended (the key's error then also matches the
	// context's cause).
	ErrBatchCanceled = errors.New("fanoutanthropic: batch request canceled")

	// ErrBatchExpired is the error of a key whose batch request was not
	// processed before the batch expired (after 24 hours).
	ErrBatchExpired = errors.New("fanoutanthropic: batch request expired")
)

// RunBatch sends reqs through the Message Batches API, which answers
// within 24 hours at half the price of the Messages API, and returns the
// answers as the *fanout.Results of a run: one Result per key, in input
// order, with each key's message or error.
//
// RunBatch creates as many batches as the API's limits on one batch need
// (see [WithBatchLimits]), polls each until it ends (see
// [WithPollInterval]), and reads its results. A request that succeeded has
// its message as Value and its usage as Cost (tokens counted as [Message]
// counts them, cents at the batch price given [WithPrices]); the total is
// also reported with fanout.Spend, for a RunBatch inside a fanout task. A
// request that errored has the API's error, as [Classify] would give it
// (without an HTTP status, which a batch does not report); one canceled
// or expired has an error matching [ErrBatchCanceled] or
// [ErrBatchExpired]; one the results leave out, or whose line of the
// results cannot be read, an error saying so (a garbage line costs no
// other key its answer). Keys need not be valid custom_ids
// (^[a-zA-Z0-9_-]{1,64}$): RunBatch maps them to ids of its own.
//
// When ctx ends, RunBatch cancels its batches on the server and returns at
// once: the keys not answered yet match ErrBatchCanceled and ctx's cause
// (answers the server produced before the cancellation are not read). A
// batch whose creation request ctx cut short cannot be canceled: the
// server may have created it, but RunBatch never learnt its id; it shows
// in the Console, and in client.Messages.Batches.List. A creation that
// the server refuses with a retryable error (a 429, a 529) is tried
// again, up to 5 times, unless the server asks for a wait over 30 s; one
// that fails otherwise fails its batch's keys, never the other batches'.
//
// Bad input (an empty or duplicate key, a request too large for a batch,
// a bad option, a zero anthropic.Client) is an error before any request,
// with nil Results.
// Otherwise the error is nil if every key succeeded, and otherwise joins
// the failed keys' errors, as fanout.Run's does.
func RunBatch(ctx context.Context, client anthropic.Client, reqs []BatchRequest, opts ...Option) (*fanout.Results[*anthropic.Message], error) {
	cfg, err := newConfig(opts)
	if len(client.Messages.Batches.Options) == 0 {
		err = errors.Join(errZeroClient, err)
	}
	if err != nil {
		return nil, err
	}
	plans, err := planBatches(reqs, cfg.batchRequests, cfg.batchBytes)
	if err != nil {
		return nil, err
	}
	out := make([]fanout.Result[*anthropic.Message], len(reqs))
	for i, r := range reqs {
		out[i].Key = r.Key
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, p := range plans {
		b := &batchRun{service: &client.Messages.Batches, cfg: cfg, plan: p, out: out, start: start}
		wg.Go(func() { b.run(ctx) })
	}
	wg.Wait()
	var total fanout.Cost
	for _, r := range out {
		total = total.Add(r.Cost)
	}
	if total != (fanout.Cost{}) {
		fanout.Spend(ctx, total)
	}
	rs, err := fanout.NewResults(out)
	if err != nil {
		return nil, err
	}
	return rs, rs.Err()
}
