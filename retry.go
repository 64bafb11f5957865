package fanout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// RetryPolicy says when and how long to wait before trying a failed task
// again. The zero value retries up to 3 attempts with exponential backoff
// starting at 100 ms, doubling, ±50% jitter, each wait at most 30 s.
type RetryPolicy struct {
	// MaxAttempts caps the tries of one task, the first included; hedged
	// copies are not counted. Zero means 3.
	MaxAttempts int
	// InitialInterval is the first wait; zero means 100 ms.
	InitialInterval time.Duration
	// Multiplier grows each wait from the last; zero means 2.
	Multiplier float64
	// Jitter randomises each wait by ±Jitter of itself; zero means 0.5,
	// a negative value means none.
	Jitter float64
	// MaxWait caps a single wait; zero means 30 s. A server-directed delay
	// longer than MaxWait ends the retries at once: trying sooner than the
	// server asked would only be refused again.
	MaxWait time.Duration
	// RetryIf reports whether an error is worth another try. Nil means
	// [Retryable].
	RetryIf func(error) bool
	// NewBackOff, if set, makes the wait schedule for one task in place of
	// the exponential one above; it is called once per task, since a
	// backoff.BackOff is not safe for concurrent use.
	NewBackOff func() backoff.BackOff
}

// WithRetry retries failed attempts as p says. A wait never outlives the
// run's context: when the context ends mid-wait, the key's error joins the
// context's cause and the last attempt's error. An error that has a
// RetryAfter() time.Duration method with a positive result (see
// [CheckResponse]) sets the next wait in place of the backoff; it does not
// advance the backoff schedule. With or without WithRetry, such an error
// also pauses the run's [Throttle] limiters for everyone for that delay,
// unless it is longer than MaxWait (30 s without WithRetry): then the task
// gives up instead and nobody pauses.
func WithRetry(p RetryPolicy) Option {
	return func(c *config) {
		switch {
		case p.MaxAttempts < 0:
			c.invalid("WithRetry: negative MaxAttempts %d", p.MaxAttempts)
		case p.InitialInterval < 0 || p.MaxWait < 0:
			c.invalid("WithRetry: negative interval")
		case p.Multiplier != 0 && p.Multiplier < 1:
			c.invalid("WithRetry: Multiplier %v is below 1", p.Multiplier)
		default:
			c.retry = &p
		}
	}
}

func (p *RetryPolicy) maxAttempts() int {
	if p.MaxAttempts == 0 {
		return 3
	}
	return p.MaxAttempts
}

func (p *RetryPolicy) maxWait() time.Duration {
	if p == nil || p.MaxWait == 0 {
		return 30 * time.Second
	}
	return p.MaxWait
}

func (p *RetryPolicy) newBackOff() backoff.BackOff {
	if p.NewBackOff != nil {
		return p.NewBackOff()
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = cmpOr(p.InitialInterval, 100*time.Millisecond)
	b.Multiplier = cmpOr(p.Multiplier, 2)
	b.RandomizationFactor = cmpOr(p.Jitter, 0.5)
	if p.Jitter < 0 {
		b.RandomizationFactor = 0
	}
	b.MaxInterval = p.maxWait()
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

func cmpOr[V comparable](v, def V) V {
	var zero V
	if v == zero {
		return def
	}
	return v
}

func (p *RetryPolicy) retryable(err error) bool {
	if p.RetryIf != nil {
		return p.RetryIf(err)
	}
	return Retryable(err)
}

// Retryable is the default RetryIf of [RetryPolicy]: it reports false for
// a permanent error (backoff.Permanent, or a 4xx response from
// [CheckResponse] other than 408, 425 and 429), a panic, and the run's own
// cancellation or timeout, and true for anything else, a per-attempt
// timeout included. A RetryIf can call it to refine it.
func Retryable(err error) bool {
	var perm *backoff.PermanentError
	var panicked *PanicError
	switch {
	case errors.As(err, &perm), errors.As(err, &panicked):
		return false
	case errors.Is(err, ErrTaskTimeout):
		return true
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, ErrRunTimeout)
}

// nextWait returns how long to wait before the next attempt, whether the
// server chose it, and false if there should be no next attempt.
func (p *RetryPolicy) nextWait(b backoff.BackOff, err error) (wait time.Duration, server bool, ok bool) {
	if d := serverDelay(err); d > 0 {
		return d, true, d <= p.maxWait()
	}
	d := b.NextBackOff()
	if d == backoff.Stop {
		return 0, false, false
	}
	return min(d, p.maxWait()), false, true
}

// serverDelay is the delay an error asks for through a RetryAfter method.
func serverDelay(err error) time.Duration {
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		return ra.RetryAfter()
	}
	return 0
}

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
