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
// waiting on them.
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

// heldSlot marks a task's context as holding a slot of a Semaphore.
type heldSlot struct{ sem *Semaphore }

// semGate hands out a run's slots: the shared semaphore's, plus the slot
// the calling task holds when the run is nested inside one of its tasks.
type semGate struct {
	sem      *Semaphore
	borrowed chan struct{} // nil unless nested; holds the caller's slot when free
}

func newSemGate(ctx context.Context, s *Semaphore) *semGate {
	g := &semGate{sem: s}
	if ctx.Value(heldSlot{s}) != nil {
		g.borrowed = make(chan struct{}, 1)
		g.borrowed <- struct{}{}
	}
	return g
}

// acquire waits for a slot and reports whether it was the borrowed one.
func (g *semGate) acquire(ctx context.Context) (borrowed bool, err error) {
	select {
	case g.sem.slots <- struct{}{}:
		return false, nil
	case <-g.borrowed:
		return true, nil
	case <-ctx.Done():
		return false, context.Cause(ctx)
	}
}

func (g *semGate) release(borrowed bool) {
	if borrowed {
		g.borrowed <- struct{}{}
		return
	}
	<-g.sem.slots
}
