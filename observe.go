package fanout

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Observer watches runs. Each field is an optional hook; nil ones are
// skipped, and a run with no Observer pays nothing for the feature. Hooks
// are called synchronously from the goroutine doing the work, without any
// lock of the run held, so a slow hook slows only its own task; a hook
// that panics is recovered and ignored, and never costs a result. Hooks of
// one run may be called concurrently, so they must be safe for concurrent
// use.
//
// RunStart and AttemptStart may return a derived context (a tracing span,
// say): the run, or the attempt's call of Do, then runs under it, and the
// matching RunDone or AttemptDone receives it.
type Observer struct {
	// RunStart is called before any task starts; tasks is -1 for a lazy
	// source.
	RunStart func(ctx context.Context, tasks int) context.Context
	// TaskStart is called once a task holds its slot, before it waits on
	// the rate limiters for its first attempt. A key skipped before that
	// (the run had stopped, the budget was spent) gets TaskDone alone.
	TaskStart func(ctx context.Context, key string)
	// AttemptStart is called before each call of Do, hedged copies too.
	AttemptStart func(ctx context.Context, a AttemptInfo) context.Context
	// AttemptDone is called after each call of Do, with Elapsed and Err set.
	AttemptDone func(ctx context.Context, a AttemptInfo)
	// Retry is called before waiting to retry a failed attempt.
	Retry func(ctx context.Context, r RetryInfo)
	// Hedge is called when a hedged copy of an attempt starts.
	Hedge func(ctx context.Context, h HedgeInfo)
	// LimiterWait is called after each wait on the rate limiters.
	LimiterWait func(ctx context.Context, w WaitInfo)
	// TaskDone is called once per key with its outcome, skipped keys too.
	TaskDone func(ctx context.Context, t TaskInfo)
	// RunDone is called once every key is done, with the run's totals.
	RunDone func(ctx context.Context, s RunSummary)
	// Limit is called after an [AdaptiveLimiter] whose config holds this
	// Observer changes its limit, with the context of the attempt whose
	// outcome changed it. Runs do not call it, since one limiter serves
	// many runs.
	Limit func(ctx context.Context, l LimitInfo)
	// Breaker is called after a [CircuitBreaker] whose config holds this
	// Observer changes state, with the context of the attempt that changed
	// it (context.Background() when State found the cool-off over). Runs
	// do not call it, since one breaker serves many runs.
	Breaker func(ctx context.Context, b BreakerInfo)
}

// AttemptInfo describes one call of a task's Do.
type AttemptInfo struct {
	Key     string
	Attempt int  // 1 for the first try, 2 for the first retry, ...
	Hedge   bool // a hedged copy of the attempt
	// LimiterWait is how long the attempt waited on the rate limiters
	// before it started.
	LimiterWait time.Duration
	Elapsed     time.Duration // set in AttemptDone
	Err         error         // set in AttemptDone
}

// RetryInfo describes a retry about to wait.
type RetryInfo struct {
	Key            string
	Attempt        int // the attempt that failed
	Wait           time.Duration
	ServerDirected bool // the wait came from the error's RetryAfter
	Err            error
}

// HedgeInfo describes a hedged copy being started.
type HedgeInfo struct {
	Key     string
	Attempt int
	After   time.Duration // how long the attempt had run
}

// WaitInfo describes a wait on the rate limiters before an attempt.
type WaitInfo struct {
	Key     string
	Attempt int
	Hedge   bool // the wait of a hedged copy
	Wait    time.Duration
	Err     error
}

// TaskInfo is a key's outcome, without its value.
type TaskInfo struct {
	Key         string
	Index       int
	Err         error
	Attempts    int
	Hedges      int
	Elapsed     time.Duration
	LimiterWait time.Duration
	Cost        Cost
}

// RunSummary totals a run.
type RunSummary struct {
	Tasks     int // keys in all
	Succeeded int
	Failed    int // failed, other than skipped
	Skipped   int // never made an attempt: the error matches ErrSkipped
	Attempts  int
	Hedges    int
	Cost      Cost
	Elapsed   time.Duration
}

// WithObserver calls o's hooks as the run goes. Several WithObserver
// options call each observer in turn.
func WithObserver(o *Observer) Option {
	return func(c *config) {
		if o == nil {
			c.invalid("WithObserver(nil): observer must not be nil")
			return
		}
		c.observers = append(c.observers, o)
	}
}

func taskInfo[T any](r *Result[T]) TaskInfo {
	return TaskInfo{Key: r.Key, Index: r.Index, Err: r.Err, Attempts: r.Attempts, Hedges: r.Hedges,
		Elapsed: r.Elapsed, LimiterWait: r.LimiterWait, Cost: r.Cost}
}

// combineObservers returns one Observer calling each of obs, or nil.
func combineObservers(obs []*Observer) *Observer {
	switch len(obs) {
	case 0:
		return nil
	case 1:
		return obs[0]
	}
	return &Observer{
		RunStart: func(ctx context.Context, n int) context.Context {
			for _, o := range obs {
				ctx = o.runStart(ctx, n)
			}
			return ctx
		},
		TaskStart: func(ctx context.Context, key string) { each(obs, func(o *Observer) { o.taskStart(ctx, key) }) },
		AttemptStart: func(ctx context.Context, a AttemptInfo) context.Context {
			for _, o := range obs {
				ctx = o.attemptStart(ctx, a)
			}
			return ctx
		},
		AttemptDone: func(ctx context.Context, a AttemptInfo) { each(obs, func(o *Observer) { o.attemptDone(ctx, a) }) },
		Retry:       func(ctx context.Context, r RetryInfo) { each(obs, func(o *Observer) { o.retry(ctx, r) }) },
		Hedge:       func(ctx context.Context, h HedgeInfo) { each(obs, func(o *Observer) { o.hedge(ctx, h) }) },
		LimiterWait: func(ctx context.Context, w WaitInfo) { each(obs, func(o *Observer) { o.limiterWait(ctx, w) }) },
		TaskDone:    func(ctx context.Context, t TaskInfo) { each(obs, func(o *Observer) { o.taskDone(ctx, t) }) },
		RunDone:     func(ctx context.Context, s RunSummary) { each(obs, func(o *Observer) { o.runDone(ctx, s) }) },
		Limit:       func(ctx context.Context, l LimitInfo) { each(obs, func(o *Observer) { o.limitChanged(ctx, l) }) },
		Breaker:     func(ctx context.Context, b BreakerInfo) { each(obs, func(o *Observer) { o.breakerChanged(ctx, b) }) },
	}
}

func each(obs []*Observer, f func(*Observer)) {
	for _, o := range obs {
		f(o)
	}
}

// ignorePanic is deferred around every hook: an observer's bug must not
// cost a result.
func ignorePanic() { _ = recover() }

func (o *Observer) runStart(ctx context.Context, n int) (out context.Context) {
	out = ctx // kept if the hook panics
	if o == nil || o.RunStart == nil {
		return out
	}
	defer ignorePanic()
	if c := o.RunStart(ctx, n); c != nil {
		out = c
	}
	return out
}

func (o *Observer) attemptStart(ctx context.Context, a AttemptInfo) (out context.Context) {
	out = ctx // kept if the hook panics
	if o == nil || o.AttemptStart == nil {
		return out
	}
	defer ignorePanic()
	if c := o.AttemptStart(ctx, a); c != nil {
		out = c
	}
	return out
}

func (o *Observer) taskStart(ctx context.Context, key string) {
	if o != nil && o.TaskStart != nil {
		defer ignorePanic()
		o.TaskStart(ctx, key)
	}
}

func (o *Observer) attemptDone(ctx context.Context, a AttemptInfo) {
	if o != nil && o.AttemptDone != nil {
		defer ignorePanic()
		o.AttemptDone(ctx, a)
	}
}

func (o *Observer) retry(ctx context.Context, r RetryInfo) {
	if o != nil && o.Retry != nil {
		defer ignorePanic()
		o.Retry(ctx, r)
	}
}

func (o *Observer) hedge(ctx context.Context, h HedgeInfo) {
	if o != nil && o.Hedge != nil {
		defer ignorePanic()
		o.Hedge(ctx, h)
	}
}

func (o *Observer) limiterWait(ctx context.Context, w WaitInfo) {
	if o != nil && o.LimiterWait != nil {
		defer ignorePanic()
		o.LimiterWait(ctx, w)
	}
}

func (o *Observer) taskDone(ctx context.Context, t TaskInfo) {
	if o != nil && o.TaskDone != nil {
		defer ignorePanic()
		o.TaskDone(ctx, t)
	}
}

func (o *Observer) runDone(ctx context.Context, s RunSummary) {
	if o != nil && o.RunDone != nil {
		defer ignorePanic()
		o.RunDone(ctx, s)
	}
}

// runTally counts outcomes for RunSummary.
type runTally struct {
	tasks, succeeded, failed, skipped, attempts, hedges atomic.Int64
}

func (t *runTally) add(err error, attempts, hedges int) {
	t.tasks.Add(1)
	t.attempts.Add(int64(attempts))
	t.hedges.Add(int64(hedges))
	switch {
	case err == nil:
		t.succeeded.Add(1)
	case errors.Is(err, ErrSkipped):
		t.skipped.Add(1)
	default:
		t.failed.Add(1)
	}
}

func (t *runTally) summary(elapsed time.Duration, cost Cost) RunSummary {
	return RunSummary{
		Tasks: int(t.tasks.Load()), Succeeded: int(t.succeeded.Load()), Failed: int(t.failed.Load()),
		Skipped: int(t.skipped.Load()), Attempts: int(t.attempts.Load()), Hedges: int(t.hedges.Load()),
		Cost: cost, Elapsed: elapsed,
	}
}

func (o *Observer) limitChanged(ctx context.Context, l LimitInfo) {
	if o != nil && o.Limit != nil {
		defer ignorePanic()
		o.Limit(ctx, l)
	}
}

func (o *Observer) breakerChanged(ctx context.Context, b BreakerInfo) {
	if o != nil && o.Breaker != nil {
		defer ignorePanic()
		o.Breaker(ctx, b)
	}
}
