package fanout

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is a rate limiter: WaitN blocks until n units may be used, or
// returns an error if they cannot be before ctx ends. A *rate.Limiter from
// golang.org/x/time/rate fits, and is the usual choice. WaitN is called
// from many goroutines at once (every worker and hedged copy of every run
// sharing the limiter), so a Limiter must be safe for concurrent use.
//
// A limiter that reports its bucket size with a Burst() int method, as
// *rate.Limiter does, has every task's charge checked against it before
// the run starts. fanout waits on a *rate.Limiter (bare or in a
// [Throttle]) without ever cancelling a reservation: a wait that is
// abandoned keeps its tokens, because x/time/rate's cancellation can give
// back more than it took and so let the limit be exceeded.
type Limiter interface {
	WaitN(ctx context.Context, n int) error
}

type limiterUse struct {
	l        Limiter
	perToken bool   // charge Task.Tokens, not 1
	name     string // the option, for errors
	resource string // ForResource: only the tasks of this resource wait on it
}

// applies reports whether the tasks of resource wait on u.
func (u limiterUse) applies(resource string) bool { return u.resource == "" || u.resource == resource }

// charge is what one attempt of a task with the given Tokens waits for.
func (u limiterUse) charge(tokens int) int {
	if u.perToken && tokens > 0 {
		return tokens
	}
	return 1
}

// WithRateLimit makes every attempt, hedged copies and retries included,
// first wait on l, charged the task's Tokens (1 when zero): a
// tokens-per-minute budget of an LLM API. Pass the same limiter to several
// runs to share it; pass several options to wait on several limiters, in
// order. A task whose Tokens exceed the burst of l is refused before the
// run starts.
func WithRateLimit(l Limiter) Option {
	return func(c *config) {
		if isNil(l) {
			c.invalid("WithRateLimit(nil): limiter must not be nil")
			return
		}
		c.limiters = append(c.limiters, limiterUse{l: l, perToken: true, name: "WithRateLimit"})
	}
}

// WithRequestLimit is [WithRateLimit] charging 1 per attempt whatever the
// task's Tokens: a requests-per-minute budget, to use beside a
// tokens-per-minute one.
func WithRequestLimit(l Limiter) Option {
	return func(c *config) {
		if isNil(l) {
			c.invalid("WithRequestLimit(nil): limiter must not be nil")
			return
		}
		c.limiters = append(c.limiters, limiterUse{l: l, name: "WithRequestLimit"})
	}
}

// Throttle is a [Limiter] with a cooldown: after Pause(d), every WaitN
// waits until d has passed, both before and after it waits on the limiter
// it wraps, so that a task already queued in that limiter does not start
// during the cooldown. When an attempt gets a server-directed delay (an
// HTTP 429 with Retry-After), the run pauses each of the attempt's
// limiters (the run's own, and those [ForResource] gives its task's
// Resource) that has a Pause(time.Duration) method, as Throttle does, so
// that every task sharing one backs off, not only the one that was told
// to; and after every limiter an attempt waits on, it waits out again the
// cooldown of each of its limiters that says when it ends with an
// Until() time.Time method, as Throttle does. A plain *rate.Limiter has
// no cooldown: wrap it with NewThrottle to have one, and pass the same
// Throttle to every run that shares it.
//
// The waiters of a cooldown are released over a short window after it
// ends (a fifth of the pause, at most 5 s), not all in the same instant,
// so that they do not trip the server's limit again together. Tasks that
// had their limiter's tokens before the pause are among those waiters,
// so the window can see more starts than the wrapped limiter's rate
// alone would allow; a server that counts strictly per window wants the
// limiter set a little below its limit. A Throttle is safe for
// concurrent use.
type Throttle struct {
	l      Limiter
	mu     sync.Mutex
	until  time.Time
	spread time.Duration // the release window after until
}

// NewThrottle returns a Throttle over l. A nil l (or a nil pointer, such
// as a nil *rate.Limiter) gives a cooldown with no rate limit of its own.
func NewThrottle(l Limiter) *Throttle {
	if isNil(l) {
		l = nil
	}
	return &Throttle{l: l}
}

// isNil reports whether l is nil or a nil pointer, whose methods (those
// of *rate.Limiter, say) would panic mid-run.
func isNil(l Limiter) bool {
	v := reflect.ValueOf(l)
	return l == nil || v.Kind() == reflect.Pointer && v.IsNil()
}

// Pause makes WaitN wait until d from now has passed, unless an earlier
// Pause already reaches further.
func (t *Throttle) Pause(d time.Duration) {
	until := time.Now().Add(d)
	t.mu.Lock()
	if until.After(t.until) {
		t.until, t.spread = until, spread(d)
	}
	t.mu.Unlock()
}

// Until returns when the cooldown ends: a time in the past when none is
// in force. Its waiters are released over a short window after it.
func (t *Throttle) Until() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.until
}

// Limiter returns the limiter the Throttle wraps, nil if none.
func (t *Throttle) Limiter() Limiter { return t.l }

// WaitN waits out any cooldown, then waits on the underlying limiter, then
// waits out any cooldown that began meanwhile.
func (t *Throttle) WaitN(ctx context.Context, n int) error {
	if err := t.cool(ctx); err != nil {
		return err
	}
	if t.l != nil {
		if err := waitOn(ctx, t.l, n); err != nil {
			return err
		}
	}
	return t.cool(ctx)
}

// cool waits until no cooldown is in force, and reports whether it had to.
func (t *Throttle) cool(ctx context.Context) error {
	_, err := t.coolDown(ctx)
	return err
}

func (t *Throttle) coolDown(ctx context.Context) (waited bool, err error) {
	for {
		t.mu.Lock()
		left, window := time.Until(t.until), t.spread
		t.mu.Unlock()
		if left <= 0 {
			return waited, nil
		}
		if err := sleep(ctx, left+randUpTo(window)); err != nil {
			return waited, err
		}
		waited = true
	}
}

// spread is the window over which the attempts told to wait d come back:
// a fifth of d, at most 5 s.
func spread(d time.Duration) time.Duration { return min(d/5, 5*time.Second) }

// jitter is a random extra wait for a server-directed delay d, within
// spread(d), so that the tasks told to wait together do not all retry in
// the same instant.
func jitter(d time.Duration) time.Duration { return randUpTo(spread(d)) }

func randUpTo(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// waitOn waits for n units of l, never cancelling a *rate.Limiter's
// reservation (see waitRate).
func waitOn(ctx context.Context, l Limiter, n int) error {
	if rl, ok := l.(*rate.Limiter); ok {
		return waitRate(ctx, rl, n)
	}
	return l.WaitN(ctx, n)
}

// pauseFor pauses the Throttles that the tasks of resource wait on for
// the delay the server asked of err, if any; another resource's are not
// its server's to pause. A delay longer than any task would wait means
// giving up, not pausing: one exhausted quota must not stall the rest of
// the run.
func (r *run[T]) pauseFor(err error, resource string) {
	d := serverDelay(err)
	if d <= 0 || d > r.cfg.retry.maxWait() {
		return
	}
	for _, u := range r.cfg.limiters {
		if !u.applies(resource) {
			continue
		}
		if p, ok := u.l.(interface{ Pause(time.Duration) }); ok {
			p.Pause(d)
		}
	}
}

// waitLimiters waits on each of the run's limiters before the n-th
// attempt of t (or its hedged copy), and after each, on every Throttle's
// cooldown; it reports the time it took.
func (r *run[T]) waitLimiters(ctx context.Context, t Task[T], n int, hedge bool) (time.Duration, error) {
	if len(r.cfg.limiters) == 0 {
		return 0, nil
	}
	start := time.Now()
	var err error
	for _, u := range r.cfg.limiters {
		if !u.applies(t.Resource) {
			continue
		}
		tokens := u.charge(t.Tokens)
		if err = waitOn(ctx, u.l, tokens); err == nil {
			err = r.coolDowns(ctx, t.Resource)
		}
		if err != nil {
			err = r.refusal(ctx, u.l, tokens, err)
			break
		}
	}
	wait := time.Since(start)
	r.obs.limiterWait(ctx, WaitInfo{Key: t.Key, Attempt: n, Hedge: hedge, Wait: wait, Err: err})
	return wait, err
}

// coolDowns waits until none of the limiters the tasks of resource wait
// on is cooling down: a Throttle, or any limiter that says when its
// cooldown ends with an Until() time.Time method.
func (r *run[T]) coolDowns(ctx context.Context, resource string) error {
	for {
		waited := false
		for _, u := range r.cfg.limiters {
			if !u.applies(resource) {
				continue
			}
			w, err := coolDown(ctx, u.l)
			if err != nil {
				return err
			}
			waited = waited || w
		}
		if !waited {
			return nil
		}
	}
}

func coolDown(ctx context.Context, l Limiter) (waited bool, err error) {
	switch l := l.(type) {
	case *Throttle:
		return l.coolDown(ctx)
	case interface{ Until() time.Time }:
		left := time.Until(l.Until())
		if left <= 0 {
			return false, nil
		}
		return true, sleep(ctx, left+randUpTo(spread(left)))
	}
	return false, nil
}

var errRateLimiter = errors.New("fanout: rate limiter")

// refusal names why a limiter refused a wait: the run's stop, if it has
// stopped; or its deadline, if the limiter refused at once a wait that
// would have outlasted it (a *rate.Limiter does), ErrRunTimeout when the
// deadline is the run's own. A lazy source is then no longer pulled: the
// tasks behind would be refused the same way, as fast as it can yield
// them.
func (r *run[T]) refusal(ctx context.Context, l Limiter, n int, err error) error {
	err = wrap(errRateLimiter, ": ", err)
	switch {
	case ctx.Err() != nil:
		if cause := context.Cause(ctx); !errors.Is(err, cause) {
			err = wrap(cause, ": ", err)
		}
	case r.refusedForDeadline(ctx, l, n):
		r.halt()
		err = wrap(r.deadlineCause, ": ", err)
	}
	return err
}

func (r *run[T]) refusedForDeadline(ctx context.Context, l Limiter, n int) bool {
	if _, ok := ctx.Deadline(); !ok {
		return false
	}
	burst, ok := burstOf(l)
	return ok && n <= burst
}

// burstOf returns the bucket size of l, if it reports one.
func burstOf(l Limiter) (int, bool) {
	switch l := l.(type) {
	case *rate.Limiter:
		return l.Burst(), l.Limit() != rate.Inf
	case *Throttle:
		if l.l == nil {
			return 0, false
		}
		return burstOf(l.l)
	case interface{ Burst() int }:
		return l.Burst(), true
	case interface{ Limiter() Limiter }: // a wrapper, like Throttle
		if inner := l.Limiter(); inner != nil {
			return burstOf(inner)
		}
	}
	return 0, false
}

// checkCharges refuses, before any task starts, a task whose charge on a
// limiter exceeds what the limiter's bucket can ever hold.
func (c *config) checkCharges(key, resource string, tokens int) error {
	for _, u := range c.limiters {
		if !u.applies(resource) {
			continue
		}
		if burst, ok := burstOf(u.l); ok && u.charge(tokens) > burst {
			return fmt.Errorf("fanout: task %q: charge of %d exceeds the burst %d of the limiter of %s",
				key, u.charge(tokens), burst, u.name)
		}
	}
	return nil
}
