package fanout

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// waitRate is l.WaitN(ctx, n) that never cancels its reservation. WaitN
// gives the tokens back through Reservation.Cancel when ctx ends mid-wait,
// and fanout ends many waits (hedge losers, stopped runs); but CancelAt
// restores too many tokens once an earlier cancel has moved the limiter's
// lastEvent back past a pending reservation (reported as golang/go#69419;
// x/time v0.15.0 still does it): TestWaitRateUpstreamCancelBug has five
// waits at one instant, three cancelled, let 8 tokens through a bucket
// of 7. So an abandoned wait here keeps its tokens: a shared limiter may
// be under-used, never exceeded.
//
// Refusals come at once and, uncontended, take no tokens: n above the
// burst (unless the limit is Inf), too few tokens by ctx's deadline, or
// too few ever under a zero limit. If another goroutine takes the tokens
// between the check and the reservation, the refusal keeps them. Messages
// follow x/time's ("rate: Wait(n=5) would exceed context deadline") with
// no fanout prefix: the caller adds it. A wait that ctx ends returns
// context.Cause(ctx); n <= 0 asks for nothing and gets nil.
func waitRate(ctx context.Context, l *rate.Limiter, n int) error {
	limit, burst := l.Limit(), l.Burst()
	if n > burst && limit != rate.Inf {
		return fmt.Errorf("rate: Wait(n=%d) exceeds limiter's burst %d", n, burst)
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if n <= 0 || limit == rate.Inf {
		return nil
	}
	now := time.Now()
	deadline, hasDeadline := ctx.Deadline()
	switch {
	case limit <= 0 && l.TokensAt(now) < float64(n):
		return fmt.Errorf("rate: Wait(n=%d) would never end", n)
	case hasDeadline && l.TokensAt(deadline) < float64(n):
		return fmt.Errorf("rate: Wait(n=%d) would exceed context deadline", n)
	}
	delay := l.ReserveN(now, n).DelayFrom(now)
	switch {
	case delay == rate.InfDuration: // lost a race under a zero limit or a shrunk burst
		return fmt.Errorf("rate: Wait(n=%d) would never end", n)
	case hasDeadline && delay > deadline.Sub(now):
		return fmt.Errorf("rate: Wait(n=%d) would exceed context deadline", n)
	case delay == 0:
		return nil
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
