package fanoutanthropic

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/cenkalti/backoff/v4"

	"github.com/gofanout/fanout"
)

// A batch's life, top to bottom: run creates it, awaits its end polling
// with backoff (or cancels it when the context ends), then collects its
// results into the keys' slots.

// batchRun follows one batch of RunBatch. It writes only its own keys'
// slots of out.
type batchRun struct {
	service *anthropic.MessageBatchService
	cfg     *config
	plan    *batchPlan
	out     []fanout.Result[*anthropic.Message]
	start   time.Time
}

const (
	// createAttempts caps the tries of one batch's creation.
	createAttempts = 5
	// maxCreateWait caps the wait a server may ask for before a creation
	// is tried again, as fanout.RetryPolicy's MaxWait does by default: a
	// server asking for longer is taken at its word, and the try fails.
	maxCreateWait = 30 * time.Second
	// cancelTimeout bounds the request that cancels a batch once
	// RunBatch's context has ended.
	cancelTimeout = 30 * time.Second
)

func (b *batchRun) run(ctx context.Context) {
	id, err := b.create(ctx)
	switch {
	case err == nil: // created: from here on, ending ctx cancels it
	case ctx.Err() != nil:
		b.failAll(fmt.Errorf("%w before its batch was created: %w", ErrBatchCanceled, context.Cause(ctx)))
		return
	default:
		b.failAll(err)
		return
	}
	if err := b.await(ctx, id); err != nil {
		b.failAll(err)
		return
	}
	b.collect(ctx, id)
}

// create creates the batch and returns its id. A creation the server
// refused with a retryable error is tried again; any other failure is
// not, since the batch may have been created (a connection cut after the
// request was sent), and a second one would be paid twice.
func (b *batchRun) create(ctx context.Context) (string, error) {
	wait := b.backOff()
	opts := append([]option.RequestOption{option.WithMaxRetries(0)}, b.cfg.requests...)
	for attempt := 1; ; attempt++ {
		last := &lastAnswer{}
		batch, err := b.service.New(ctx, anthropic.MessageBatchNewParams{Requests: b.plan.requests}, last.watch(opts)...)
		if err == nil {
			return batch.ID, nil
		}
		err = last.classify(ctx, err)
		var apiErr *APIError
		if attempt == createAttempts || !errors.As(err, &apiErr) || !apiErr.Retry {
			return "", err
		}
		d := apiErr.Delay
		if d == 0 {
			d = wait.NextBackOff()
		}
		if d > maxCreateWait || sleep(ctx, d) != nil {
			return "", err
		}
	}
}

// await polls the batch until it ends. When ctx ends first, it cancels the
// batch on the server and returns the keys' error; a poll the server
// refuses for good (the batch is gone, the key revoked) ends it too.
func (b *batchRun) await(ctx context.Context, id string) error {
	wait := b.backOff()
	for {
		if sleep(ctx, wait.NextBackOff()) != nil {
			return b.cancel(ctx, id)
		}
		last := &lastAnswer{}
		batch, err := b.service.Get(ctx, id, anthropic.MessageBatchGetParams{}, last.watch(b.cfg.requests)...)
		switch {
		case ctx.Err() != nil:
			return b.cancel(ctx, id)
		case err != nil:
			if err = last.classify(ctx, err); !fanout.Retryable(err) {
				return fmt.Errorf("fanoutanthropic: polling batch %s: %w", id, err)
			}
		case batch.ProcessingStatus == anthropic.MessageBatchProcessingStatusEnded:
			return nil
		}
	}
}

// cancel cancels the batch on the server, once ctx has ended, and returns
// the error of its unanswered keys.
func (b *batchRun) cancel(ctx context.Context, id string) error {
	cctx, stop := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
	defer stop()
	cause := context.Cause(ctx)
	if _, err := b.service.Cancel(cctx, id, anthropic.MessageBatchCancelParams{}, b.cfg.requests...); err != nil {
		return fmt.Errorf("%w (batch %s, whose cancellation failed: %v): %w", ErrBatchCanceled, id, Classify(err), cause)
	}
	return fmt.Errorf("%w (batch %s): %w", ErrBatchCanceled, id, cause)
}

// collect reads the results of the ended batch into the keys' slots. A key
// the results leave out gets an error saying so. A line that is not a
// result (garbage from a proxy, a blank line) is skipped rather than
// ending the read, so that it costs no other key its answer.
func (b *batchRun) collect(ctx context.Context, id string) {
	slot := make(map[string]int, len(b.plan.index)) // custom_id → input position
	for j, req := range b.plan.requests {
		slot[req.CustomID] = b.plan.index[j]
	}
	var res *http.Response
	opts := append(slices.Clip(b.cfg.requests), option.WithResponseInto(&res))
	stream := b.service.ResultsStreaming(ctx, id, anthropic.MessageBatchResultsParams{}, opts...)
	defer stream.Close()
	bad, err := 0, stream.Err()
	if err == nil {
		bad, err = b.readResults(res.Body, id, slot)
	}
	missing := fmt.Errorf("fanoutanthropic: batch %s has no result for the key", id)
	switch {
	case ctx.Err() != nil:
		missing = fmt.Errorf("%w (batch %s, its results cut short): %w", ErrBatchCanceled, id, context.Cause(ctx))
	case err != nil:
		missing = fmt.Errorf("fanoutanthropic: reading the results of batch %s: %w", id, Classify(err))
	case bad > 0:
		missing = fmt.Errorf("fanoutanthropic: batch %s has no result for the key (%d lines of its results could not be read)", id, bad)
	}
	for _, i := range slot {
		b.fail(&b.out[i], missing)
	}
}

// maxResultLine bounds a line of the results, as the SDK's own reader does.
const maxResultLine = bufio.MaxScanTokenSize << 9

// readResults records each line of body whose custom_id is in slot, and
// takes it out of slot. It returns how many lines were not results, and
// the error that ended the read early, if any.
func (b *batchRun) readResults(body io.Reader, id string, slot map[string]int) (bad int, err error) {
	scan := bufio.NewScanner(body)
	scan.Buffer(nil, maxResultLine)
	for scan.Scan() {
		raw := bytes.TrimSpace(scan.Bytes())
		if len(raw) == 0 {
			continue
		}
		var line anthropic.MessageBatchIndividualResponse
		if json.Unmarshal(raw, &line) != nil {
			bad++
			continue
		}
		i, ok := slot[line.CustomID]
		if !ok {
			continue
		}
		delete(slot, line.CustomID)
		b.record(&b.out[i], id, line.Result)
	}
	return bad, scan.Err()
}

// record fills the Result of one request from its line of the results.
func (b *batchRun) record(r *fanout.Result[*anthropic.Message], id string, res anthropic.MessageBatchResultUnion) {
	switch res.Type {
	case "succeeded":
		msg := res.AsSucceeded().Message
		r.Value, r.Attempts = &msg, 1
		r.Cost = fanout.Cost{Tokens: int64(b.cfg.count(msg.Usage)), Cents: b.cfg.prices.cents(msg.Usage, 0.5)}
	case "errored":
		e := res.AsErrored().Error
		b.fail(r, batchError(e.Error.Type, e.Error.Message))
		r.Attempts = 1
	case "canceled":
		b.fail(r, fmt.Errorf("%w (batch %s)", ErrBatchCanceled, id))
	case "expired":
		b.fail(r, fmt.Errorf("%w (batch %s)", ErrBatchExpired, id))
	default:
		b.fail(r, fmt.Errorf("fanoutanthropic: batch %s: result of unknown type %q", id, res.Type))
	}
	r.Elapsed = time.Since(b.start)
}

func (b *batchRun) fail(r *fanout.Result[*anthropic.Message], err error) {
	r.Err, r.Elapsed = err, time.Since(b.start)
}

func (b *batchRun) failAll(err error) {
	for _, i := range b.plan.index {
		b.fail(&b.out[i], err)
	}
}

// backOff is the schedule of polls and of creation retries: from the
// first poll interval, ×1.5 with ±20% jitter, up to the longest.
func (b *batchRun) backOff() *backoff.ExponentialBackOff {
	e := backoff.NewExponentialBackOff()
	e.InitialInterval, e.MaxInterval = b.cfg.pollFirst, b.cfg.pollMax
	e.Multiplier, e.RandomizationFactor = 1.5, 0.2
	e.MaxElapsedTime = 0
	e.Reset()
	return e
}

// sleep waits for d, or until ctx ends, and then returns ctx's cause.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
