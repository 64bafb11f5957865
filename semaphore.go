package fanout

import (
	"context"
	"fmt"
)

// Semaphore caps the tasks in flight across runs, for a quota that belongs
// to the process rather than to one run. Pass the same Semaphore to each
// run with [WithSemaphore]. A Semaphore is safe for concurrent use.
//
// A task holding a slot may itself call Run with the same Semaphore: the
// nested run borrows its caller's slot for one task at a time, so nested
// fan-outs always make progress even when every slot is held by callers
// waiting on them. A slot is a task's, not a call's: a hedged task's
// attempt and its copy run under its one slot.
//
// Make one with NewSemaphore: the zero Semaphore has no slots, and
// WithSemaphore refuses it.
type Semaphore struct {
	slots chan struct{}
}

// NewSemaphore returns a Semaphore with n slots. It panics if n < 1.
func NewSemaphore(n int) *Semaphore {
	if n < 1 {
		panic(fmt.Sprintf("fanout: NewSemaphore(%d): n must be positive", n))
	}
	return &Semaphore{slots: make(chan struct{}, n)}
}

// Cap returns the number of slots.
func (s *Semaphore) Cap() int { return cap(s.slots) }

// InUse returns the number of slots held right now.
func (s *Semaphore) InUse() int { return len(s.slots) }

// A task holding a slot of a Semaphore lends it to the runs nested in
// it, one of their tasks at a time: each worker keeps a lease, a channel
// holding one token while its slot is free to borrow. However many runs
// are nested below a task, in however many goroutines or hedged copies,
// they share that one token, so the tasks in flight never exceed the
// slots.

// lease returns the lease of the innermost task under ctx that holds a
// slot of s, or nil if none does.
func lease(ctx context.Context, s *Semaphore) chan struct{} {
	for sc, _ := ctx.Value(scopeKey{}).(*scope); sc != nil; sc = sc.parent {
		if sc.sem == s {
			return sc.lease
		}
	}
	return nil
}

// acquire waits for a slot of s, or for the lease of the task the run is
// nested in (nil if none), and returns how to give it back.
func (s *Semaphore) acquire(ctx context.Context, borrow chan struct{}) (release func(), err error) {
	select {
	case s.slots <- struct{}{}:
		return s.release, nil
	case <-borrow:
		return func() { borrow <- struct{}{} }, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (s *Semaphore) release() { <-s.slots }
