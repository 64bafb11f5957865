package bench

import (
	"context"
	"errors"

	"github.com/failsafe-go/failsafe-go/adaptivelimiter"

	"github.com/gofanout/fanout"
)

// FailsafeGuard adapts failsafe-go's adaptive concurrency limiter to a
// fanout.Guard, as a user combining the two would: Admit waits for a
// permit, and the outcome records the attempt's latency, or drops it when
// the attempt was cancelled, as failsafe-go's own executor does.
// failsafe-go's limiter judges by latency alone: it does not see 429s or
// 503s.
type FailsafeGuard struct {
	L adaptivelimiter.AdaptiveLimiter[any]
}

// NewFailsafeGuard returns a guard over a failsafe-go adaptive limiter
// with its defaults but for the limits, which are set to min, max and
// initial.
func NewFailsafeGuard(min, max, initial uint) FailsafeGuard {
	return FailsafeGuard{L: adaptivelimiter.NewBuilder[any]().WithLimits(min, max, initial).Build()}
}

// Admit waits for a permit.
func (g FailsafeGuard) Admit(ctx context.Context, _ fanout.Admission) (func(fanout.Outcome), error) {
	p, err := g.L.AcquirePermit(ctx)
	if err != nil {
		return nil, err
	}
	return func(o fanout.Outcome) {
		if ctx.Err() != nil || errors.Is(o.Err, context.Canceled) {
			p.Drop()
			return
		}
		p.Record()
	}, nil
}
