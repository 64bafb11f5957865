package fanout

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// run is one execution of a set of tasks. Its workers claim tasks from a
// source (source.go) and take each through the per-task path (task.go);
// finish then records the key's Result where the entry point wants it.
type run[T any] struct {
	cfg    *config
	ctx    context.Context
	cancel context.CancelCauseFunc
	src    source[T]
	lazy   bool
	total  int // number of tasks, -1 when the source is lazy

	stopDeadline  context.CancelFunc // nil without WithTimeout
	deadlineCause error              // what the run's deadline, if any, ends it with

	sem     *Semaphore
	borrow  chan struct{} // the slot of the task this run is nested in, if any
	perRes  *resourceGate // per-resource limits taken in turn (lazy or ordered sources)
	hedger  *hedger
	spend   *spending
	obs     *Observer
	start   time.Time // for RunSummary.Elapsed, with an observer
	plain   bool      // no retry, hedge, limiter, timeout or observer: the fast path
	settles bool      // a limiter charges Task.Tokens: attempts may Settle

	work    func() // r.runWorker, as one method value
	workers sync.WaitGroup
	results []Result[T]          // Run and Gather: each worker writes its key's slot
	emit    chan Result[T]       // Stream: completion order
	window  chan struct{}        // WithOrdered: a slot per Result started but not yet yielded
	drained chan struct{}        // WithOrdered: closed when the stream no longer yields
	live    atomic.Int32         // workers still running, for closing emit
	keep    func(*Result[T])     // Group: where each Result goes
	fold    func(Result[T]) bool // Gather: the aggregator's Add, under foldMu
	foldMu  sync.Mutex
	halted  atomic.Bool           // a lazy source is no longer pulled
	fatal   atomic.Pointer[error] // a panic or Goexit outside any task
	tally   runTally
}

func newRun[T any](ctx context.Context, cfg *config, src source[T], total int) *run[T] {
	r := &run[T]{cfg: cfg, src: src, total: total, lazy: total < 0, sem: cfg.sem}
	var deadline time.Time
	if cfg.timeout > 0 {
		deadline = time.Now().Add(cfg.timeout) // before RunStart, which must not push it back
	}
	r.obs = combineObservers(cfg.observers)
	if r.obs != nil {
		r.start = time.Now()
		ctx = r.obs.runStart(ctx, total)
	}
	r.ctx, r.cancel = context.WithCancelCause(ctx)
	r.deadlineCause = context.DeadlineExceeded
	if cfg.timeout > 0 {
		r.ctx, r.stopDeadline = context.WithDeadlineCause(r.ctx, deadline, ErrRunTimeout)
		if parent, ok := ctx.Deadline(); !ok || deadline.Before(parent) {
			r.deadlineCause = ErrRunTimeout
		}
	}
	if r.sem != nil {
		r.borrow = lease(ctx, r.sem)
	}
	if _, queued := src.(releaser[T]); cfg.limitsResources() && !queued {
		r.perRes = &resourceGate{cfg: cfg, sems: map[string]*Semaphore{}}
	}
	if cfg.hedge != nil {
		r.hedger = newHedger(*cfg.hedge, total)
	}
	r.spend = &spending{max: cfg.budget}
	r.settles = slices.ContainsFunc(cfg.limiters, func(u limiterUse) bool { return u.perToken })
	r.plain = cfg.retry == nil && cfg.hedge == nil && len(cfg.limiters) == 0 &&
		cfg.taskTimeout == 0 && r.obs == nil
	r.work = r.runWorker
	return r
}

// workerCount is how many goroutines claim tasks: the limit, or one per
// task, or with only a semaphore its capacity plus a borrowed slot.
func (r *run[T]) workerCount() int {
	n := r.total
	if r.cfg.limit > 0 && (n < 0 || r.cfg.limit < n) {
		n = r.cfg.limit
	}
	if r.cfg.limit == 0 && r.sem != nil && (n < 0 || r.sem.Cap()+1 < n) {
		n = r.sem.Cap() + 1
	}
	return n
}

func (r *run[T]) startWorkers(n int) {
	r.live.Add(int32(n))
	for range n {
		r.workers.Go(r.work)
	}
}

// runAll runs every task and returns when all are done.
func (r *run[T]) runAll() {
	r.runWorkers()
	r.end()
}

func (r *run[T]) runWorkers() {
	r.startWorkers(r.workerCount())
	r.workers.Wait()
}

// stream runs the tasks and yields each Result as it completes, or in
// input order with WithOrdered. If yield returns false, or panics, the
// rest are cancelled, and stream returns once every worker has ended.
func (r *run[T]) stream(yield func(Result[T]) bool) {
	n := r.workerCount()
	r.emit = make(chan Result[T], n)
	if r.cfg.ordered {
		r.window, r.drained = make(chan struct{}, n), make(chan struct{})
		yield = inOrder(yield, r.window)
	}
	r.startWorkers(n)
	defer func() {
		r.cancel(ErrStopped)
		if r.drained != nil {
			close(r.drained)
		}
		for range r.emit {
		}
		r.workers.Wait()
		r.end()
	}()
	for res := range r.emit {
		if !yield(res) {
			return
		}
	}
}

// inOrder returns a yield that holds each Result until those before it in
// input order have been passed to yield, freeing a slot of the window for
// each.
func inOrder[T any](yield func(Result[T]) bool, window chan struct{}) func(Result[T]) bool {
	held := map[int]Result[T]{}
	next := 0
	return func(res Result[T]) bool {
		held[res.Index] = res
		for {
			res, ok := held[next]
			if !ok {
				return true
			}
			delete(held, next)
			next++
			<-window
			if !yield(res) {
				return false
			}
		}
	}
}

func (r *run[T]) leaveWindow() {
	if r.window != nil {
		<-r.window
	}
}

// enterWindow takes a slot of the ordered stream's window before a task
// is claimed, and reports false once the stream yields no more.
func (r *run[T]) enterWindow() bool {
	if r.window == nil {
		return true
	}
	select {
	case r.window <- struct{}{}:
		return true
	case <-r.drained:
		return false
	}
}

func (r *run[T]) end() {
	if r.stopDeadline != nil {
		r.stopDeadline()
	}
	if r.obs != nil {
		r.obs.runDone(r.ctx, r.tally.summary(time.Since(r.start), r.spend.total()))
	}
	r.cancel(nil)
}

// fail stops the run because user code outside any task (an aggregator, a
// source) panicked or called runtime.Goexit. The first such error is the
// run's fatal error.
func (r *run[T]) fail(err error) {
	r.fatal.CompareAndSwap(nil, &err)
	r.cancel(err)
}

func (r *run[T]) fatalErr() error {
	if p := r.fatal.Load(); p != nil {
		return *p
	}
	return nil
}

// halt stops pulling a lazy source; the tasks already pulled go on.
func (r *run[T]) halt() { r.halted.Store(true) }

// pulling reports whether a lazy source may be pulled again.
func (r *run[T]) pulling() bool {
	return r.ctx.Err() == nil && !r.spend.exceeded() && !r.halted.Load()
}

// worker is one goroutine claiming tasks. Its scope is what its tasks'
// context carries (spending, the slot a nested run may borrow).
type worker[T any] struct {
	ctx   context.Context
	scope *scope
	res   *Result[T]    // the key in hand, nil between keys
	task  Task[T]       // its task, until the source hears it ended
	held  bool          // the source has not heard yet
	step  int           // how far the key in hand has got
	start time.Duration // monotime when its task started, 0 before
	done  bool          // the worker returned normally
	spare Result[T]     // where a Result goes when the run keeps none
}

// The steps of a key's life on a worker, so that a worker whose goroutine
// panics or exits part way still delivers its key exactly once.
const (
	stepIdle = iota
	stepRunning
	stepHooks
	stepFold
	stepEmit
)

// runWorker claims and runs tasks until the source has no more. Once the
// run has stopped, the tasks of a slice are still claimed and recorded as
// skipped, so every key has its Result.
func (r *run[T]) runWorker() {
	w := &worker[T]{scope: newScope(r.ctx, r.sem, r.spend)}
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
		w.task, w.held = t, true
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
// takes this one's place.
func (r *run[T]) recoverWorker(w *worker[T]) {
	if !w.done {
		p := recover()
		err := ErrGoexit
		if p != nil {
			err = newPanicError(p)
		}
		switch w.step {
		case stepRunning:
			var zero T
			w.res.Value, w.res.Err = zero, err
			if w.start > 0 {
				w.res.Elapsed = monotime() - w.start
			}
		case stepFold:
			r.fail(err)
		}
		r.released(w)
		if w.res != nil {
			r.finish(w)
		}
		r.startWorkers(1)
	}
	if r.emit != nil && r.live.Add(-1) == 0 {
		close(r.emit)
	}
}

// released tells a source that keeps count of the tasks in flight that
// the worker's task has ended.
func (r *run[T]) released(w *worker[T]) {
	if !w.held {
		return
	}
	w.held = false
	if rel, ok := r.src.(releaser[T]); ok {
		rel.release(w.task)
	}
}

// finish records the key in hand: fail-fast, the observer, the aggregator,
// the stream. Each step is marked before it runs user code, so that a
// worker that dies in one resumes with the next.
func (r *run[T]) finish(w *worker[T]) {
	res := w.res
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

// epoch anchors monotime.
var epoch = time.Now()

// monotime reads the monotonic clock alone, which costs half of time.Now.
func monotime() time.Duration { return time.Since(epoch) }
