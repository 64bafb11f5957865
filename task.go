package fanout

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// attempts runs t on worker w until it succeeds, its retries run out, or
// the run stops.
func (r *run[T]) attempts(w *worker[T], t Task[T], res *Result[T]) {
	var ctx context.Context = w
	policy := r.cfg.retry
	var b backoff.BackOff
	for n := 1; ; n++ {
		wait, err := r.waitLimiters(ctx, t, n, res)
		if err != nil {
			res.Err = withLast(err, res.Err)
			return
		}
		v, err := r.attempt(w, t, AttemptInfo{Key: t.Key, Attempt: n, LimiterWait: wait}, res)
		if err == nil {
			res.Value, res.Err = v, nil
			return
		}
		res.Err = err
		if d := serverDelay(err); d > 0 && d <= policy.maxWait() {
			// The server's word holds for everyone sharing the limiters,
			// whether or not this task retries. A delay longer than any
			// task would wait means giving up, not pausing: one exhausted
			// quota must not stall the rest of the run.
			r.pauseLimiters(d)
		}
		if policy == nil || n >= policy.maxAttempts() || ctx.Err() != nil || !policy.retryable(err) {
			return
		}
		if b == nil {
			b = policy.newBackOff()
		}
		wait, server, ok := policy.nextWait(b, err)
		if !ok {
			return
		}
		r.obs.retry(ctx, RetryInfo{Key: t.Key, Attempt: n, Wait: wait, ServerDirected: server, Err: err})
		if err := sleep(ctx, wait); err != nil {
			res.Err = withLast(err, res.Err)
			return
		}
	}
}

// withLast joins the reason a task stopped waiting with the error of its
// last attempt, which backoff alone would lose.
func withLast(stop, last error) error {
	if last == nil {
		return stop
	}
	return fmt.Errorf("%w; last attempt: %w", stop, last)
}

// attempt makes one try of t, hedged if the run hedges.
func (r *run[T]) attempt(w *worker[T], t Task[T], info AttemptInfo, res *Result[T]) (T, error) {
	res.Attempts++
	if r.hedger != nil {
		return r.hedged(w, t, info, res)
	}
	return r.try(w, t, info, w.deadlines)
}

// try makes one call of t under the per-attempt deadline, armed with dl
// when the attempt runs alone on its worker.
func (r *run[T]) try(ctx context.Context, t Task[T], info AttemptInfo, dl *deadlines) (T, error) {
	ctx = r.obs.attemptStart(ctx, info)
	timed := r.obs != nil
	var start time.Duration
	if timed {
		start = monotime()
	}
	actx := ctx
	if d := r.cfg.taskTimeout; d > 0 {
		// The fast deadline needs the run to be the only thing that can
		// cancel ctx; an observer's context of values keeps that true.
		if dl != nil && ctx.Done() == r.ctx.Done() {
			actx = dl.begin(&r.clock, r.ctx, ctx, d)
			defer dl.finish()
		} else {
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeoutCause(ctx, d, ErrTaskTimeout)
			defer cancel()
		}
	}
	v, err := call(actx, t)
	if timed {
		info.Elapsed, info.Err = monotime()-start, err
		r.obs.attemptDone(ctx, info)
	}
	return v, err
}

// sleep waits for d or until ctx ends, and then returns ctx's cause.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
