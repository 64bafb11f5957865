package fanout

import (
	"context"
	"errors"
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
