package fanout

import (
	"context"
	"errors"
	"time"
)

// worker is one goroutine claiming tasks. Its scope is what its tasks'
// context carries (spending, the slot a nested run may borrow).
type worker[T any] struct {
	ctx     context.Context
	scope   *scope
	res     *Result[T]    // the key in hand, nil between keys
	task    Task[T]       // its task, until the source hears it ended
	held    bool          // the source has not heard yet
	unsaved bool          // the journal has yet to record the key in hand
	step    int           // how far the key in hand has got
	start   time.Duration // monotime when its task started, 0 before
	lastEnd time.Duration // monotime when its last task ended, if nothing ran since
	quiet   bool          // nothing runs between two of its tasks but a claim
	done    bool          // the worker returned normally
	spare   Result[T]     // where a Result goes when the run keeps none
}

// The steps of a key's life on a worker, so that a worker whose goroutine
// panics or exits part way still delivers its key exactly once.
const (
	stepIdle = iota
	stepRunning
	stepRecord
	stepHooks
	stepFold
	stepEmit
)

// runWorker claims and runs tasks until the source has no more. Once the
// run has stopped, the tasks of a slice are still claimed and recorded as
// skipped, so every key has its Result.
func (r *run[T]) runWorker() {
	w := &worker[T]{scope: newScope(r.ctx, r.sem, r.spend)}
	w.quiet = r.obs == nil && r.fold == nil && r.emit == nil && r.keep == nil && r.cfg.journal == nil
	ctx := r.ctx
	if r.cfg.taskTimeout > 0 {
		// Each attempt's deadline context registers on its parent's
		// mutex: a parent per worker keeps the workers from contending.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
	}
	w.ctx = context.WithValue(ctx, scopeKey{}, w.scope)
	defer r.recoverWorker(w)
	for r.enterWindow() {
		t, i, ok := r.src.claim(r.ctx)
		if !ok {
			r.leaveWindow()
			break
		}
		res := &w.spare
		if r.results != nil {
			res = &r.results[i]
		} else {
			*res = Result[T]{}
		}
		w.res, w.step, w.start = res, stepRunning, 0
		if r.rel != nil {
			w.task, w.held = t, true
		}
		r.runTask(w, t, i, res)
		r.released(w)
		r.finish(w)
	}
	w.done = true
}

// recoverWorker ends a worker. If its goroutine is ending because user code
// called runtime.Goexit or panicked where fanout could not catch it, the
// key in hand fails with that (or, if its task was done, the aggregator
// that broke stops the run), the key is delivered, and another worker
// takes this one's place. The rest of the key's delivery runs user code
// too (the journal, the aggregator, hooks), which may fail again: it runs
// under guard, which survives that, each failure taken in as the first.
func (r *run[T]) recoverWorker(w *worker[T]) {
	if !w.done {
		p := recover()
		err := ErrGoexit
		if p != nil {
			err = newPanicError(p)
		}
		r.failStep(w, err)
		r.released(w)
		for w.res != nil {
			if err := guard(func() { r.finish(w) }); err != nil {
				r.failStep(w, err)
			}
		}
		r.startWorkers(1)
	}
	if r.emit != nil && r.live.Add(-1) == 0 {
		close(r.emit)
	}
}

// failStep takes in that the step of the key in hand ended with err, a
// panic or Goexit.
func (r *run[T]) failStep(w *worker[T], err error) {
	switch w.step {
	case stepRunning, stepRecord:
		var zero T
		w.res.Value, w.res.Err = zero, err
		if w.start > 0 && w.step == stepRunning {
			w.res.Elapsed = monotime() - w.start
		}
	case stepFold:
		r.fail(err)
	}
}

// released tells a source that keeps count of the tasks in flight that
// the worker's task has ended.
func (r *run[T]) released(w *worker[T]) {
	if !w.held {
		return
	}
	w.held = false
	r.rel.release(w.task)
}

// finish records the key in hand: the journal, fail-fast, the observer,
// the aggregator, the stream. Each step is marked before it runs user
// code, so that a worker that dies in one resumes with the next.
func (r *run[T]) finish(w *worker[T]) {
	res := w.res
	if w.step < stepRecord {
		w.step = stepRecord
		if w.unsaved {
			w.unsaved = false
			r.record(w.ctx, res)
		}
	}
	if w.step < stepHooks {
		w.step = stepHooks
		if res.Err != nil && r.cfg.failFast && !errors.Is(res.Err, ErrSkipped) {
			r.cancel(&TaskError{Key: res.Key, Err: res.Err})
		}
		if r.obs != nil {
			r.tally.add(res.Err, res.Attempts, res.Hedges)
			r.obs.taskDone(w.ctx, taskInfo(res))
		}
	}
	if w.step < stepFold {
		w.step = stepFold
		if r.fold != nil {
			r.foldIn(*res)
		}
	}
	if w.step < stepEmit {
		w.step = stepEmit
		if r.emit != nil {
			r.emit <- *res
		}
		if r.keep != nil {
			r.keep(res)
		}
	}
	w.res, w.step = nil, stepIdle
}

// foldIn passes res to the aggregator, one worker at a time, and stops the
// run once it has decided. After a panic in the aggregator (which
// recoverWorker turns into the run's fatal error) it is not called again.
func (r *run[T]) foldIn(res Result[T]) {
	r.foldMu.Lock()
	defer r.foldMu.Unlock()
	if r.fatal.Load() != nil {
		return
	}
	if r.fold(res) {
		r.cancel(ErrStopped)
	}
}
