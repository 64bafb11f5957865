package fanoutopenai

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/gofanout/fanout"
)

// controlTimeout bounds the calls a batch makes after its context ended:
// creating a batch already being created, and cancelling it.
const controlTimeout = 30 * time.Second

// batchJob takes one batch file through the Batch API: upload, create,
// poll, read the results into its keys' places in results.
type batchJob struct {
	client  openai.Client
	cfg     *config
	file    *batchFile
	results []fanout.Result[*openai.ChatCompletion]
	garbled int      // lines of its result files that did not parse
	x       exchange // the last response, for errors the SDK cannot parse
}

// opts are the request options of one call of the job: extra, the
// caller's, then the recorder of the response.
func (b *batchJob) opts(extra ...option.RequestOption) []option.RequestOption {
	return slices.Concat(extra, b.cfg.reqOpts, []option.RequestOption{b.x.option()})
}

func (b *batchJob) run(ctx context.Context) {
	job, err := b.submit(ctx)
	if err == nil {
		job, err = b.wait(ctx, job)
	}
	if err == nil {
		err = b.collect(ctx, job)
	}
	if err != nil {
		b.failRest(err)
	}
}

// submit uploads the file and creates the batch. The creation is not cut
// by ctx: a batch the server created while the caller gave up on the
// answer would run, and be paid for, with nobody to cancel it. So it is
// made under a detached deadline and, if ctx ended meanwhile, cancelled.
func (b *batchJob) submit(ctx context.Context) (*openai.Batch, error) {
	f, err := b.client.Files.New(ctx, openai.FileNewParams{
		File:    openai.File(bytes.NewReader(b.file.data), "fanout-batch.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch,
	}, b.opts()...)
	if err != nil {
		return nil, b.stopped(ctx, "batch file upload", b.x.apiError(ctx, err))
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), controlTimeout)
	defer cancel()
	job, err := b.client.Batches.New(cctx, openai.BatchNewParams{
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
		Endpoint:         openai.BatchNewParamsEndpointV1ChatCompletions,
		InputFileID:      f.ID,
	}, b.opts(option.WithMaxRetries(0))...) // a retried creation could run the batch twice
	if err != nil {
		return nil, b.stopped(ctx, "batch creation", b.x.apiError(cctx, err))
	}
	if ctx.Err() != nil {
		return nil, b.cancel(ctx, job)
	}
	return job, nil
}

// wait polls the batch, with backoff, until it is finished; if ctx ends
// first, it cancels the batch on the server. An error of the poll that
// another try may fix (a 429, a 5xx, a dropped connection) is retried at
// the next poll.
func (b *batchJob) wait(ctx context.Context, job *openai.Batch) (*openai.Batch, error) {
	poll := backoff.NewExponentialBackOff()
	poll.InitialInterval, poll.MaxInterval = b.cfg.pollFirst, b.cfg.pollMax
	poll.Multiplier, poll.RandomizationFactor, poll.MaxElapsedTime = 1.5, 0.1, 0
	poll.Reset()
	for !finished(job.Status) {
		if sleepUntil(ctx, time.Now().Add(poll.NextBackOff())) != nil {
			return nil, b.cancel(ctx, job)
		}
		next, err := b.client.Batches.Get(ctx, job.ID, b.opts()...)
		err = b.x.apiError(ctx, err)
		switch {
		case err == nil:
			job = next
		case ctx.Err() != nil:
			return nil, b.cancel(ctx, job)
		case !fanout.Retryable(Classify(err)):
			return nil, &opError{"batch " + job.ID + " status", Classify(err)}
		}
	}
	return job, nil
}

func finished(s openai.BatchStatus) bool {
	switch s {
	case openai.BatchStatusCompleted, openai.BatchStatusFailed, openai.BatchStatusExpired, openai.BatchStatusCancelled:
		return true
	}
	return false
}

// cancel asks the server to cancel the batch, since ctx ended, and returns
// the error of its keys: ErrBatchCancelled and ctx's cause, plus the
// cancellation's own failure, if any.
func (b *batchJob) cancel(ctx context.Context, job *openai.Batch) error {
	err := fmt.Errorf("%w: batch %s: %w", ErrBatchCancelled, job.ID, context.Cause(ctx))
	cctx, stop := context.WithTimeout(context.WithoutCancel(ctx), controlTimeout)
	defer stop()
	if _, cerr := b.client.Batches.Cancel(cctx, job.ID, b.opts()...); cerr != nil {
		err = errors.Join(err, &opError{"cancel of batch " + job.ID, Classify(b.x.apiError(cctx, cerr))})
	}
	return err
}

// stopped is the error of a step that failed: the context's cause first
// if it ended, so that the stop says why.
func (b *batchJob) stopped(ctx context.Context, op string, err error) error {
	err = &opError{op, Classify(err)}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	return err
}

// collect reads the finished batch's output and error files into the
// results, and returns the error of the keys they have no line for, as the
// batch's status explains it.
func (b *batchJob) collect(ctx context.Context, job *openai.Batch) error {
	if job.Status == openai.BatchStatusFailed {
		return fmt.Errorf("%w: batch %s: %s", ErrBatchFailed, job.ID, describe(job.Errors))
	}
	for _, id := range []string{job.OutputFileID, job.ErrorFileID} {
		if id == "" {
			continue
		}
		if err := b.read(ctx, job.ID, id); err != nil {
			return b.stopped(ctx, "batch "+job.ID+" results", err)
		}
	}
	switch job.Status {
	case openai.BatchStatusExpired:
		return fmt.Errorf("%w: batch %s", ErrBatchExpired, job.ID)
	case openai.BatchStatusCancelled:
		return fmt.Errorf("%w: batch %s", ErrBatchCancelled, job.ID)
	}
	if b.garbled > 0 {
		return fmt.Errorf("%w: batch %s (%d lines of its result files did not parse)", ErrNoResult, job.ID, b.garbled)
	}
	return fmt.Errorf("%w: batch %s", ErrNoResult, job.ID)
}

// read reads one result file, line by line, into the results of the keys
// it names. Lines of other keys are ignored; a key's first line counts. A
// line that does not parse is skipped and counted in garbled: the lines
// are independent, so one broken line costs no other key its answer.
func (b *batchJob) read(ctx context.Context, batchID, fileID string) error {
	resp, err := b.client.Files.Content(ctx, fileID, b.opts()...)
	if err != nil {
		return b.x.apiError(ctx, err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for {
		raw, err := r.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return fmt.Errorf("file %s: %w", fileID, err)
		}
		if len(bytes.TrimSpace(raw)) > 0 {
			b.record(batchID, raw)
		}
		if err == io.EOF {
			return nil
		}
	}
}

// record takes in one line of a result file.
func (b *batchJob) record(batchID string, raw []byte) {
	var line outputLine
	if json.Unmarshal(raw, &line) != nil {
		b.garbled++
		return
	}
	i, ok := b.file.pos[line.CustomID]
	if !ok || b.done(i) {
		return
	}
	r := &b.results[i]
	c, u, ran, err := line.outcome(batchID)
	r.Value, r.Err = c, err
	if ran {
		r.Attempts = 1
	}
	if c != nil {
		r.Cost = fanout.Cost{Tokens: u.total, Cents: b.cfg.prices.cents(u) * batchDiscount}
	}
}

// done reports whether the i-th key has its outcome.
func (b *batchJob) done(i int) bool {
	r := &b.results[i]
	return r.Value != nil || r.Err != nil
}

// failRest gives err to every key of the batch that has no outcome.
func (b *batchJob) failRest(err error) {
	for _, i := range b.file.index {
		if !b.done(i) {
			b.results[i].Err = err
		}
	}
}

// describe lists a failed batch's reasons.
func describe(errs openai.BatchErrors) string {
	if len(errs.Data) == 0 {
		return "no reason given"
	}
	var s []string
	for _, e := range errs.Data {
		msg := e.Code + ": " + oneLine(e.Message, 200)
		if e.Line > 0 {
			msg = fmt.Sprintf("line %d: %s", e.Line, msg)
		}
		s = append(s, msg)
	}
	return strings.Join(s, "; ")
}
