package fanout

import (
	"context"
	"fmt"
	"sync"
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

type spendKey struct{}

type spender interface{ addSpent(Cost) }

// Spend reports that the task running under ctx spent c. The run adds it to
// the key's Result.Cost and to the run's total that [WithBudget] checks.
// Outside a fanout task Spend does nothing. It is safe to call from
// goroutines the task starts, as long as they end before the task returns.
func Spend(ctx context.Context, c Cost) {
	if s, ok := ctx.Value(spendKey{}).(spender); ok {
		s.addSpent(c)
	}
}

// WithBudget stops starting tasks once the costs reported through [Spend]
// reach max in any dimension it sets (Tokens, Cents). Tasks already running
// finish; the tasks not yet started are skipped with an error matching both
// [ErrSkipped] and [ErrBudgetExceeded]. Tasks report after they spend, so a
// run may go past max by what the tasks in flight spend.
func WithBudget(max Cost) Option {
	return func(c *config) {
		if max.Tokens < 0 || max.Cents < 0 || max == (Cost{}) {
			c.invalid("WithBudget(Cost{Tokens: %d, Cents: %v}): budget must be positive", max.Tokens, max.Cents)
			return
		}
		c.budget = max
	}
}

// spending totals a run's costs.
type spending struct {
	max Cost // zero: no budget
	mu  sync.Mutex
	sum Cost
}

func (s *spending) add(c Cost) {
	s.mu.Lock()
	s.sum = s.sum.Add(c)
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
