package fanout

import (
	"fmt"
	"time"
)

// An Option configures a run. Options are plain values: one built once may
// be passed to any number of runs.
type Option func(*config)

type config struct {
	limit          int
	sem            *Semaphore
	taskTimeout    time.Duration
	timeout        time.Duration
	failFast       bool
	retry          *RetryPolicy
	limiters       []limiterUse
	hedge          *HedgePolicy
	budget         Cost
	observers      []*Observer
	guards         []Guard
	journal        Journal
	codec          Codec
	queue          int            // Group: tasks waiting beyond which TryGo refuses
	ordered        bool           // Stream, StreamSeq: yield in input order
	perResource    int            // WithResourceLimit
	resourceLimits map[string]int // ForResource(name, WithLimit(n))
	errs           []error        // bad option values, reported by Run
}

func (c *config) invalid(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("fanout: "+format, args...))
}

func newConfig(opts []Option) *config {
	c := &config{}
	for _, opt := range opts {
		if opt == nil {
			c.invalid("nil Option")
			continue
		}
		opt(c)
	}
	return c
}

// WithLimit runs at most n tasks of the run at once. Zero, the default,
// means no limit: every task starts at once.
func WithLimit(n int) Option {
	return func(c *config) {
		if n < 0 {
			c.invalid("WithLimit(%d): limit must not be negative", n)
			return
		}
		c.limit = n
	}
}

// WithSemaphore caps the tasks in flight across every run that shares s,
// as well as any WithLimit of this run. A task that itself calls Run with
// the same semaphore does not deadlock: the nested run may use the slot
// its calling task holds, for one of its tasks at a time, so it always
// makes progress. However many runs are nested below that task (several
// in turn or at once, under runs without s, in hedged copies), they share
// that one slot, so the cap holds at every depth. A zero Semaphore, which
// has no slots, is refused.
func WithSemaphore(s *Semaphore) Option {
	return func(c *config) {
		switch {
		case s == nil:
			c.invalid("WithSemaphore(nil): semaphore must not be nil")
			return
		case s.Cap() == 0:
			c.invalid("WithSemaphore: a zero Semaphore has no slots; make it with NewSemaphore")
			return
		}
		c.sem = s
	}
}

// WithTaskTimeout gives each attempt of each task its own deadline of d:
// its context is made by context.WithTimeoutCause(ctx, d, ErrTaskTimeout).
// An attempt that returns its context's error (or a context derived from
// it, or an error wrapping either) once the deadline has passed fails with
// an error matching both [ErrTaskTimeout] and context.DeadlineExceeded.
// A task that ignores its context is still waited for, and keeps its
// value if it returns one without error.
func WithTaskTimeout(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.invalid("WithTaskTimeout(%v): timeout must not be negative", d)
			return
		}
		c.taskTimeout = d
	}
}

// WithTimeout bounds the whole run by d, counted from the call, before
// any Observer's RunStart. When it passes, running tasks are cancelled
// with cause [ErrRunTimeout] and tasks not yet started are skipped.
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.invalid("WithTimeout(%v): timeout must not be negative", d)
			return
		}
		c.timeout = d
	}
}

// WithFailFast stops the run at the first failed key, as errgroup does:
// running tasks are cancelled with that key's *TaskError as the cause and
// tasks not yet started are skipped. A key skipped (for the budget, say)
// is not a failure that stops the run. By default a run collects every
// key's outcome.
func WithFailFast() Option {
	return func(c *config) { c.failFast = true }
}

// WithOrdered makes [Stream] and [StreamSeq] yield the Results in input
// (or source) order while the tasks still run concurrently. A task that
// ends before those ahead of it waits in a window of as many Results as
// the run has workers (its limit), and no task starts beyond the window,
// so memory stays bounded by the limit; one slow task holds back the
// yields, and the starts, behind it. Priority is ignored. Other entry
// points ignore the option.
func WithOrdered() Option {
	return func(c *config) { c.ordered = true }
}
