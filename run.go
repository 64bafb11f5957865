package fanout

import (
	"context"
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
	rel     releaser[T]   // the source, if it must hear when a task ends
	hedger  *hedger
	spend   *spending
	obs     *Observer
	start   time.Time // for RunSummary.Elapsed, with an observer
	plain   bool      // no retry, hedge, limiter, guard or observer: the fast path
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
	r.rel, _ = src.(releaser[T])
	if cfg.limitsResources() && r.rel == nil {
		r.perRes = &resourceGate{cfg: cfg, sems: map[string]*Semaphore{}}
	}
	if cfg.hedge != nil {
		r.hedger = newHedger(*cfg.hedge, total)
	}
	r.spend = &spending{max: cfg.budget}
	r.settles = slices.ContainsFunc(cfg.limiters, func(u limiterUse) bool { return u.perToken })
	r.plain = cfg.retry == nil && cfg.hedge == nil && len(cfg.limiters) == 0 && len(cfg.guards) == 0 &&
		r.obs == nil
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

// epoch anchors monotime.
var epoch = time.Now()

// monotime reads the monotonic clock alone, which costs half of time.Now.
func monotime() time.Duration { return time.Since(epoch) }
