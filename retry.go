package fanout

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// BackOff is a wait schedule for the retries of one task, as
// [RetryPolicy.NewBackOff] makes it. NextBackOff returns the wait before
// the next attempt, or a negative duration to stop retrying (backoff.Stop,
// which is -1 in both github.com/cenkalti/backoff v4 and v5); Reset starts
// the schedule over. The BackOff of backoff v4 and of v5 both satisfy it,
// e.g. a *backoff.ExponentialBackOff of either. One task uses a BackOff at
// a time, so it need not be safe for concurrent use.
type BackOff interface {
	NextBackOff() time.Duration
	Reset()
}

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
	// Jitter randomises each backoff wait by ±Jitter of itself; zero
	// means 0.5. A wait the server directed is never shortened: it is
	// lengthened by a random spread of up to a fifth of itself (at most
	// 5 s), so that the tasks told to wait together do not all come back
	// in the same instant. A negative Jitter means no randomness at all;
	// above 1, a wait it would make negative is no wait at all.
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
	// BackOff need not be safe for concurrent use.
	NewBackOff func() BackOff
}

// WithRetry retries failed attempts as p says. A wait never outlives the
// run's context: when the context ends mid-wait, the key's error joins the
// context's cause and the last attempt's error. An error that asks for a
// delay, through a RetryAfter() time.Duration method with a positive
// result (see [CheckResponse]) or as backoff v5's *RetryAfterError, sets
// the next wait in place of the backoff; it does not advance the backoff
// schedule. With or without WithRetry, such an error also pauses the run's
// [Throttle] limiters for everyone for that delay, unless it is longer
// than MaxWait (30 s without WithRetry): then the task gives up instead
// and nobody pauses. A task waiting to retry keeps its place under
// WithLimit, WithSemaphore and WithResourceLimit, as errgroup's Go would:
// a wait slows the run down rather than letting another task start.
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

func (p *RetryPolicy) newBackOff() BackOff {
	if p.NewBackOff != nil {
		return p.NewBackOff()
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = cmp.Or(p.InitialInterval, 100*time.Millisecond)
	b.Multiplier = cmp.Or(p.Multiplier, 2)
	b.RandomizationFactor = cmp.Or(p.Jitter, 0.5)
	if p.Jitter < 0 {
		b.RandomizationFactor = 0
	}
	b.MaxInterval = p.maxWait()
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

func (p *RetryPolicy) retryable(err error) bool {
	if p.RetryIf != nil {
		return p.RetryIf(err)
	}
	return Retryable(err)
}

// Retryable is the default RetryIf of [RetryPolicy]. A RetryIf can call
// it to refine it. It decides by the first rule that fits err:
//
//   - a permanent error, from backoff.Permanent of backoff v4 or v5, is
//     not retried;
//   - a panic ([*PanicError]) or a Goexit ([ErrGoexit]) is not retried;
//   - a per-attempt timeout ([ErrTaskTimeout]) is retried;
//   - a cancellation (context.Canceled) or the run's timeout
//     ([ErrRunTimeout]) is not retried; a deadline the task's own client
//     set (context.DeadlineExceeded) is, like a per-attempt timeout —
//     whatever the error, no retry starts once the run's context has
//     ended;
//   - an error that says so itself, with a Retryable() bool method (an
//     SDK adapter that read the server's x-should-retry, say), is retried
//     as it says; the first such error in the chain decides;
//   - an error that carries an HTTP status is retried as the table below
//     says;
//   - anything else is retried.
//
// An error carries an HTTP status if it, or any error it wraps (through
// Unwrap() error or Unwrap() []error, as [errors.As] sees them), is an
// [*HTTPError], has a StatusCode() int method, or is a struct (or pointer
// to one) with an exported StatusCode int field or Response *http.Response
// field, as the errors of many SDKs are. The first such error in the
// chain decides:
//
//	status                         retried
//	408, 409, 425, 429             yes: timeout, conflict, too early, rate limit
//	any other 4xx                  no: another try cannot fix the request
//	5xx                            yes
//	below 400, or outside 100–599  as if the error carried no status
func Retryable(err error) bool {
	var perm *backoff.PermanentError
	var panicked *PanicError
	switch {
	case errors.As(err, &perm), isV5Permanent(err), errors.As(err, &panicked), errors.Is(err, ErrGoexit):
		return false
	case errors.Is(err, ErrTaskTimeout):
		return true
	case errors.Is(err, context.Canceled), errors.Is(err, ErrRunTimeout):
		return false
	}
	var says interface{ Retryable() bool }
	if errors.As(err, &says) {
		return says.Retryable()
	}
	if code, ok := httpStatus(err); ok && code >= 400 {
		return retryableStatus(code)
	}
	return true
}

// nextWait returns how long to wait before the next attempt, whether the
// server chose it, and false if there should be no next attempt.
func (p *RetryPolicy) nextWait(b BackOff, err error) (wait time.Duration, server bool, ok bool) {
	if d := serverDelay(err); d > 0 {
		return d, true, d <= p.maxWait()
	}
	d := b.NextBackOff()
	if d < 0 && p.NewBackOff != nil {
		return 0, false, false
	}
	// The exponential schedule never stops (MaxAttempts does), but a
	// Jitter above 1 can draw a wait below zero.
	return min(max(d, 0), p.maxWait()), false, true
}

// serverDelay is the delay asked for by the first error in err's chain
// that asks for one: through a RetryAfter() time.Duration method, or as a
// backoff v5 *RetryAfterError.
func serverDelay(err error) (d time.Duration) {
	inChain(err, func(e error) bool {
		var ok bool
		d, ok = delayOf(e)
		return ok
	})
	return d
}

// delayOf reads the delay e itself asks for, not what it wraps.
func delayOf(e error) (time.Duration, bool) {
	if ra, ok := e.(interface{ RetryAfter() time.Duration }); ok && !isNilPointer(e) {
		return ra.RetryAfter(), true
	}
	return v5RetryAfter(e)
}
