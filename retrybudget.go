package fanout

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// ErrRetryBudgetExceeded is the error of an attempt a [RetryBudget]
// refused. The key fails with it and its last attempt's error.
var ErrRetryBudgetExceeded = errors.New("fanout: retry budget exceeded")

// RetryBudget is a [Guard] that lets retries and hedged copies through
// only while they stay within a share of the first attempts made lately,
// so that a failing dependency is not hit with MaxAttempts times its load
// just when it can least take it. First attempts always pass. A retry or
// a hedged copy passes while the retries and copies let through in the
// last 10 seconds stay within ratio × the first attempts of those 10
// seconds, or within minPerSecond × 10 when that is more, for the quiet
// times (the window moves in whole seconds): the floor is a minimum, not
// an addition, so that under load retries stay within ratio of the
// traffic; otherwise it is
// refused with [ErrRetryBudgetExceeded], and its key fails at once with
// its last attempt's error. Finagle's default is 20% and 10 retries a
// second: NewRetryBudget(0.2, 10).
//
// Pass the same RetryBudget with [WithGuard] to every run that calls one
// dependency, beside [WithRetry] or [WithHedge]. A RetryBudget is safe for
// concurrent use. It keeps its window in ten one-second slots, so its
// memory does not grow with the traffic; Admit costs one mutex
// acquisition and a pass over the slots.
type RetryBudget struct {
	ratio float64
	floor float64 // retries the window always allows
	start time.Time

	mu    sync.Mutex
	slots [budgetSlots]budgetSlot
}

// The window of a RetryBudget: budgetSlots slots of budgetSlotWidth.
const (
	budgetSlots     = 10
	budgetSlotWidth = time.Second
)

// budgetSlot counts the attempts of one second.
type budgetSlot struct {
	at      int64 // the second since start it counts
	firsts  int
	retries int
}

// NewRetryBudget returns a RetryBudget that lets retries and hedged
// copies make up ratio of the first attempts of the last 10 seconds, and
// at least minPerSecond a second. It panics if either is negative or not a number.
func NewRetryBudget(ratio, minPerSecond float64) *RetryBudget {
	if !(ratio >= 0) || !(minPerSecond >= 0) || math.IsInf(ratio, 1) || math.IsInf(minPerSecond, 1) {
		panic(fmt.Sprintf("fanout: NewRetryBudget(%v, %v): ratio and minPerSecond must be finite and not negative", ratio, minPerSecond))
	}
	window := budgetSlots * budgetSlotWidth
	return &RetryBudget{ratio: ratio, floor: minPerSecond * window.Seconds(), start: time.Now()}
}

// Admit counts a first attempt and lets it through; it lets a retry or a
// hedged copy through if the budget allows one more, and refuses it with
// ErrRetryBudgetExceeded otherwise. It never waits.
func (b *RetryBudget) Admit(ctx context.Context, a Admission) (func(Outcome), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	slot := b.slot(now)
	if a.Attempt <= 1 && !a.Hedge {
		slot.firsts++
		return nil, nil
	}
	firsts, retries := b.sum(now)
	if float64(retries+1) > b.allowed(firsts) {
		return nil, ErrRetryBudgetExceeded
	}
	slot.retries++
	return func(o Outcome) { b.refund(ctx, now, o) }, nil
}

// Available returns how many retries the budget would let through now.
func (b *RetryBudget) Available() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	firsts, retries := b.sum(b.now())
	return max(0, int(math.Floor(b.allowed(firsts)))-retries)
}

// refund gives back the retry admitted in second at if it was never
// made: a guard after this one refused it, or the run ended while it
// waited in one.
func (b *RetryBudget) refund(ctx context.Context, at int64, o Outcome) {
	if !neverStarted(o) && !(o.Elapsed == 0 && ctx.Err() != nil) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := &b.slots[at%budgetSlots]; s.at == at && s.retries > 0 {
		s.retries--
	}
}

// now is the second since the budget was made.
func (b *RetryBudget) now() int64 { return int64(time.Since(b.start) / budgetSlotWidth) }

// slot returns the slot of second now, emptied if it last counted an
// older second.
func (b *RetryBudget) slot(now int64) *budgetSlot {
	s := &b.slots[now%budgetSlots]
	if s.at != now {
		*s = budgetSlot{at: now}
	}
	return s
}

// sum totals the slots of the window that ends with second now.
func (b *RetryBudget) sum(now int64) (firsts, retries int) {
	for _, s := range b.slots {
		if now-s.at < budgetSlots {
			firsts += s.firsts
			retries += s.retries
		}
	}
	return firsts, retries
}

// allowed is how many retries and copies the window allows beside firsts
// first attempts.
func (b *RetryBudget) allowed(firsts int) float64 { return max(b.ratio*float64(firsts), b.floor) }
