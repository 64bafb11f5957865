package fanout

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"sync"
)

var (
	// ErrQueueFull is TryGo's error when the tasks waiting for a slot of
	// a [Group] already fill the queue set by [WithQueue].
	ErrQueueFull = errors.New("fanout: group queue full")

	// ErrGroupDone is the error of adding a task to a [Group] whose Wait
	// or Stream has seen every task end.
	ErrGroupDone = errors.New("fanout: group done")

	// ErrDuplicateKey is the error of a key given twice: to a [Group]'s
	// Go, which then adds nothing (so a crawler can dedupe by URL with it),
	// or in the tasks of a run, which is then refused.
	ErrDuplicateKey = errors.New("fanout: duplicate key")
)

// Group runs keyed tasks that are added while it runs, from the caller or
// from inside its own tasks: a crawler whose pages link to more pages, a
// planner whose steps call for more steps. It takes the options of [Run]
// (limits, semaphores, deadlines, retries, rate limits, hedging, budget,
// observer, fail-fast) and gives each key one [Result], as Run does.
//
// Go never blocks on the limit: a task that is added while every slot is
// busy waits in the group's queue, highest Priority first, so a task that
// adds tasks cannot deadlock (unlike errgroup's Go under SetLimit). A
// group's timeout (WithTimeout) runs from NewGroup.
//
// Wait returns the Results once every task, those added by tasks included,
// has ended; Stream yields them as they complete instead; [GatherGroup]
// folds them into an aggregator that may stop the group early. Call one
// of them exactly once: a group that is never waited for leaves its
// running tasks' goroutines behind, which goleak reports. Go, GoTask and
// TryGo are safe for concurrent use, from any goroutine, until the group
// is done.
//
// Under WithLimit(8), on the 2-core benchmark machine, a Go of a trivial
// task and its share of Wait cost about 0.9 µs and 0.12 allocations:
// about 4 times a task of Run, whose tasks are known up front, 1.3 times
// errgroup with a map of results, and less than that with a timeout per
// task (see BENCHMARKS.md). Most of it is waking an idle worker per task.
type Group[T any] struct {
	ctx        context.Context // NewGroup's, for the aggregator's Result
	r          *run[T]
	maxWorkers int
	queueCap   int // 0: unbounded

	mu       sync.Mutex
	ready    []pendingTask[T] // added while a worker and the resource were free
	pending  *taskQueue[T]    // added while every worker or the resource was busy
	keys     map[string]int
	list     []Result[T]   // by the order of Go
	order    []int         // indexes of the ended keys, in completion order
	active   int           // workers running
	idle     int           // workers among them waiting for a task
	free     *sync.Cond    // on mu: wakes the idle workers
	waiting  bool          // Wait or Stream was called: the group ends when idle
	done     bool          // idle after waiting: no more tasks
	changed  chan struct{} // closed by the next wake; nil while nobody waits
	unwatch  func() bool
	watching sync.WaitGroup // the AfterFunc of unwatch, once started
	end      sync.Once
}

// NewGroup starts an empty group under ctx. It reports a bad option at
// once.
func NewGroup[T any](ctx context.Context, opts ...Option) (*Group[T], error) {
	cfg := newConfig(opts)
	if err := validateOptions(cfg); err != nil {
		return nil, err
	}
	g := &Group[T]{ctx: ctx, keys: map[string]int{}, queueCap: cfg.queue, pending: newTaskQueue[T](cfg)}
	g.free = sync.NewCond(&g.mu)
	g.r = newRun(ctx, cfg, g, -1)
	// Idle workers wake when the run stops, to skip what is queued.
	g.watching.Add(1)
	g.unwatch = context.AfterFunc(g.r.ctx, func() {
		defer g.watching.Done()
		g.wakeAll()
	})
	g.r.keep = g.keep
	switch {
	case cfg.limit > 0:
		g.maxWorkers = cfg.limit
	case cfg.sem != nil:
		g.maxWorkers = cfg.sem.Cap() + 1
	default:
		g.maxWorkers = math.MaxInt
	}
	return g, nil
}

// WithQueue bounds a [Group]'s queue, the tasks added but not yet started,
// at n: TryGo refuses a task beyond it with [ErrQueueFull], for load
// shedding. Go ignores the bound, so that a task adding tasks never fails
// or waits for room. Other entry points ignore the option.
func WithQueue(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.invalid("WithQueue(%d): queue size must be positive", n)
			return
		}
		c.queue = n
	}
}

// Go adds a task with key and do. It never blocks. A duplicate or empty
// key, a nil do, or a group that is done is an error for this call; the
// group goes on.
func (g *Group[T]) Go(key string, do func(ctx context.Context) (T, error)) error {
	return g.add(Task[T]{Key: key, Do: do}, false)
}

// GoTask is Go for a Task with its Weight, Priority or Tokens set.
func (g *Group[T]) GoTask(t Task[T]) error { return g.add(t, false) }

// TryGo is Go, except that it returns [ErrQueueFull] instead of adding the
// task when the queue set by [WithQueue] is full.
func (g *Group[T]) TryGo(key string, do func(ctx context.Context) (T, error)) error {
	return g.add(Task[T]{Key: key, Do: do}, true)
}

func (g *Group[T]) add(t Task[T], try bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := validateTask(g.r.cfg, len(g.list), t); err != nil {
		return err
	}
	switch _, dup := g.keys[t.Key]; {
	case g.done:
		return fmt.Errorf("fanout: task %q: %w", t.Key, ErrGroupDone)
	case dup:
		return &TaskError{Key: t.Key, Err: ErrDuplicateKey}
	case try && g.queueCap > 0 && g.pending.len >= g.queueCap:
		return fmt.Errorf("fanout: task %q: %w", t.Key, ErrQueueFull)
	}
	i := len(g.list)
	g.keys[t.Key] = i
	g.list = append(g.list, Result[T]{Key: t.Key, Index: i})
	p := pendingTask[T]{t: t, index: i}
	if !g.pending.hasRoom(t.Resource) || (g.idle == 0 && g.active == g.maxWorkers) {
		g.pending.push(p)
		return nil
	}
	g.pending.take(t.Resource)
	g.ready = append(g.ready, p)
	if g.idle > 0 {
		g.free.Signal()
	} else {
		g.active++
		g.r.startWorkers(1)
	}
	return nil
}

// claim hands a worker the next task whose resource has room. A worker
// with nothing to do waits for the next Go, and retires once the group is
// waited for and nothing is left.
func (g *Group[T]) claim(ctx context.Context) (Task[T], int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		if len(g.ready) > 0 {
			p := g.ready[0]
			g.ready = g.ready[1:]
			return p.t, p.index, true
		}
		if p, ok := g.pending.pop(ctx.Err() != nil); ok {
			return p.t, p.index, true
		}
		if g.pending.len == 0 && g.waiting {
			g.active--
			g.checkIdle()
			return Task[T]{}, 0, false
		}
		g.idle++
		g.free.Wait() // for Go, a resource's room, the wait, or the run's end
		g.idle--
	}
}

// release counts a task out of its resource.
func (g *Group[T]) release(t Task[T]) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending.release(t.Resource)
	if t.Resource != "" {
		g.free.Broadcast()
	}
}

// keep records an ended key.
func (g *Group[T]) keep(res *Result[T]) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.list[res.Index] = *res
	g.order = append(g.order, res.Index)
	g.wake()
}

// wake tells whoever waits on the group (Stream, a worker held back by a
// resource) that something changed.
func (g *Group[T]) wake() {
	if g.changed != nil {
		close(g.changed)
		g.changed = nil
	}
}

// changes returns the channel the next wake closes. The caller holds mu.
func (g *Group[T]) changes() <-chan struct{} {
	if g.changed == nil {
		g.changed = make(chan struct{})
	}
	return g.changed
}

// checkIdle ends the group once it is waited for and nothing is queued or
// running.
func (g *Group[T]) checkIdle() {
	if g.waiting && !g.done && g.active == 0 && len(g.ready) == 0 && g.pending.len == 0 {
		g.done = true
		g.wake()
	}
}

// Len returns how many tasks are queued, waiting for a worker or their
// resource's room, and how many are running.
func (g *Group[T]) Len() (queued, running int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pending.len, g.pending.running
}

// Wait waits for every task, those added while waiting included, and
// returns their Results in the order they were added, with the same error
// as [Run]'s.
func (g *Group[T]) Wait() (*Results[T], error) {
	for range g.Stream() {
	}
	rs := &Results[T]{list: g.list, index: g.keys}
	return rs, rs.Err()
}

// Stream yields each Result as its task ends, those that ended before the
// call first, until every task has ended; then the group is done, as after
// Wait. Breaking out of the loop cancels the tasks still running, with
// cause [ErrStopped], and waits for them.
func (g *Group[T]) Stream() iter.Seq[Result[T]] {
	return func(yield func(Result[T]) bool) {
		defer g.finish()
		defer g.stop() // at once if every task has ended; after a break, cancels them first
		g.mu.Lock()
		g.waiting = true
		g.free.Broadcast() // idle workers retire
		g.checkIdle()
		for next := 0; ; {
			for next < len(g.order) {
				res := g.list[g.order[next]]
				next++
				g.mu.Unlock()
				if !yield(res) {
					return
				}
				g.mu.Lock()
			}
			if g.done {
				g.mu.Unlock()
				return
			}
			changed := g.changes()
			g.mu.Unlock()
			<-changed
			g.mu.Lock()
		}
	}
}

// stop cancels the group, unless it is done, and waits until it is.
func (g *Group[T]) stop() {
	g.mu.Lock()
	if !g.done {
		g.r.cancel(ErrStopped)
	}
	for !g.done {
		changed := g.changes()
		g.mu.Unlock()
		<-changed
		g.mu.Lock()
	}
	g.mu.Unlock()
}

func (g *Group[T]) finish() {
	g.end.Do(func() {
		g.r.workers.Wait()
		if g.unwatch() {
			g.watching.Done()
		}
		g.watching.Wait()
		g.r.end()
	})
}

func (g *Group[T]) wakeAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.free.Broadcast()
}

// GatherGroup folds the Results of g, in completion order, into agg until
// every task has ended, as [Gather] does for a slice: once agg.Add reports
// that it has decided, the group's running tasks are cancelled with cause
// [ErrStopped] and the tasks added after that are skipped; their Results
// still reach agg.Add. A panic or Goexit in agg is GatherGroup's error.
func GatherGroup[T, R any](g *Group[T], agg Aggregator[T, R]) (R, error) {
	var zero R
	if agg == nil {
		return zero, errors.New("fanout: GatherGroup: nil Aggregator")
	}
	if c, ok := agg.(interface{ check(tasks int) error }); ok {
		if err := c.check(-1); err != nil {
			return zero, err
		}
	}
	err := guard(func() {
		for res := range g.Stream() {
			if agg.Add(res) {
				g.r.cancel(ErrStopped)
			}
		}
	})
	if err != nil {
		return zero, err
	}
	return result(context.WithValue(g.ctx, scopeKey{}, newScope(g.ctx, nil, g.r.spend)), agg)
}
