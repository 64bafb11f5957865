package fanoutopenai

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/gofanout/fanout"
)

// The errors of keys that a batch did not answer. The key's error matches
// one of them with errors.Is, and its message names the batch.
var (
	// ErrBatchExpired is the error of a request the batch had not run
	// when its 24-hour completion window ended.
	ErrBatchExpired = errors.New("openai: batch expired before the request ran")
	// ErrBatchCancelled is the error of a request the batch had not run
	// when it was cancelled: by RunBatch when its context ended (the key's
	// error then also matches the context's cause), or by someone else.
	ErrBatchCancelled = errors.New("openai: batch cancelled before the request ran")
	// ErrBatchFailed is the error of every request of a batch that the
	// API refused as a whole, its input file failing validation, say; the
	// message gives the API's reasons.
	ErrBatchFailed = errors.New("openai: batch failed")
	// ErrNoResult is the error of a request that a completed batch
	// returned no usable line for: none, or one that does not parse or
	// has neither a status nor an error. A line that does not parse
	// costs no other key its answer; the message counts such lines.
	ErrNoResult = errors.New("openai: batch returned no result for the request")
)

// BatchRequest is one request of [RunBatch]: a key, unique within the
// call, and the Chat Completions parameters to send.
type BatchRequest struct {
	Key    string
	Params openai.ChatCompletionNewParams
}

// RunBatch sends reqs through OpenAI's Batch API, which serves them within
// 24 hours at half the price of Chat Completions, and returns one Result
// per key, as fanout.Run does: the completion, or the key's error. The
// error is nil if every key succeeded; otherwise it joins the
// *fanout.TaskError of each failed key in input order.
//
// The pipeline, for each batch, all batches at once: the requests are
// written as JSONL (custom_id = Key) and uploaded as a file with purpose
// "batch"; a batch is created on /v1/chat/completions with a 24h window;
// it is polled with backoff (see [WithPollInterval]) until it is
// completed, failed, expired or cancelled; its output and error files are
// read and each line is mapped back to its key. Requests are split into
// as many batches as the API's limits need: 50 000 requests and 200 MB
// per input file (see [WithBatchLimits]).
//
// Each key ends as one of:
//
//   - served: the *openai.ChatCompletion, with Result.Cost set from its
//     usage (tokens, and cents at half the [WithPrices] prices);
//   - refused by the API: its error through [Classify], so that
//     fanout.Retryable says whether sending it again can succeed
//     (RunBatch itself does not resend);
//   - not run: an error matching [ErrBatchExpired], [ErrBatchCancelled],
//     [ErrBatchFailed] or [ErrNoResult];
//   - cut short by an error of the pipeline (an upload refused, say):
//     that error, for every key of that batch.
//
// Bad input (an empty or duplicate key, a request without a model or
// messages, a request too large for a batch file, an invalid option, a
// zero openai.Client rather than one from openai.NewClient) is
// refused before any request, with a nil *Results. When ctx ends, each
// batch still running is cancelled on the server, and its keys fail with
// ErrBatchCancelled and the context's cause; RunBatch returns without
// waiting for the cancellation to finish (up to 10 minutes, after which
// the batch's partial output is in its files). Called inside a fanout
// task, RunBatch also reports the total cost with fanout.Spend.
func RunBatch(ctx context.Context, client openai.Client, reqs []BatchRequest, opts ...Option) (*fanout.Results[*openai.ChatCompletion], error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	files, err := cfg.split(reqs)
	if err != nil {
		return nil, err
	}
	if client.Options == nil {
		return nil, errors.New("openai: RunBatch: a zero openai.Client: make it with openai.NewClient")
	}
	start := time.Now()
	list := make([]fanout.Result[*openai.ChatCompletion], len(reqs))
	for i, r := range reqs {
		list[i].Key = r.Key
	}
	var wg sync.WaitGroup
	for _, f := range files {
		wg.Go(func() {
			b := &batchJob{client: client, cfg: cfg, file: f, results: list}
			b.run(ctx)
			for _, i := range f.index {
				list[i].Elapsed = time.Since(start)
			}
		})
	}
	wg.Wait()
	rs, err := fanout.NewResults(list)
	if err != nil {
		return nil, err // cannot happen: split checked the keys
	}
	fanout.Spend(ctx, rs.Cost())
	return rs, rs.Err()
}
