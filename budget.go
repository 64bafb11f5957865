package fanout

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// Cost is what a task spent, as it reports through [Spend]: tokens of an
// LLM call, cents of a paid API, or both.
type Cost struct {
	Tokens int64
	Cents  float64
}

// Add returns the sum of c and d.
func (c Cost) Add(d Cost) Cost { return Cost{Tokens: c.Tokens + d.Tokens, Cents: c.Cents + d.Cents} }

// reaches reports whether c has reached max in any dimension max sets.
func (c Cost) reaches(max Cost) bool {
	return (max.Tokens > 0 && c.Tokens >= max.Tokens) || (max.Cents > 0 && c.Cents >= max.Cents)
}

// Spend reports that the task running under ctx spent c. The run adds it to
// the key's Result.Cost and to the run's total that [WithBudget] checks;
// in a run nested in a task (a [Call] or Run inside it), the task it is
// nested in and that task's run count it too. Outside a fanout task Spend
// does nothing. It is safe to call from goroutines the task starts, as
// long as they end before the task returns.
func Spend(ctx context.Context, c Cost) {
	if s, ok := ctx.Value(scopeKey{}).(*scope); ok {
		s.addSpent(c)
	}
}

// WithBudget stops making attempts once the costs reported through [Spend]
// reach max in any dimension it sets (Tokens, Cents). The budget is
// checked right before each attempt starts, after its rate-limiter waits:
// first attempts, retries and hedged copies alike. Attempts already
// running finish; a key that never started is skipped with an error
// matching both [ErrSkipped] and [ErrBudgetExceeded], and a key refused a
// retry fails with an error matching ErrBudgetExceeded and carrying its
// last attempt's error. The zero Cost means no budget, so the option can
// be built unconditionally; a negative or NaN value is refused.
//
// Tasks report after they spend. When max sets Tokens, each attempt in
// flight counts as its Task.Tokens until it ends, so an attempt starts
// only if what was spent, plus the estimates of the attempts in flight,
// plus its own, fits in max; otherwise it waits for the attempts in flight
// to end, and is refused if it cannot fit even then. So with estimates
// that are not exceeded the run stays within max, however many attempts
// run at once. Cents have no estimate: a run may go past a Cents budget by
// what the attempts in flight spend.
func WithBudget(max Cost) Option {
	return func(c *config) {
		if max.Tokens < 0 || !(max.Cents >= 0) { // NaN too: it never reaches, yet is no zero Cost
			c.invalid("WithBudget(Cost{Tokens: %d, Cents: %v}): budget must be positive", max.Tokens, max.Cents)
			return
		}
		c.budget = max
	}
}

// spending totals a run's costs, and the estimates of its attempts in
// flight.
type spending struct {
	max      Cost // zero: no budget
	mu       sync.Mutex
	sum      Cost
	inFlight int64         // estimated tokens of the attempts running
	changed  chan struct{} // closed when an attempt ends; nil if nobody waits
}

func (s *spending) add(c Cost) {
	s.mu.Lock()
	s.sum = s.sum.Add(c)
	s.mu.Unlock()
}

// limited reports whether the run has a budget.
func (s *spending) limited() bool { return s.max != (Cost{}) }

// admit lets an attempt estimated at est tokens start, or reports that the
// budget is spent: it waits while est does not fit beside the attempts in
// flight, and refuses once it could not fit even alone. An admitted
// attempt must be ended with done(est).
func (s *spending) admit(ctx context.Context, est int64) error {
	if s.max == (Cost{}) {
		return nil
	}
	if s.max.Tokens == 0 {
		est = 0
	}
	s.mu.Lock()
	for {
		if s.sum.reaches(s.max) || (est > 0 && s.sum.Tokens+est > s.max.Tokens) {
			s.mu.Unlock()
			return ErrBudgetExceeded
		}
		if est == 0 || s.sum.Tokens+s.inFlight+est <= s.max.Tokens {
			s.inFlight += est
			s.mu.Unlock()
			return nil
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		s.mu.Lock()
	}
}

// done ends an attempt admitted with est.
func (s *spending) done(est int64) {
	if s.max == (Cost{}) {
		return
	}
	s.mu.Lock()
	if s.max.Tokens > 0 {
		s.inFlight -= est
	}
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	s.mu.Unlock()
}

func (s *spending) total() Cost {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sum
}

func (s *spending) exceeded() bool {
	if s.max == (Cost{}) {
		return false
	}
	return s.total().reaches(s.max)
}

// String formats c as "N tokens, C¢".
func (c Cost) String() string { return fmt.Sprintf("%d tokens, %.2f¢", c.Tokens, c.Cents) }

type scopeKey struct{}

// scope is what fanout keeps in the context of a worker's tasks: what the
// task in hand spent, and the semaphore slot runs nested in it may
// borrow. One is made per worker, not per task.
type scope struct {
	parent *scope        // the scope of the task this run is nested in
	sem    *Semaphore    // the semaphore the worker's tasks hold a slot of
	lease  chan struct{} // see lease
	run    *spending     // the run's total, for WithBudget
	mu     sync.Mutex
	spent  Cost
	any    atomic.Bool // spent is not zero
}

func newScope(ctx context.Context, sem *Semaphore, run *spending) *scope {
	sc := &scope{sem: sem, run: run}
	sc.parent, _ = ctx.Value(scopeKey{}).(*scope)
	if sem != nil {
		sc.lease = make(chan struct{}, 1)
		sc.lease <- struct{}{}
	}
	return sc
}

// addSpent counts c for the task in hand and its run, and for each task
// (and run) this one is nested in: what a nested Run or Call spends, the
// task that made it spent.
func (s *scope) addSpent(c Cost) {
	for ; s != nil; s = s.parent {
		s.mu.Lock()
		s.spent = s.spent.Add(c)
		s.mu.Unlock()
		s.any.Store(true)
		s.run.add(c)
	}
}

// takeSpent returns what the task in hand spent, and starts afresh.
func (s *scope) takeSpent() Cost {
	if !s.any.Load() {
		return Cost{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.spent
	s.spent = Cost{}
	s.any.Store(false)
	return c
}
