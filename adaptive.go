package fanout

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// AdaptiveLimiter is a [Guard] that caps the attempts in flight at a limit
// it learns rather than one the caller guesses, for a dependency whose
// capacity changes with the plan, the model, the hour and everyone else's
// traffic. Pass the same AdaptiveLimiter with [WithGuard] to every run
// that calls the dependency, as with a [Semaphore]; Limit says what it has
// learned, and the Limit hook of its config's Observer reports each
// change.
//
// Admit waits, first come first served, until fewer attempts than the
// limit are in flight. The limit moves so:
//
//   - Overload lowers it at once, multiplied by Backoff: an error carrying
//     HTTP status 429, 503 or 529, or one asking for a delay through a
//     RetryAfter() method (see [CheckResponse]). Overload reported by the
//     attempts admitted before that fall, or within a round trip of it
//     (the last round's median latency), is not news and lowers it no
//     further: one burst of 429s costs one step, as a lost window does in
//     TCP. An overloaded attempt keeps its slot until a round trip after
//     it started, so that answers refused at once cannot turn a few slots
//     into a flood of attempts.
//   - Every round, as many finished attempts as the limit (at least 20),
//     the limit is judged again: if the round's median latency exceeds
//     Tolerance times the baseline (the lowest round median of the last 25
//     to 50 rounds), it falls as for overload; otherwise, if the limit was
//     reached during the round, it rises by a tenth (at least one slot).
//   - Below the limit at which it last fell, it rises only to 5% short of
//     it, then creeps up over ten rounds (at least a tenth of a slot a
//     round): so it spends its time just below the ceiling it found rather
//     than bouncing off it, and past that ceiling rises fast again, for a
//     capacity that has grown.
//
// Successful attempts and those cut by [WithTaskTimeout] give the
// latencies. An attempt cut by the run (its context ended, it lost a hedge
// race), refused by another guard, or that panicked says nothing and is
// not counted.
//
// An AdaptiveLimiter is safe for concurrent use. Admit and the outcome
// take the mutex once each, and a waiter arms a timer while a slot is
// held. Unlike a Semaphore, it does not lend a task's slot to the runs
// nested in it: a task holding a slot must not fan out under the same
// AdaptiveLimiter, or both may wait for ever.
type AdaptiveLimiter struct {
	cfg AdaptiveLimiterConfig

	mu       sync.Mutex
	limit    float64
	inFlight int
	held     []time.Time   // until when overloaded attempts keep their slot
	rearm    chan struct{} // closed when a slot is held, so waiters time their wait anew
	waiters  list.List     // of *limitWaiter, in arrival order
	epoch    int           // how many times the limit fell: overload from an older epoch is not news
	fellAt   time.Time     // when the limit last fell
	rtt      time.Duration // the last round's median latency
	ceiling  float64       // the limit in slots when it last fell; 0 before the first fall
	round    limitRound
	base     baseline
}

// AdaptiveLimiterConfig configures an [AdaptiveLimiter]. The zero value
// starts at 10 attempts in flight, and moves between 1 and 1000.
type AdaptiveLimiterConfig struct {
	// Name tells this limiter apart from others in LimitInfo.
	Name string
	// Min and Max bound the limit; zero means 1 and 1000.
	Min, Max int
	// Initial is the limit to start from; zero means 10, within Min and
	// Max.
	Initial int
	// Backoff multiplies the limit on overload; zero means 0.9. It must
	// be in (0, 1).
	Backoff float64
	// Tolerance is how many times the baseline latency a round's median
	// may reach before the limit falls; zero means 2. It must exceed 1.
	Tolerance float64
	// Observer, if set, has its Limit hook called after each change of
	// the limit. Runs do not call it: the limiter is shared by runs.
	Observer *Observer
}

// LimitInfo describes a change of an [AdaptiveLimiter]'s limit, for the
// Limit hook of an [Observer].
type LimitInfo struct {
	Name     string // the limiter's
	Limit    int    // the new limit
	Previous int
	InFlight int
	// Reason is "overload" (Err is the attempt's error), "latency" (the
	// round's median latency passed Tolerance times the baseline) or
	// "increase".
	Reason   string
	Err      error
	Latency  time.Duration // the round's median latency; zero for "overload"
	Baseline time.Duration // the lowest round median lately; zero for "overload"
}

// Defaults of AdaptiveLimiterConfig, and the fixed shape of its control
// loop.
const (
	adaptiveMin       = 1
	adaptiveMax       = 1000
	adaptiveInitial   = 10
	adaptiveBackoff   = 0.9
	adaptiveTolerance = 2.0

	minRoundSamples = 20   // a round has at least this many outcomes
	growFar         = 0.1  // rise per round away from the ceiling, as a share of the limit
	nearBand        = 0.05 // "near the ceiling": within this share below it
	nearRounds      = 10   // rounds to creep across the near band
	growNearMin     = 0.1  // ... rising at least this many slots a round
	baselineRounds  = 50   // the baseline is the lowest median of the last half to all of this many rounds
)

// NewAdaptiveLimiter returns an AdaptiveLimiter configured by c. It panics
// if c is inconsistent: Min above Max, Initial outside them, a Backoff
// outside (0, 1), a Tolerance not above 1, or a negative field.
func NewAdaptiveLimiter(c AdaptiveLimiterConfig) *AdaptiveLimiter {
	if c.Min < 0 || c.Max < 0 || c.Initial < 0 {
		panic(fmt.Sprintf("fanout: NewAdaptiveLimiter: negative bound in Min %d, Max %d, Initial %d", c.Min, c.Max, c.Initial))
	}
	if c.Min == 0 {
		c.Min = adaptiveMin
	}
	if c.Max == 0 {
		c.Max = max(adaptiveMax, c.Min)
	}
	if c.Initial == 0 {
		c.Initial = min(max(adaptiveInitial, c.Min), c.Max)
	}
	if c.Backoff == 0 {
		c.Backoff = adaptiveBackoff
	}
	if c.Tolerance == 0 {
		c.Tolerance = adaptiveTolerance
	}
	switch {
	case c.Min > c.Max:
		panic(fmt.Sprintf("fanout: NewAdaptiveLimiter: Min %d is above Max %d", c.Min, c.Max))
	case c.Initial < c.Min || c.Initial > c.Max:
		panic(fmt.Sprintf("fanout: NewAdaptiveLimiter: Initial %d is outside [%d, %d]", c.Initial, c.Min, c.Max))
	case !(c.Backoff > 0 && c.Backoff < 1):
		panic(fmt.Sprintf("fanout: NewAdaptiveLimiter: Backoff %v is outside (0, 1)", c.Backoff))
	case !(c.Tolerance > 1) || math.IsInf(c.Tolerance, 1):
		panic(fmt.Sprintf("fanout: NewAdaptiveLimiter: Tolerance %v must be above 1", c.Tolerance))
	}
	return &AdaptiveLimiter{cfg: c, limit: float64(c.Initial)}
}

// Limit returns the number of attempts the limiter lets run at once now.
func (l *AdaptiveLimiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.slots()
}

// InFlight returns the number of attempts admitted and not yet ended,
// without the slots overloaded attempts still hold. It may exceed Limit
// for a while after the limit falls: the attempts running then are not
// cut short.
func (l *AdaptiveLimiter) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inFlight
}

// limitWaiter is an Admit waiting for room; epoch and at are set when it
// is let in, before ready is closed.
type limitWaiter struct {
	ready chan struct{}
	epoch int
	at    time.Time
}

// Admit waits until fewer attempts than the limit are in flight (or hold
// their slot after an overload), or until ctx ends, and then returns
// ctx's cause.
func (l *AdaptiveLimiter) Admit(ctx context.Context, _ Admission) (func(Outcome), error) {
	l.mu.Lock()
	if l.waiters.Len() == 0 && l.room() {
		epoch, at := l.take()
		l.mu.Unlock()
		return l.doneFunc(ctx, epoch, at), nil
	}
	l.round.full = true
	w := &limitWaiter{ready: make(chan struct{})}
	elem := l.waiters.PushBack(w)
	if err := l.wait(ctx, w); err != nil {
		select {
		case <-w.ready: // let in meanwhile: give the slot back
			l.inFlight--
			l.letIn()
		default:
			l.waiters.Remove(elem)
		}
		l.mu.Unlock()
		return nil, err
	}
	return l.doneFunc(ctx, w.epoch, w.at), nil
}

// wait waits, with l.mu held on entry, until w is let in or ctx ends; it
// returns ctx's cause, with l.mu held again, in the latter case. A held
// slot frees itself with time, so while one is held wait wakes up when it
// frees and lets waiters in.
func (l *AdaptiveLimiter) wait(ctx context.Context, w *limitWaiter) error {
	for {
		wake, stop := l.releaseTimer()
		if l.rearm == nil {
			l.rearm = make(chan struct{})
		}
		rearm := l.rearm
		l.mu.Unlock()
		select {
		case <-w.ready:
			stop()
			return nil
		case <-ctx.Done():
			stop()
			l.mu.Lock()
			return context.Cause(ctx)
		case <-wake:
			l.mu.Lock()
			l.letIn()
		case <-rearm: // a slot is held: time the wait anew
			stop()
			l.mu.Lock()
		}
	}
}

// doneFunc returns the outcome function of an attempt admitted at at
// under ctx, in epoch.
func (l *AdaptiveLimiter) doneFunc(ctx context.Context, epoch int, at time.Time) func(Outcome) {
	return func(o Outcome) {
		l.mu.Lock()
		l.inFlight--
		info, changed := l.learn(ctx, epoch, at, o)
		l.letIn()
		l.mu.Unlock()
		if changed {
			l.cfg.Observer.limitChanged(ctx, info)
		}
	}
}

// slots is the limit as a number of attempts.
func (l *AdaptiveLimiter) slots() int { return max(int(l.limit), l.cfg.Min) }

// room reports whether an attempt may start now.
func (l *AdaptiveLimiter) room() bool {
	l.releaseHeld(time.Now())
	return l.inFlight+len(l.held) < l.slots()
}

// take starts an attempt, and returns its epoch and start.
func (l *AdaptiveLimiter) take() (int, time.Time) {
	l.inFlight++
	l.round.full = l.round.full || l.inFlight+len(l.held) >= l.slots()
	return l.epoch, time.Now()
}

// letIn admits waiters, first come first served, while there is room.
func (l *AdaptiveLimiter) letIn() {
	for l.waiters.Len() > 0 && l.room() {
		w := l.waiters.Remove(l.waiters.Front()).(*limitWaiter)
		w.epoch, w.at = l.take()
		close(w.ready)
	}
	if l.waiters.Len() > 0 {
		l.round.full = true
	}
}

// hold keeps the slot of an overloaded attempt that started at at until a
// round trip from then: an overload answer comes back at once, and its
// slot, if freed at once, would let the next attempt in at once too, so
// that a few slots could send a flood of attempts at a server that refuses
// them.
func (l *AdaptiveLimiter) hold(at time.Time) {
	if until := at.Add(l.rtt); until.After(time.Now()) {
		l.held = append(l.held, until)
		if l.rearm != nil {
			close(l.rearm)
			l.rearm = nil
		}
	}
}

// releaseHeld frees the held slots whose time has come by now.
func (l *AdaptiveLimiter) releaseHeld(now time.Time) {
	kept := l.held[:0]
	for _, until := range l.held {
		if until.After(now) {
			kept = append(kept, until)
		}
	}
	l.held = kept
}

// releaseTimer returns a channel that fires when the next held slot
// frees, nil if none is held, and the function that stops it.
func (l *AdaptiveLimiter) releaseTimer() (<-chan time.Time, func()) {
	if len(l.held) == 0 {
		return nil, func() {}
	}
	t := time.NewTimer(time.Until(slices.MinFunc(l.held, time.Time.Compare)))
	return t.C, func() { t.Stop() }
}

// learn takes in the outcome of an attempt admitted at at in epoch, and
// reports whether the limit changed, and how.
func (l *AdaptiveLimiter) learn(ctx context.Context, epoch int, at time.Time, o Outcome) (LimitInfo, bool) {
	timedOut := errors.Is(o.Err, ErrTaskTimeout)
	switch {
	case !timedOut && saysNothing(ctx, o):
		return LimitInfo{}, false
	case overloaded(o.Err):
		l.hold(at)
		if epoch != l.epoch || time.Since(l.fellAt) < l.rtt {
			return LimitInfo{}, false // not news: the last fall has not had a round trip to act
		}
		return l.change(l.fall(), LimitInfo{Reason: "overload", Err: o.Err})
	}
	l.round.outcomes++
	if o.Err == nil || timedOut {
		l.round.latencies = append(l.round.latencies, o.Elapsed)
	}
	if l.round.outcomes < max(l.slots(), minRoundSamples) {
		return LimitInfo{}, false
	}
	return l.endRound()
}

// endRound re-estimates the limit from the round just ended.
func (l *AdaptiveLimiter) endRound() (LimitInfo, bool) {
	r := &l.round
	defer r.reset()
	if len(r.latencies) == 0 {
		return LimitInfo{}, false
	}
	slices.Sort(r.latencies)
	median := r.latencies[(len(r.latencies)-1)/2]
	l.rtt = median
	base := l.base.add(median)
	info := LimitInfo{Latency: median, Baseline: base}
	switch {
	case float64(median) > l.cfg.Tolerance*float64(base):
		info.Reason = "latency"
		return l.change(l.fall(), info)
	case r.full:
		info.Reason = "increase"
		return l.change(l.rise(), info)
	}
	return LimitInfo{}, false
}

// fall lowers the limit after overload, remembers where it was, and
// starts a new epoch and round. It returns the limit before.
func (l *AdaptiveLimiter) fall() float64 {
	old := l.limit
	l.ceiling = float64(l.slots())
	l.limit = max(old*l.cfg.Backoff, float64(l.cfg.Min))
	l.epoch++
	l.fellAt = time.Now()
	l.round.reset()
	return old
}

// rise raises the limit after a round that used it: fast, but below the
// ceiling, only up to the near band and then slowly across it. It returns
// the limit before.
func (l *AdaptiveLimiter) rise() float64 {
	old := l.limit
	step := max(1, old*growFar)
	if c := l.ceiling; old < c {
		if near := c * (1 - nearBand); old < near {
			step = min(step, near-old)
		} else {
			step = max(growNearMin, c*nearBand/nearRounds)
		}
	}
	l.limit = min(old+step, float64(l.cfg.Max))
	return old
}

// change completes info if the limit, in slots, moved from old.
func (l *AdaptiveLimiter) change(old float64, info LimitInfo) (LimitInfo, bool) {
	prev := max(int(old), l.cfg.Min)
	if prev == l.slots() {
		return LimitInfo{}, false
	}
	info.Name, info.Limit, info.Previous, info.InFlight = l.cfg.Name, l.slots(), prev, l.inFlight
	return info, true
}

// limitRound is what the outcomes of the current round say.
type limitRound struct {
	outcomes  int
	latencies []time.Duration
	full      bool // the limit was reached: a rise would be used
}

func (r *limitRound) reset() {
	r.outcomes, r.latencies, r.full = 0, r.latencies[:0], false
}

// baseline is the lowest round median of the last baselineRounds/2 to
// baselineRounds rounds: two halves, the older forgotten as a new one
// fills, so a dependency that has become slower for good is learned.
type baseline struct {
	older, newer time.Duration // 0: none
	n            int           // rounds in newer
}

// add takes in a round's median and returns the baseline.
func (b *baseline) add(d time.Duration) time.Duration {
	if b.n == 0 || d < b.newer {
		b.newer = d
	}
	b.n++
	base := b.newer
	if b.older > 0 {
		base = min(base, b.older)
	}
	if b.n == baselineRounds/2 {
		b.older, b.newer, b.n = b.newer, 0, 0
	}
	return base
}

// overloaded reports whether err says the dependency is past its
// capacity: an HTTP 429, 503 or 529, or a server-directed wait.
func overloaded(err error) bool {
	if err == nil {
		return false
	}
	if code, ok := httpStatus(err); ok {
		switch code {
		case 429, 503, 529:
			return true
		}
	}
	return serverDelay(err) > 0
}

// saysNothing reports whether the outcome o of an attempt admitted under
// ctx says nothing about the dependency: the attempt never started,
// because a guard after this one refused it; or it was cut by the run, as
// its context ended (the run stopped, the caller cancelled, the attempt
// lost a hedge race); or the task cancelled itself, panicked or called
// runtime.Goexit. A guard counts such an attempt neither for nor against
// the dependency.
func saysNothing(ctx context.Context, o Outcome) bool {
	if o.Err == nil {
		return false
	}
	var panicked *PanicError
	return ctx.Err() != nil || neverStarted(o) ||
		errors.Is(o.Err, context.Canceled) || errors.Is(o.Err, ErrHedgeLost) || errors.Is(o.Err, ErrStopped) ||
		errors.Is(o.Err, ErrRunTimeout) || errors.Is(o.Err, ErrGoexit) || errors.As(o.Err, &panicked)
}

// neverStarted reports whether o is the outcome of an attempt that never
// called Do: one the run reports with Started false and no time taken (a
// guard after this one, whoever wrote it, or a cooldown refused it), or a
// refusal by this package's guards, however reported. An outcome with
// Started false but some Elapsed is taken as a call that ran: that is
// what a caller who ends guards by hand without setting Started means.
func neverStarted(o Outcome) bool {
	return !o.Started && o.Elapsed == 0 ||
		errors.Is(o.Err, ErrCircuitOpen) || errors.Is(o.Err, ErrRetryBudgetExceeded)
}
