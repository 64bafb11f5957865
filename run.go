package fanout

import (
	"cmp"
	"context"
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// source hands out tasks to workers. claim is safe for concurrent use.
type source[T any] interface {
	claim() (t Task[T], index int, ok bool)
}

// sliceTasks claims tasks from a slice with one atomic add each, in
// priority order when any task has a Priority.
type sliceTasks[T any] struct {
	tasks []Task[T]
	order []int // nil: input order
	next  atomic.Int64
}

func sliceSource[T any](tasks []Task[T], cfg *config) *sliceTasks[T] {
	s := &sliceTasks[T]{tasks: tasks}
	if slices.ContainsFunc(tasks, func(t Task[T]) bool { return t.Priority != 0 }) {
		s.order = make([]int, len(tasks))
		for i := range s.order {
			s.order[i] = i
		}
		slices.SortStableFunc(s.order, func(a, b int) int {
			return cmp.Compare(tasks[b].Priority, tasks[a].Priority)
		})
	}
	return s
}

func (s *sliceTasks[T]) claim() (Task[T], int, bool) {
	k := int(s.next.Add(1) - 1)
	if k >= len(s.tasks) {
		return Task[T]{}, 0, false
	}
	if s.order != nil {
		k = s.order[k]
	}
	return s.tasks[k], k, true
}

// lazyTasks pulls tasks from an iterator, one worker at a time.
type lazyTasks[T any] struct {
	mu    sync.Mutex
	next  func() (Task[T], bool)
	stop  func()
	count int
}

func lazySource[T any](seq iter.Seq[Task[T]]) *lazyTasks[T] {
	next, stop := iter.Pull(seq)
	return &lazyTasks[T]{next: next, stop: stop}
}

func (s *lazyTasks[T]) claim() (Task[T], int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.next()
	if !ok {
		return t, 0, false
	}
	s.count++
	return t, s.count - 1, true
}

// run is one execution of a set of tasks.
type run[T any] struct {
	cfg     *config
	ctx     context.Context
	cancel  context.CancelCauseFunc
	src     source[T]
	lazy    bool
	total   int // number of tasks, -1 when the source is lazy
	workers int
	start   time.Time

	deadlineCause error // what the run's deadline, if any, ends it with

	gate   *semGate
	hedger *hedger
	spend  *spending
	obs    *Observer
	plain  bool // no retry, hedge, limiter, timeout or observer: the fast path

	clock     runClock     // for attempt deadlines
	deadlines []*deadlines // each worker's, to stop their attempts
	dlMu      sync.Mutex
	watching  sync.WaitGroup

	fold    func(*Result[T]) // Gather: called with each Result under foldMu
	foldMu  sync.Mutex
	results []Result[T]    // Run and Gather: each worker writes its key's slot
	emit    chan Result[T] // Stream: completion order
	live    atomic.Int32   // workers still running, for closing emit
	tally   runTally       // counts for the observer's RunDone
	release []func()       // undone when the run ends
}

func newRun[T any](ctx context.Context, cfg *config, src source[T], total int) *run[T] {
	r := &run[T]{cfg: cfg, src: src, total: total, lazy: total < 0}
	r.obs = combineObservers(cfg.observers)
	if r.obs != nil {
		r.start = time.Now() // for RunSummary.Elapsed
		ctx = r.obs.runStart(ctx, total)
	}
	r.ctx, r.cancel = context.WithCancelCause(ctx)
	r.deadlineCause = context.DeadlineExceeded
	if cfg.timeout > 0 {
		var stop context.CancelFunc
		r.ctx, stop = context.WithTimeoutCause(r.ctx, cfg.timeout, ErrRunTimeout)
		r.release = append(r.release, stop)
		own, _ := r.ctx.Deadline()
		if parent, ok := ctx.Deadline(); !ok || own.Before(parent) {
			r.deadlineCause = ErrRunTimeout
		}
	}
	if cfg.taskTimeout > 0 {
		r.clock = newRunClock()
		r.watchStop()
	}
	if cfg.sem != nil {
		r.gate = newSemGate(ctx, cfg.sem)
	}
	if cfg.hedge != nil {
		r.hedger = newHedger(*cfg.hedge, total)
	}
	r.spend = &spending{max: cfg.budget}
	r.plain = cfg.retry == nil && cfg.hedge == nil && len(cfg.limiters) == 0 &&
		cfg.taskTimeout == 0 && r.obs == nil
	r.workers = workerCount(cfg, total)
	return r
}

// workerCount is how many goroutines claim tasks: the limit, or one per
// task, or with only a semaphore its capacity plus a borrowed slot.
func workerCount(cfg *config, total int) int {
	n := total
	if cfg.limit > 0 && (n < 0 || cfg.limit < n) {
		n = cfg.limit
	}
	if cfg.limit == 0 && cfg.sem != nil && (n < 0 || cfg.sem.Cap()+1 < n) {
		n = cfg.sem.Cap() + 1
	}
	return n
}

// watchStop cancels the attempts in flight when the run stops: their
// deadline contexts are not registered on the run's context (see
// deadline.go). The watch ends with the run.
func (r *run[T]) watchStop() {
	r.watching.Add(1)
	stop := context.AfterFunc(r.ctx, func() {
		defer r.watching.Done()
		cause := context.Cause(r.ctx)
		r.dlMu.Lock()
		defer r.dlMu.Unlock()
		for _, dl := range r.deadlines {
			dl.stop(cause)
		}
	})
	r.release = append(r.release, func() {
		if stop() {
			r.watching.Done()
		}
		r.watching.Wait()
	})
}

// runAll runs every task, the calling goroutine among the workers, and
// returns when all are done.
func (r *run[T]) runAll() {
	var wg sync.WaitGroup
	work := r.work // one method value, not one per worker
	for range r.workers - 1 {
		wg.Go(work)
	}
	r.work()
	wg.Wait()
	r.end()
}

// stream runs the tasks and yields each Result as it completes. If yield
// returns false, the rest are cancelled, and stream returns once they have
// all ended.
func (r *run[T]) stream(yield func(Result[T]) bool) {
	r.emit = make(chan Result[T], r.workers)
	r.live.Store(int32(r.workers))
	work := r.work
	for range r.workers {
		go work()
	}
	defer func() {
		r.cancel(ErrStopped)
		for range r.emit {
		}
		r.end()
	}()
	for res := range r.emit {
		if !yield(res) {
			return
		}
	}
}

func (r *run[T]) end() {
	for _, f := range r.release {
		f()
	}
	if r.obs != nil {
		r.obs.runDone(r.ctx, r.tally.summary(time.Since(r.start), r.spend.total()))
	}
	r.cancel(nil)
}

// work claims and runs tasks until the source is exhausted. Once the run
// has stopped, the tasks of a slice are claimed and recorded as skipped, so
// every key has its Result; a lazy source, which may be endless, is no
// longer pulled, nor once the budget is spent.
func (r *run[T]) work() {
	w := &worker[T]{Context: r.ctx, run: r}
	if r.cfg.taskTimeout > 0 {
		w.deadlines = &deadlines{}
		r.dlMu.Lock()
		r.deadlines = append(r.deadlines, w.deadlines)
		r.dlMu.Unlock()
		defer w.deadlines.close()
	}
	w.now = monotime()
	for !r.lazy || (r.ctx.Err() == nil && !r.spend.exceeded()) {
		t, i, ok := r.src.claim()
		if !ok {
			break
		}
		res := &w.scratch
		if r.results != nil {
			res = &r.results[i]
		} else {
			*res = Result[T]{}
		}
		r.do(w, t, i, res)
		r.finish(res)
		if r.emit != nil {
			r.emit <- *res
			w.now = monotime() // the send may have waited for the consumer
		}
	}
	if r.emit != nil && r.live.Add(-1) == 0 {
		close(r.emit)
	}
}

// do runs task t, the i-th, into res, which must be zero.
func (r *run[T]) do(w *worker[T], t Task[T], i int, res *Result[T]) {
	// res is zero on entry: set fields one by one rather than copy a
	// whole Result, which costs a bulk write barrier per task.
	res.Key, res.Index = t.Key, i
	if r.lazy {
		if err := validateTask(i, t); err != nil {
			res.Err = err
			return
		}
	}
	if r.ctx.Err() != nil {
		res.Err = skipped(context.Cause(r.ctx))
		return
	}
	if r.gate != nil {
		borrowed, err := r.gate.acquire(r.ctx)
		if err != nil {
			res.Err = skipped(err)
			return
		}
		defer r.gate.release(borrowed)
		w.now = monotime()
	}
	if r.spend.exceeded() {
		res.Err = skipped(ErrBudgetExceeded)
		return
	}
	// One clock read per task: a task starts when the one before it on
	// this worker ended (claiming a task takes nanoseconds).
	start := w.now
	if r.plain {
		res.Value, res.Err = call(w, t)
		res.Attempts = 1
	} else {
		r.obs.taskStart(w, t.Key)
		r.attempts(w, t, res)
	}
	w.now = monotime()
	res.Elapsed = w.now - start
	if w.spentAny.Load() {
		res.Cost = w.takeSpent()
	}
}

// epoch anchors monotime.
var epoch = time.Now()

// monotime reads the monotonic clock alone, which costs half of time.Now.
func monotime() time.Duration { return time.Since(epoch) }

// finish records a finished key: fail-fast, tallies, observer.
func (r *run[T]) finish(res *Result[T]) {
	if res.Err != nil && r.cfg.failFast {
		r.cancel(&TaskError{Key: res.Key, Err: res.Err})
	}
	if r.fold != nil {
		r.foldMu.Lock()
		r.fold(res)
		r.foldMu.Unlock()
	}
	if r.obs != nil {
		r.tally.add(res.Err, res.Attempts, res.Hedges)
		r.obs.taskDone(r.ctx, taskInfo(res))
	}
}

// call runs one try of t, turning a panic into a *PanicError and a bare
// context error into one that names the cause.
func call[T any](ctx context.Context, t Task[T]) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = newPanicError(p)
		}
	}()
	v, err = t.Do(ctx)
	if err != nil {
		err = withCause(ctx, err)
	}
	return v, err
}

// worker is the context a worker's tasks run under: the run's context,
// plus what Spend and nested runs look up in it. One is made per worker,
// not per task.
type worker[T any] struct {
	context.Context
	run       *run[T]
	deadlines *deadlines    // nil without WithTaskTimeout
	now       time.Duration // monotime when the worker's last task ended
	scratch   Result[T]     // where a Result goes when the run keeps none
	mu        sync.Mutex
	spent     Cost
	spentAny  atomic.Bool
}

func (w *worker[T]) Value(key any) any {
	switch k := key.(type) {
	case spendKey:
		return spender(w)
	case heldSlot:
		if w.run.gate != nil && k.sem == w.run.gate.sem {
			return true
		}
	}
	return w.Context.Value(key)
}

func (w *worker[T]) addSpent(c Cost) {
	w.mu.Lock()
	w.spent = w.spent.Add(c)
	w.mu.Unlock()
	w.spentAny.Store(true)
	w.run.spend.add(c)
}

func (w *worker[T]) takeSpent() Cost {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.spent
	w.spent = Cost{}
	w.spentAny.Store(false)
	return c
}
