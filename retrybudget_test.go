package fanout_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

// firsts admits n first attempts to b.
func firsts(t *testing.T, b *fanout.RetryBudget, n int) {
	t.Helper()
	for range n {
		done, err := b.Admit(context.Background(), fanout.Admission{Key: "k", Attempt: 1})
		require.NoError(t, err)
		assert.Nil(t, done, "nothing to tell about a first attempt")
	}
}

// retries asks b to admit n retries and hedged copies, in turn, and
// returns how many it let through.
func retries(b *fanout.RetryBudget, n int) int {
	admitted := 0
	for i := range n {
		a := fanout.Admission{Key: "k", Attempt: 2}
		if i%2 == 1 {
			a = fanout.Admission{Key: "k", Attempt: 1, Hedge: true}
		}
		if _, err := b.Admit(context.Background(), a); err == nil {
			admitted++
		}
	}
	return admitted
}

func TestRetryBudget(t *testing.T) {
	t.Run("first attempts always pass", func(t *testing.T) {
		b := fanout.NewRetryBudget(0, 0)
		firsts(t, b, 1000)
		assert.Zero(t, retries(b, 10))
	})
	t.Run("retries and hedged copies pass within ratio of the first attempts, or the floor if more", func(t *testing.T) {
		tests := []struct {
			name              string
			ratio, perSecond  float64
			firsts, wantRetry int
		}{
			{"20% of 100", 0.2, 0, 100, 20},
			{"20% of 100 is less than the floor of 10 a second for 10 s", 0.2, 10, 100, 100},
			{"20% of 1000 is more than the floor", 0.2, 10, 1000, 200},
			{"the floor alone, when nothing else runs", 0.2, 1, 0, 10},
			{"whole retries only", 0.5, 0, 3, 1},
			{"none at all", 0, 0, 100, 0},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					b := fanout.NewRetryBudget(tt.ratio, tt.perSecond)
					firsts(t, b, tt.firsts)
					assert.Equal(t, tt.wantRetry, b.Available())
					assert.Equal(t, tt.wantRetry, retries(b, 1000))
					assert.Zero(t, b.Available())
				})
			})
		}
	})
	t.Run("a refusal says why", func(t *testing.T) {
		b := fanout.NewRetryBudget(0, 0)
		_, err := b.Admit(context.Background(), fanout.Admission{Key: "k", Attempt: 2})
		assert.ErrorIs(t, err, fanout.ErrRetryBudgetExceeded)
		assert.EqualError(t, err, "fanout: retry budget exceeded")
	})
	t.Run("the window forgets what is older than 10 seconds", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := fanout.NewRetryBudget(0.2, 0)
			firsts(t, b, 100)
			assert.Equal(t, 20, retries(b, 100))
			time.Sleep(5 * time.Second)
			firsts(t, b, 100)
			assert.Equal(t, 20, b.Available(), "20% of 200, less the 20 spent")
			time.Sleep(5 * time.Second)
			assert.Equal(t, 20, b.Available(), "the first 100 and their retries are gone")
			time.Sleep(5 * time.Second)
			assert.Zero(t, b.Available())
		})
	})
	t.Run("a retry a later guard refused is given back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := fanout.NewRetryBudget(0, 1)
			for range 10 {
				done, err := b.Admit(context.Background(), fanout.Admission{Key: "k", Attempt: 2})
				require.NoError(t, err)
				done(fanout.Outcome{Err: &fanout.CircuitOpenError{Until: time.Now()}})
			}
			assert.Equal(t, 10, b.Available())
			done, err := b.Admit(context.Background(), fanout.Admission{Key: "k", Attempt: 2})
			require.NoError(t, err)
			done(fanout.Outcome{Err: err503, Elapsed: time.Millisecond})
			assert.Equal(t, 9, b.Available(), "a retry that was made is spent")
		})
	})
	t.Run("bad arguments panic", func(t *testing.T) {
		assert.PanicsWithValue(t, "fanout: NewRetryBudget(-0.1, 10): ratio and minPerSecond must be finite and not negative",
			func() { fanout.NewRetryBudget(-0.1, 10) })
		assert.Panics(t, func() { fanout.NewRetryBudget(0.2, -1) })
	})
}

// attemptCounter counts attempts through an Observer.
type attemptCounter struct{ firsts, all atomic.Int64 }

func (c *attemptCounter) observer() *fanout.Observer {
	return &fanout.Observer{AttemptStart: func(ctx context.Context, a fanout.AttemptInfo) context.Context {
		c.all.Add(1)
		if a.Attempt == 1 && !a.Hedge {
			c.firsts.Add(1)
		}
		return ctx
	}}
}

func TestRetryBudgetInARun(t *testing.T) {
	t.Run("holds the retries against a dead dependency to the ratio", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &capped{ceiling: 1000, base: 10 * time.Millisecond, down: true}
			b := fanout.NewRetryBudget(0.2, 0)
			var c attemptCounter
			rs, err := fanout.Run(context.Background(), s.tasks("k", 500), fanout.WithLimit(50), fanout.WithGuard(b),
				fanout.WithObserver(c.observer()),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 5, InitialInterval: 10 * time.Millisecond}))
			require.Error(t, err)
			assert.Equal(t, int64(500), c.firsts.Load())
			assert.Equal(t, int64(600), c.all.Load(), "1.2 × the first attempts, against 5 × without the budget")
			refused := 0
			for _, r := range rs.All() {
				assert.Equal(t, 503, statusOf(r.Err), "every key keeps its last error")
				if errors.Is(r.Err, fanout.ErrRetryBudgetExceeded) {
					refused++
				}
			}
			assert.Positive(t, refused)
		})
	})
	t.Run("refuses hedged copies once spent, and the attempts still succeed", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := fanout.NewRetryBudget(0, 0)
			tasks := []fanout.Task[int]{sleeping("a", time.Second, 1), sleeping("b", time.Second, 2)}
			rs, err := fanout.Run(context.Background(), tasks, fanout.WithGuard(b),
				fanout.WithHedge(fanout.HedgePolicy{Delay: 100 * time.Millisecond, MaxExtra: 1}))
			require.NoError(t, err)
			for _, r := range rs.All() {
				assert.Zero(t, r.Hedges)
				assert.Equal(t, 1, r.Attempts)
			}
		})
	})
}

// statusOf returns the status of the *HTTPError in err's chain, or 0.
func statusOf(err error) int {
	var herr *fanout.HTTPError
	if errors.As(err, &herr) {
		return herr.StatusCode
	}
	return 0
}
