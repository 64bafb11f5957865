package fanout

import (
	"context"
	"log/slog"
)

// SlogObserver returns an [Observer] that logs to l: each key's outcome at
// Info (Warn if it failed), retries at Warn, hedges at Info, attempts and
// rate-limiter waits at Debug, and the run's totals at Info. Attributes
// are key, attempt and error throughout, with elapsed and limiter_wait on
// attempts and keys, wait and server_directed on retries, after on
// hedges, hedge on attempts and limiter waits, and the run's counts; an
// AdaptiveLimiter's changes at Info and a CircuitBreaker's at Warn, when
// their config holds this Observer.
func SlogObserver(l *slog.Logger) *Observer {
	if l == nil {
		l = slog.Default()
	}
	return &Observer{
		AttemptDone: func(ctx context.Context, a AttemptInfo) {
			l.DebugContext(ctx, "fanout attempt", "key", a.Key, "attempt", a.Attempt, "hedge", a.Hedge,
				"elapsed", a.Elapsed, "error", a.Err)
		},
		Retry: func(ctx context.Context, r RetryInfo) {
			l.WarnContext(ctx, "fanout retry", "key", r.Key, "attempt", r.Attempt, "wait", r.Wait,
				"server_directed", r.ServerDirected, "error", r.Err)
		},
		Hedge: func(ctx context.Context, h HedgeInfo) {
			l.InfoContext(ctx, "fanout hedge", "key", h.Key, "attempt", h.Attempt, "after", h.After)
		},
		LimiterWait: func(ctx context.Context, w WaitInfo) {
			l.DebugContext(ctx, "fanout rate limit wait", "key", w.Key, "attempt", w.Attempt, "hedge", w.Hedge,
				"wait", w.Wait, "error", w.Err)
		},
		TaskDone: func(ctx context.Context, t TaskInfo) {
			level := slog.LevelInfo
			if t.Err != nil {
				level = slog.LevelWarn
			}
			l.Log(ctx, level, "fanout task done", "key", t.Key, "attempts", t.Attempts,
				"elapsed", t.Elapsed, "limiter_wait", t.LimiterWait, "error", t.Err)
		},
		Limit: func(ctx context.Context, a LimitInfo) {
			l.InfoContext(ctx, "fanout adaptive limit", "name", a.Name, "limit", a.Limit, "previous", a.Previous,
				"in_flight", a.InFlight, "reason", a.Reason, "error", a.Err)
		},
		Breaker: func(ctx context.Context, b BreakerInfo) {
			l.WarnContext(ctx, "fanout circuit breaker", "name", b.Name, "from", b.From.String(), "to", b.To.String(),
				"failures", b.Failures, "attempts", b.Attempts, "until", b.Until, "error", b.Err)
		},
		RunDone: func(ctx context.Context, s RunSummary) {
			l.InfoContext(ctx, "fanout run done", "tasks", s.Tasks, "succeeded", s.Succeeded,
				"failed", s.Failed, "skipped", s.Skipped, "attempts", s.Attempts, "hedges", s.Hedges,
				"tokens", s.Cost.Tokens, "cents", s.Cost.Cents, "elapsed", s.Elapsed)
		},
	}
}
