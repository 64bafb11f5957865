package fanout

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// A task's life on a worker, top to bottom: runTask takes a claimed task
// to its outcome; attempts is the retry loop; each attempt waits on the
// rate limiters and checks the budget, then try makes one call, or hedged
// races the call against one copy of it; call runs Do under the attempt's
// deadline and turns a panic into the key's error.

// runTask runs task t, the i-th, into res, which is zero but for its
// place in the run.
func (r *run[T]) runTask(w *worker[T], t Task[T], i int, res *Result[T]) {
	// Set fields one by one rather than copy a whole Result, which costs
	// a bulk write barrier per task.
	res.Key, res.Index, res.weight = t.Key, i, t.Weight
	if r.lazy {
		if err := validateTask(r.cfg, i, t); err != nil {
			res.Err = err
			return
		}
	}
	if r.cfg.journal != nil {
		if r.replay(w.ctx, t, res) {
			return
		}
		// Recorded by finish, once the key's outcome is final: a task
		// that panics where fanout cannot catch it, or calls Goexit, has
		// its error only then.
		w.unsaved = true
	}
	if r.ctx.Err() != nil {
		res.Err = skipped(context.Cause(r.ctx))
		return
	}
	if r.sem != nil {
		release, err := r.sem.acquire(r.ctx, r.borrow)
		if err != nil {
			res.Err = skipped(err)
			return
		}
		defer release()
	}
	if r.perRes != nil {
		if s := r.perRes.sem(t.Resource); s != nil {
			release, err := s.acquire(r.ctx, nil)
			if err != nil {
				res.Err = skipped(errNoResource(t.Resource, err))
				return
			}
			defer release()
		}
	}
	if !r.plain && r.spend.exceeded() {
		// Before TaskStart: a key skipped for a spent budget gets
		// TaskDone alone, as one skipped for a stopped run does.
		res.Err = skipped(ErrBudgetExceeded)
		return
	}
	// One clock read per task where nothing runs between two tasks of a
	// worker but a claim (nanoseconds): the end of one is the start of the
	// next. Hooks, an aggregator, a stream's consumer or a slot's wait
	// between them would be billed to the next task, so then read afresh.
	w.start = w.lastEnd
	if w.start == 0 || r.sem != nil || r.perRes != nil {
		w.start = monotime()
	}
	if r.plain {
		r.callOnce(w, t, res)
	} else {
		r.obs.taskStart(w.ctx, t.Key)
		r.attempts(w.ctx, t, res)
	}
	end := monotime()
	res.Elapsed = end - w.start
	if w.quiet {
		w.lastEnd = end
	}
	res.Cost = w.scope.takeSpent()
}

// callOnce is the fast path: one call, no policy but the budget.
func (r *run[T]) callOnce(w *worker[T], t Task[T], res *Result[T]) {
	if r.spend.limited() {
		if err := r.spend.admit(w.ctx, int64(t.Tokens)); err != nil {
			res.Err = skipped(err)
			return
		}
		defer r.spend.done(int64(t.Tokens))
	}
	res.Attempts = 1
	v, err := r.call(w.ctx, t)
	if err != nil {
		res.Err = err
		return
	}
	res.Value = v
}

// attempts runs t until it succeeds, its retries run out, or the run
// stops.
func (r *run[T]) attempts(ctx context.Context, t Task[T], res *Result[T]) {
	policy := r.cfg.retry
	var b BackOff
	for n := 1; ; n++ {
		p, err := r.ready(ctx, t, n, false)
		res.LimiterWait += p.wait
		if err != nil {
			res.Err = notStarted(err, res.Err)
			return
		}
		v, err := r.attempt(ctx, t, AttemptInfo{Key: t.Key, Attempt: n, LimiterWait: p.wait}, p, res)
		if err == nil {
			res.Value, res.Err = v, nil
			return
		}
		res.Err = err
		if policy == nil || n >= policy.maxAttempts() || ctx.Err() != nil || !policy.retryable(err) {
			return
		}
		if b == nil {
			b = policy.newBackOff()
		}
		wait, server, ok := policy.nextWait(b, err)
		if !ok {
			return
		}
		if server && policy.Jitter >= 0 {
			wait += jitter(wait)
		}
		r.obs.retry(ctx, RetryInfo{Key: t.Key, Attempt: n, Wait: wait, ServerDirected: server, Err: err})
		if err := sleep(ctx, wait); err != nil {
			res.Err = withLast(err, res.Err)
			return
		}
	}
}

// pass is what an attempt got through on its way to the call: the time it
// waited on the limiters, and the guards to tell how it ended.
type pass struct {
	wait   time.Duration
	guards []func(Outcome)
	won    *atomic.Bool // hedged: set when the attempt succeeds, before its budget and guards are given back
}

// ready waits on the run's rate limiters for the n-th attempt of t, or a
// hedged copy of it, then on the budget, then on the guards: the last
// moment before the call is paid for. The attempt that follows a nil error
// must be made with try, which gives its budget estimate back and tells
// the guards.
func (r *run[T]) ready(ctx context.Context, t Task[T], n int, hedge bool) (p pass, err error) {
	if p.wait, err = r.waitLimiters(ctx, t, n, hedge); err != nil {
		return p, err
	}
	if err = r.spend.admit(ctx, int64(t.Tokens)); err != nil {
		return p, err
	}
	if len(r.cfg.guards) == 0 {
		return p, nil
	}
	passed := false
	defer func() {
		if passed {
			return
		}
		// Refused, or a guard (or a cooldown's Until) panicked or called
		// Goexit: the attempt never starts. A panic refuses it like any
		// guard; either way the guards passed hear, and the budget has
		// its estimate back.
		if v := recover(); v != nil {
			err = newPanicError(v)
		} else if err == nil {
			err = ErrGoexit
		}
		r.giveBack(t, p, err)
	}()
	if err = r.admit(ctx, Admission{Key: t.Key, Attempt: n, Hedge: hedge}, &p.guards); err != nil {
		return p, err
	}
	// A guard may have made the attempt wait: a cooldown may have begun
	// meanwhile.
	if err = r.coolDowns(ctx, t.Resource); err != nil {
		return p, err
	}
	passed = true
	return p, nil
}

// giveBack ends an attempt of t that ready let through and that will not
// be made after all: the guards it passed hear err, and the budget has its
// estimate back.
func (r *run[T]) giveBack(t Task[T], p pass, err error) {
	tell(p.guards, Outcome{Err: err})
	r.spend.done(int64(t.Tokens))
}

// notStarted is the error of a key whose next attempt could not start:
// skipped if it never made one for the budget, or the reason with the
// last attempt's error.
func notStarted(reason, last error) error {
	if last == nil && errors.Is(reason, ErrBudgetExceeded) {
		return skipped(reason)
	}
	return withLast(reason, last)
}

// withLast joins the reason a task stopped trying with the error of its
// last attempt, which backoff alone would lose.
func withLast(reason, last error) error {
	if last == nil {
		return reason
	}
	return wrap(reason, "; last attempt: ", last)
}

// attempt makes one try of t, hedged if the run hedges.
func (r *run[T]) attempt(ctx context.Context, t Task[T], info AttemptInfo, p pass, res *Result[T]) (T, error) {
	res.Attempts++
	if r.hedger != nil {
		return r.hedged(ctx, t, info, p, res)
	}
	return r.try(ctx, t, info, p)
}

// try makes one call of t, tells the observer, and pauses the run's
// Throttles if the server asked everyone to wait.
func (r *run[T]) try(ctx context.Context, t Task[T], info AttemptInfo, p pass) (v T, err error) {
	defer r.spend.done(int64(t.Tokens))
	var start time.Time
	if len(p.guards) > 0 || r.obs != nil {
		start = time.Now()
	}
	if len(p.guards) > 0 {
		defer func() { tell(p.guards, Outcome{Err: err, Elapsed: time.Since(start), Started: true}) }()
	}
	if r.settles {
		ctx = context.WithValue(ctx, settleKey{}, &settlement{limiters: r.cfg.limiters, tokens: t.Tokens, resource: t.Resource})
	}
	err = ErrGoexit // what the guards hear if the call never returns
	ctx = r.obs.attemptStart(ctx, info)
	v, err = r.call(ctx, t)
	if err == nil && p.won != nil {
		p.won.Store(true) // before done and tell let a held copy through
	}
	if err != nil {
		r.pauseFor(err, t.Resource)
	}
	if r.obs != nil {
		info.Elapsed, info.Err = time.Since(start), err
		r.obs.attemptDone(ctx, info)
	}
	return v, err
}

// call runs t's Do once, under the attempt's deadline if the run sets one.
// A panic becomes a *PanicError, and a bare context error one that also
// names the cause. On error the value is zero.
func (r *run[T]) call(ctx context.Context, t Task[T]) (v T, err error) {
	if d := r.cfg.taskTimeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, d, ErrTaskTimeout)
		defer cancel()
	}
	defer func() {
		if p := recover(); p != nil {
			var zero T
			v, err = zero, newPanicError(p)
		}
	}()
	v, err = t.Do(ctx)
	if err != nil {
		var zero T
		v, err = zero, withCause(ctx, err)
	}
	return v, err
}

// outcome is how one copy of a hedged attempt ended.
type outcome[T any] struct {
	v      T
	err    error
	hedge  bool          // the copy, not the attempt
	called bool          // Do was called: the copy passed its limiters and the budget
	wait   time.Duration // the copy's limiter wait
}

// hedged makes one attempt of t and, if it runs past the hedge delay, one
// copy of it. The first success wins and cancels the other with
// ErrHedgeLost; if both fail, the attempt's own error is the answer.
// Either way both have ended when hedged returns.
func (r *run[T]) hedged(ctx context.Context, t Task[T], info AttemptInfo, p pass, res *Result[T]) (T, error) {
	if info.Attempt == 1 {
		r.hedger.started.Add(1) // tasks, not attempts: retries do not grow the budget
	}
	var calls sync.WaitGroup
	defer calls.Wait()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan outcome[T], 2)
	var ended atomic.Bool // set as soon as the attempt returns, before it reports
	var won atomic.Bool
	p.won = &won
	start := time.Now()
	calls.Go(func() { r.firstCopy(ctx, t, info, p, &ended, done) })

	first, finished := r.awaitHedge(start, done)
	if finished {
		return first.v, first.err
	}
	if ended.Load() || ctx.Err() != nil || !r.hedger.take() {
		first = <-done
		return first.v, first.err
	}
	r.obs.hedge(ctx, HedgeInfo{Key: t.Key, Attempt: info.Attempt, After: time.Since(start)})
	calls.Go(func() { r.secondCopy(ctx, t, info, &won, done) })

	first = <-done
	if first.err == nil {
		cancel(ErrHedgeLost)
	}
	second := <-done
	attempt, hedge := first, second
	if first.hedge {
		attempt, hedge = second, first
	}
	res.LimiterWait += hedge.wait
	if hedge.called {
		res.Attempts++
		res.Hedges++
	}
	switch {
	case first.err == nil:
		return first.v, nil
	case second.err == nil:
		return second.v, nil
	}
	return attempt.v, attempt.err
}

// awaitHedge waits until the attempt started at start has run for the
// hedge delay, or until it ends first: then it returns its outcome and
// true.
func (r *run[T]) awaitHedge(start time.Time, done <-chan outcome[T]) (outcome[T], bool) {
	for {
		d, known, changed := r.hedger.delay()
		if known {
			timer := time.NewTimer(d - time.Since(start))
			defer timer.Stop()
			select {
			case o := <-done:
				return o, true
			case <-timer.C:
				return outcome[T]{}, false
			}
		}
		select {
		case o := <-done:
			return o, true
		case <-changed: // the estimate may be known now
		}
	}
}

// firstCopy runs the attempt itself, and times it for the hedge delay
// unless it was cancelled. A panic or Goexit is its outcome's error.
func (r *run[T]) firstCopy(ctx context.Context, t Task[T], info AttemptInfo, p pass, ended *atomic.Bool, done chan<- outcome[T]) {
	h := r.hedger
	h.begin()
	start := monotime()
	o := outcome[T]{called: true, err: ErrGoexit}
	defer func() {
		if p := recover(); p != nil {
			o.err = newPanicError(p)
		}
		ended.Store(true)
		h.end(monotime()-start, ctx.Err() == nil)
		done <- o
	}()
	o.v, o.err = r.try(ctx, t, info, p)
}

// secondCopy waits on the limiters and the budget like any attempt, then
// runs the hedged copy, unless the attempt has won meanwhile: a copy held
// by the budget or a guard until the attempt ended is let through by the
// very end of an attempt that may have succeeded.
func (r *run[T]) secondCopy(ctx context.Context, t Task[T], info AttemptInfo, won *atomic.Bool, done chan<- outcome[T]) {
	o := outcome[T]{hedge: true, err: ErrGoexit}
	var start time.Duration
	defer func() {
		if p := recover(); p != nil {
			o.err = newPanicError(p)
		}
		if o.called && ctx.Err() == nil { // a latency unless the attempt or the run cancelled it
			r.hedger.record(monotime() - start)
		}
		done <- o
	}()
	p, err := r.ready(ctx, t, info.Attempt, true)
	if o.wait, o.err = p.wait, err; err != nil {
		return
	}
	if won.Load() {
		r.giveBack(t, p, ErrHedgeLost)
		o.err = ErrHedgeLost
		return
	}
	info.Hedge, info.LimiterWait = true, o.wait
	o.called, start = true, monotime()
	o.v, o.err = r.try(ctx, t, info, p)
}

// sleep waits for d or until ctx ends, and then returns ctx's cause. A
// context that has already ended ends even a zero wait.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
