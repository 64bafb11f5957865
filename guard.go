package fanout

import (
	"context"
	"time"
)

// Guard is consulted right before each attempt, after the rate limiters
// and the budget, and told how the attempt ended: the place for an
// adaptive concurrency limit, a retry budget or a circuit breaker. A Guard
// is shared by every run it is given to, so it must be safe for concurrent
// use.
type Guard interface {
	// Admit lets the attempt a start, waiting while it must (until ctx
	// ends), and returns the function the run calls once with the
	// attempt's outcome. An error refuses the attempt: it becomes the
	// key's error, with its last attempt's, and the key is not retried.
	Admit(ctx context.Context, a Admission) (done func(Outcome), err error)
}

// Admission describes an attempt asking a Guard to start.
type Admission struct {
	Key     string
	Attempt int  // 1 for the first try, 2 for the first retry, ...
	Hedge   bool // a hedged copy of the attempt
}

// Outcome is how an admitted attempt ended.
type Outcome struct {
	Err     error
	Elapsed time.Duration
	// Started is false when the attempt never called Do: a later guard,
	// or a cooldown that began while it waited, refused it. The run then
	// reports no Elapsed either, and this package's guards count such an
	// attempt neither way. Code that ends an admitted attempt itself
	// should set Started, or a non-zero Elapsed, for a call that ran.
	Started bool
}

// WithGuard makes every attempt of the run, retries and hedged copies
// included, pass g right before its call. Several guards are passed in
// order; an attempt refused by one is not shown to the rest.
func WithGuard(g Guard) Option {
	return func(c *config) {
		if g == nil {
			c.invalid("WithGuard(nil): guard must not be nil")
			return
		}
		c.guards = append(c.guards, g)
	}
}

// admit passes the run's guards in order, adding the done function of
// each to dones. On a refusal it tells those already passed that the
// attempt never started, and empties dones.
func (r *run[T]) admit(ctx context.Context, a Admission, dones *[]func(Outcome)) error {
	*dones = make([]func(Outcome), 0, len(r.cfg.guards))
	for _, g := range r.cfg.guards {
		done, err := g.Admit(ctx, a)
		if err != nil {
			tell(*dones, Outcome{Err: err})
			*dones = nil
			return err
		}
		*dones = append(*dones, done)
	}
	return nil
}

// tell calls each done with o, once.
func tell(dones []func(Outcome), o Outcome) {
	for _, done := range dones {
		if done != nil {
			done(o)
		}
	}
}
