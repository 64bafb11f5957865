package fanout_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
)

// ledger is a Limiter and Settler that records what it was charged.
type ledger struct {
	mu      sync.Mutex
	charged int
}

func (l *ledger) WaitN(_ context.Context, n int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.charged += n
	return nil
}

func (l *ledger) Settle(charged, used int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.charged += used - charged
}

func (l *ledger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.charged
}

// usedTask estimates 100 tokens and reports that it used used.
func usedTask(key string, used int) fanout.Task[int] {
	return fanout.Task[int]{Key: key, Tokens: 100, Do: func(ctx context.Context) (int, error) {
		fanout.Settle(ctx, used)
		fanout.Settle(ctx, 10*used) // only the first report counts
		return used, nil
	}}
}

func TestSettle(t *testing.T) {
	t.Run("a Settler is charged what the attempts really used", func(t *testing.T) {
		l := &ledger{}
		_, err := fanout.Run(context.Background(), []fanout.Task[int]{usedTask("under", 40), usedTask("over", 250), usedTask("rejected", 0)},
			fanout.WithRateLimit(l))
		require.NoError(t, err)
		assert.Equal(t, 290, l.total())
	})
	t.Run("through a Throttle too, and not for a request limit", func(t *testing.T) {
		tokens, requests := &ledger{}, &ledger{}
		_, err := fanout.Run(context.Background(), []fanout.Task[int]{usedTask("a", 40)},
			fanout.WithRateLimit(fanout.NewThrottle(tokens)), fanout.WithRequestLimit(requests))
		require.NoError(t, err)
		assert.Equal(t, 40, tokens.total())
		assert.Equal(t, 1, requests.total(), "a request is a request, whatever its tokens")
	})
	t.Run("each hedged copy settles its own charge", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := &ledger{}
			var calls atomic.Int32
			task := fanout.Task[int]{Key: "a", Tokens: 100, Do: func(ctx context.Context) (int, error) {
				if calls.Add(1) == 1 {
					time.Sleep(time.Second)
				}
				fanout.Settle(ctx, 30)
				return 1, nil
			}}
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRateLimit(l),
				fanout.WithHedge(fanout.HedgePolicy{Delay: 100 * time.Millisecond, MaxExtra: 1}))
			require.NoError(t, err)
			assert.Equal(t, 60, l.total())
		})
	})
	t.Run("a rate.Limiter is charged an underestimate", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			lim := rate.NewLimiter(100, 100)
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{usedTask("over", 250)}, fanout.WithRateLimit(lim))
			require.NoError(t, err)
			// 100 charged before, 150 more after: the bucket owes 150.
			assert.InDelta(t, -150, lim.Tokens(), 1e-9)
			start := time.Now()
			require.NoError(t, lim.WaitN(context.Background(), 1))
			assert.Equal(t, 1510*time.Millisecond, time.Since(start), "the next wait pays the debt")
		})
	})
	t.Run("outside a task it does nothing", func(t *testing.T) {
		fanout.Settle(context.Background(), 5)
	})
}

func TestBudgetCountsTheAttemptsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 200 calls of an estimated 500 tokens (really 520) at limit 50,
		// under a budget of 10 000: without the estimates in flight, 50
		// would start before the first reported.
		tasks := make([]fanout.Task[int], 200)
		for i := range tasks {
			tasks[i] = fanout.Task[int]{Key: string(rune(0x4e00 + i)), Tokens: 500, Do: func(ctx context.Context) (int, error) {
				time.Sleep(time.Second)
				fanout.Spend(ctx, fanout.Cost{Tokens: 520})
				return 1, nil
			}}
		}
		rs, _ := fanout.Run(context.Background(), tasks, fanout.WithLimit(50), fanout.WithBudget(fanout.Cost{Tokens: 10_000}))
		spent := rs.Cost().Tokens
		assert.LessOrEqual(t, spent, int64(10_000*1.05), "over by at most the estimates' error")
		assert.GreaterOrEqual(t, spent, int64(10_000-2*520), "the budget was used")
	})
}

func TestCollectSpendCounts(t *testing.T) {
	var summary fanout.RunSummary
	obs := &fanout.Observer{RunDone: func(_ context.Context, s fanout.RunSummary) { summary = s }}
	judge := fanout.Collect(func(ctx context.Context, rs []fanout.Result[int]) (int, error) {
		fanout.Spend(ctx, fanout.Cost{Tokens: 700, Cents: 1.5})
		return len(rs), nil
	})
	n, err := fanout.Gather(context.Background(), []fanout.Task[int]{value("a", 1), value("b", 2)}, judge, fanout.WithObserver(obs))
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, fanout.Cost{Tokens: 700, Cents: 1.5}, summary.Cost)
}

func TestNewResults(t *testing.T) {
	rs, err := fanout.NewResults([]fanout.Result[int]{{Key: "a", Value: 1}, {Key: "b", Err: fanout.ErrSkipped}})
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"a": 1}, rs.Values())
	b, _ := rs.Get("b")
	assert.Equal(t, 1, b.Index)
	assert.ErrorIs(t, rs.Err(), fanout.ErrSkipped)

	_, err = fanout.NewResults([]fanout.Result[int]{{Key: "a"}, {Key: "a"}})
	assert.EqualError(t, err, `fanout: NewResults: duplicate key "a" (Results 0 and 1)`)
	_, err = fanout.NewResults([]fanout.Result[int]{{}})
	assert.EqualError(t, err, `fanout: NewResults: Result 0: empty Key`)
}
