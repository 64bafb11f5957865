package fanout_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

// gatekeeper admits attempts until refuse says no, and records what it
// saw.
type gatekeeper struct {
	mu       sync.Mutex
	admitted []fanout.Admission
	outcomes []fanout.Outcome
	refuse   func(fanout.Admission) error
}

func (g *gatekeeper) Admit(_ context.Context, a fanout.Admission) (func(fanout.Outcome), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refuse != nil {
		if err := g.refuse(a); err != nil {
			return nil, err
		}
	}
	g.admitted = append(g.admitted, a)
	return func(o fanout.Outcome) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.outcomes = append(g.outcomes, o)
	}, nil
}

func TestGuard(t *testing.T) {
	t.Run("every attempt passes it and reports its outcome once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := &gatekeeper{}
			flake := errors.New("flake")
			task, _ := flaky("a", 1, flake)
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithGuard(g), fanout.WithRetry(exact(3)))
			require.NoError(t, err)
			assert.Equal(t, []fanout.Admission{{Key: "a", Attempt: 1}, {Key: "a", Attempt: 2}}, g.admitted)
			require.Len(t, g.outcomes, 2)
			assert.ErrorIs(t, g.outcomes[0].Err, flake)
			assert.NoError(t, g.outcomes[1].Err)
		})
	})
	t.Run("a refusal ends the key's retries with both errors", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			open := errors.New("circuit open")
			g := &gatekeeper{refuse: func(a fanout.Admission) error {
				if a.Attempt > 1 {
					return open
				}
				return nil
			}}
			flake := errors.New("flake")
			task, calls := flaky("a", 1, flake, flake)
			rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithGuard(g), fanout.WithRetry(exact(5)))
			r, _ := rs.Get("a")
			assert.ErrorIs(t, r.Err, open)
			assert.ErrorIs(t, r.Err, flake)
			assert.Len(t, calls.times(), 1)
		})
	})
	t.Run("a hedged copy passes it too", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := &gatekeeper{}
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{sleeping("a", time.Second, 1)}, fanout.WithGuard(g),
				fanout.WithHedge(fanout.HedgePolicy{Delay: 100 * time.Millisecond, MaxExtra: 1}))
			require.NoError(t, err)
			assert.Equal(t, []fanout.Admission{{Key: "a", Attempt: 1}, {Key: "a", Attempt: 1, Hedge: true}}, g.admitted)
			assert.Len(t, g.outcomes, 2)
		})
	})
	t.Run("a nil guard is refused", func(t *testing.T) {
		_, err := fanout.Run(context.Background(), []fanout.Task[int]{value("a", 1)}, fanout.WithGuard(nil))
		assert.EqualError(t, err, "fanout: WithGuard(nil): guard must not be nil")
	})
}

func TestGuardThenCooldown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The guard holds the attempt for a second; a pause begins
		// meanwhile, and the attempt waits it out before its call.
		th := fanout.NewThrottle(nil)
		slow := &gatekeeper{refuse: func(fanout.Admission) error {
			th.Pause(3 * time.Second)
			time.Sleep(time.Second)
			return nil
		}}
		start := time.Now()
		_, err := fanout.Run(context.Background(), []fanout.Task[int]{value("a", 1)}, fanout.WithGuard(slow), fanout.WithRequestLimit(th))
		require.NoError(t, err)
		assertReleased(t, time.Since(start), 3*time.Second, 600*time.Millisecond)
		require.Len(t, slow.outcomes, 1)
		assert.True(t, slow.outcomes[0].Started)
	})
}

type panickyGuard struct{}

func (panickyGuard) Admit(context.Context, fanout.Admission) (func(fanout.Outcome), error) {
	panic("guard bug")
}

func TestAPanickingGuardFailsOnlyItsKeys(t *testing.T) {
	rs, err := fanout.Run(context.Background(), []fanout.Task[int]{value("a", 1), value("b", 2)},
		fanout.WithGuard(panickyGuard{}), fanout.WithLimit(1))
	require.Error(t, err)
	assert.Equal(t, 2, rs.Len())
	for _, r := range rs.All() {
		var pe *fanout.PanicError
		assert.ErrorAs(t, r.Err, &pe, r.Key)
	}
}
