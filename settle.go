package fanout

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Settler is an optional interface of a [Limiter] whose charges can be
// corrected once the real usage is known: an LLM call charged its
// estimated tokens before it starts, settled against the usage in its
// response. A Settler must be safe for concurrent use.
type Settler interface {
	// Settle corrects a grant of charged units to used units. When used
	// is larger it takes the difference at once, without blocking (the
	// limiter goes into debt, so that later waits are longer); when
	// smaller it gives the difference back.
	Settle(charged, used int)
}

// Settle reports how many tokens the attempt running under ctx really
// used, in the units of Task.Tokens, once the server has said: the usage
// of an LLM response, say, or 0 for a call the server rejected before
// serving it. The run corrects what it charged each limiter of
// [WithRateLimit] for the attempt: a limiter that implements [Settler] is
// settled both ways; a *rate.Limiter (bare or in a [Throttle]) is charged
// what the attempt used beyond its estimate, but not refunded what it did
// not use, since x/time/rate can give tokens back only by cancelling a
// reservation, which over-refunds. Other limiters are left alone. Only the
// first call per attempt counts; outside a fanout task Settle does
// nothing.
func Settle(ctx context.Context, used int) {
	if s, ok := ctx.Value(settleKey{}).(*settlement); ok && s.done.CompareAndSwap(false, true) {
		for _, u := range s.limiters {
			if u.perToken && u.applies(s.resource) {
				settle(u.l, u.charge(s.tokens), max(used, 0))
			}
		}
	}
}

type settleKey struct{}

// settlement is what Settle needs of the attempt in flight.
type settlement struct {
	limiters []limiterUse
	tokens   int
	resource string
	done     atomic.Bool
}

func settle(l Limiter, charged, used int) {
	switch l := l.(type) {
	case Settler:
		l.Settle(charged, used)
	case *rate.Limiter:
		takeRate(l, used-charged)
	}
}

// Settle settles the limiter the Throttle wraps, as [Settle] would.
func (t *Throttle) Settle(charged, used int) {
	if t.l != nil {
		settle(t.l, charged, used)
	}
}

// takeRate takes n tokens of l at once, at most a burst at a time, without
// waiting for them: the limiter's next waits are longer by as much.
func takeRate(l *rate.Limiter, n int) {
	now := time.Now()
	for burst := l.Burst(); n > 0 && burst > 0 && l.Limit() != rate.Inf; n -= burst {
		l.ReserveN(now, min(n, burst))
	}
}
