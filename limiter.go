package fanout

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is a rate limiter: WaitN blocks until n units may be used, or
// returns an error if they cannot be before ctx ends. A *rate.Limiter from
// golang.org/x/time/rate fits, and is the usual choice.
type Limiter interface {
	WaitN(ctx context.Context, n int) error
}

type limiterUse struct {
	l        Limiter
	perToken bool // charge Task.Tokens, not 1
}

// WithRateLimit makes every attempt, hedged copies and retries included,
// first wait on l, charged the task's Tokens (1 when zero): a
// tokens-per-minute budget of an LLM API. Pass the same limiter to several
// runs to share it; pass several options to wait on several limiters.
func WithRateLimit(l Limiter) Option {
	return func(c *config) {
		if l == nil {
			c.invalid("WithRateLimit(nil): limiter must not be nil")
			return
		}
		c.limiters = append(c.limiters, limiterUse{l: l, perToken: true})
	}
}

// WithRequestLimit is [WithRateLimit] charging 1 per attempt whatever the
// task's Tokens: a requests-per-minute budget, to use beside a
// tokens-per-minute one.
func WithRequestLimit(l Limiter) Option {
	return func(c *config) {
		if l == nil {
			c.invalid("WithRequestLimit(nil): limiter must not be nil")
			return
		}
		c.limiters = append(c.limiters, limiterUse{l: l})
	}
}

// Throttle is a [Limiter] with a cooldown: after Pause(d), every WaitN
// first waits until d has passed. When an attempt gets a server-directed
// delay (an HTTP 429 with Retry-After), the run pauses each of its
// limiters that has a Pause(time.Duration) method, as Throttle does, so
// that every task sharing the limiter backs off, not only the one that was
// told to. A plain *rate.Limiter has no cooldown: wrap it with NewThrottle
// to have one, and pass the same Throttle to every run that shares it.
// A Throttle is safe for concurrent use.
type Throttle struct {
	l     Limiter
	mu    sync.Mutex
	until time.Time
}

// NewThrottle returns a Throttle over l. A nil l gives a cooldown with no
// rate limit of its own.
func NewThrottle(l Limiter) *Throttle { return &Throttle{l: l} }

// Pause makes WaitN wait until d from now has passed, unless an earlier
// Pause already reaches further.
func (t *Throttle) Pause(d time.Duration) {
	until := time.Now().Add(d)
	t.mu.Lock()
	if until.After(t.until) {
		t.until = until
	}
	t.mu.Unlock()
}

// WaitN waits out any cooldown, then waits on the underlying limiter.
func (t *Throttle) WaitN(ctx context.Context, n int) error {
	for {
		t.mu.Lock()
		wait := time.Until(t.until)
		t.mu.Unlock()
		if wait <= 0 {
			break
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
	if t.l == nil {
		return nil
	}
	return t.l.WaitN(ctx, n)
}

// pauser is a limiter with a cooldown, such as *Throttle.
type pauser interface{ Pause(time.Duration) }

func (r *run[T]) pauseLimiters(d time.Duration) {
	for _, u := range r.cfg.limiters {
		if p, ok := u.l.(pauser); ok {
			p.Pause(d)
		}
	}
}

// waitLimiters waits on each of the run's limiters before the n-th
// attempt of t and reports the time it took.
func (r *run[T]) waitLimiters(ctx context.Context, t Task[T], n int, res *Result[T]) (time.Duration, error) {
	wait, err := r.limiterWait(ctx, t, n, false)
	res.LimiterWait += wait
	return wait, err
}

func (r *run[T]) limiterWait(ctx context.Context, t Task[T], n int, hedge bool) (time.Duration, error) {
	if len(r.cfg.limiters) == 0 {
		return 0, nil
	}
	start := time.Now()
	var err error
	for _, u := range r.cfg.limiters {
		tokens := 1
		if u.perToken && t.Tokens > 0 {
			tokens = t.Tokens
		}
		if err = u.l.WaitN(ctx, tokens); err != nil {
			err = fmt.Errorf("fanout: rate limiter: %w", r.limiterCause(ctx, u.l, tokens, err))
			break
		}
	}
	wait := time.Since(start)
	r.obs.limiterWait(ctx, WaitInfo{Key: t.Key, Attempt: n, Hedge: hedge, Wait: wait, Err: err})
	return wait, err
}

// limiterCause names why a limiter refused a wait. A *rate.Limiter (bare
// or in a Throttle) refuses at once, before ctx ends, a wait that would
// outlast ctx's deadline: then the error also matches the deadline's
// cause, ErrRunTimeout when it is the run's own.
func (r *run[T]) limiterCause(ctx context.Context, l Limiter, n int, err error) error {
	if ctx.Err() != nil {
		return withCause(ctx, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		return err
	}
	if rl, ok := rateLimiter(l); ok && n <= rl.Burst() {
		return fmt.Errorf("%w: %w", r.deadlineCause, err)
	}
	return err // not a *rate.Limiter, or more than its bucket holds
}

func rateLimiter(l Limiter) (*rate.Limiter, bool) {
	switch l := l.(type) {
	case *rate.Limiter:
		return l, true
	case *Throttle:
		return rateLimiter(l.l)
	}
	return nil, false
}
