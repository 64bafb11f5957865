package fanout

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
)

// ForResource scopes limits to the tasks whose Resource is name (a host,
// a model, an API): WithLimit(n) inside it caps those tasks in flight at
// n, and its WithRateLimit and WithRequestLimit are waited on by their
// attempts alone, beside the run's own limits. So "8 at once, this model
// 50 requests a minute and that one 500" is one run:
//
//	fanout.Run(ctx, tasks, fanout.WithLimit(8),
//		fanout.ForResource("small", fanout.WithRequestLimit(rate.NewLimiter(500.0/60, 10))),
//		fanout.ForResource("large", fanout.WithRequestLimit(rate.NewLimiter(50.0/60, 2))))
//
// Other options inside ForResource are refused. A task whose resource is
// full does not hold up the tasks of other resources behind it in a slice
// or a [Group]: the next task to start is the first, by Priority and then
// input order, whose resource has room. A lazy source is pulled in order,
// so there a task waits for its resource's room in its turn.
func ForResource(name string, opts ...Option) Option {
	return func(c *config) {
		if name == "" {
			c.invalid("ForResource: empty resource name")
			return
		}
		inner := newConfig(opts)
		switch {
		case len(inner.errs) > 0:
			c.errs = append(c.errs, inner.errs...)
		case inner.sem != nil || inner.taskTimeout != 0 || inner.timeout != 0 || inner.failFast ||
			inner.retry != nil || inner.hedge != nil || inner.budget != (Cost{}) || len(inner.observers) > 0 ||
			inner.queue != 0 || inner.ordered || inner.perResource != 0 || len(inner.resourceLimits) > 0:
			c.invalid("ForResource(%q): only WithLimit, WithRateLimit and WithRequestLimit apply to a resource", name)
		default:
			if inner.limit > 0 {
				if c.resourceLimits == nil {
					c.resourceLimits = map[string]int{}
				}
				c.resourceLimits[name] = inner.limit
			}
			for _, u := range inner.limiters {
				u.resource = name
				c.limiters = append(c.limiters, u)
			}
		}
	}
}

// WithResourceLimit caps the tasks in flight at n for each Resource that
// [ForResource] gives no limit of its own: "2 per host", for hosts found
// as a crawl goes. Tasks without a Resource are not limited by it.
func WithResourceLimit(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.invalid("WithResourceLimit(%d): limit must be positive", n)
			return
		}
		c.perResource = n
	}
}

// resourceLimit is the cap on the tasks of resource name in flight, or 0.
func (c *config) resourceLimit(name string) int {
	if name == "" {
		return 0
	}
	if n, ok := c.resourceLimits[name]; ok {
		return n
	}
	return c.perResource
}

func (c *config) limitsResources() bool { return c.perResource > 0 || len(c.resourceLimits) > 0 }

// taskQueue holds the tasks waiting for a worker, each resource's in a
// heap of its own (highest Priority first, then input order), and counts
// the tasks in flight per resource. It is not safe for concurrent use:
// its owner locks around it.
type taskQueue[T any] struct {
	cfg      *config
	byName   map[string]*pendingTasks[T]
	inFlight map[string]int
	len      int
}

func newTaskQueue[T any](cfg *config) *taskQueue[T] {
	return &taskQueue[T]{cfg: cfg, byName: map[string]*pendingTasks[T]{}, inFlight: map[string]int{}}
}

func (q *taskQueue[T]) push(p pendingTask[T]) {
	h := q.byName[p.t.Resource]
	if h == nil {
		h = &pendingTasks[T]{}
		q.byName[p.t.Resource] = h
	}
	heap.Push(h, p)
	q.len++
}

// hasRoom reports whether a task of resource name may start.
func (q *taskQueue[T]) hasRoom(name string) bool {
	n := q.cfg.resourceLimit(name)
	return n == 0 || q.inFlight[name] < n
}

// pop takes the best task whose resource has room, or any best task when
// limits no longer matter (the run has stopped: its tasks are skipped),
// and counts it in flight.
func (q *taskQueue[T]) pop(anyRoom bool) (pendingTask[T], bool) {
	var best *pendingTasks[T]
	for name, h := range q.byName {
		if h.Len() > 0 && (anyRoom || q.hasRoom(name)) && (best == nil || before((*h)[0], (*best)[0])) {
			best = h
		}
	}
	if best == nil {
		return pendingTask[T]{}, false
	}
	p := heap.Pop(best).(pendingTask[T])
	q.len--
	q.inFlight[p.t.Resource]++
	return p, true
}

func (q *taskQueue[T]) release(name string) { q.inFlight[name]-- }

func before[T any](a, b pendingTask[T]) bool {
	if a.t.Priority != b.t.Priority {
		return a.t.Priority > b.t.Priority
	}
	return a.index < b.index
}

// queuedTasks is the source of a slice of tasks under per-resource limits.
type queuedTasks[T any] struct {
	mu      sync.Mutex
	q       *taskQueue[T]
	changed chan struct{} // closed when a task ends
}

func queuedSource[T any](tasks []Task[T], cfg *config) *queuedTasks[T] {
	s := &queuedTasks[T]{q: newTaskQueue[T](cfg), changed: make(chan struct{})}
	for i, t := range tasks {
		s.q.push(pendingTask[T]{t: t, index: i})
	}
	return s
}

func (s *queuedTasks[T]) claim(ctx context.Context) (Task[T], int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.q.len > 0 {
		if p, ok := s.q.pop(ctx.Err() != nil); ok {
			return p.t, p.index, true
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
		}
		s.mu.Lock()
	}
	return Task[T]{}, 0, false
}

func (s *queuedTasks[T]) release(t Task[T]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.q.release(t.Resource)
	close(s.changed)
	s.changed = make(chan struct{})
}

// resourceGate caps the tasks of a lazy source per resource: a semaphore
// per resource, taken in the task's turn.
type resourceGate struct {
	cfg  *config
	mu   sync.Mutex
	sems map[string]*Semaphore
}

func (g *resourceGate) sem(name string) *Semaphore {
	n := g.cfg.resourceLimit(name)
	if n == 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sems[name]
	if s == nil {
		s = NewSemaphore(n)
		g.sems[name] = s
	}
	return s
}

// errNoResource names the resource a task waited for when the run stopped.
func errNoResource(name string, cause error) error {
	return wrap(fmt.Errorf("fanout: resource %q", name), ": ", cause)
}

// pendingTask is a task waiting in a group's queue.
type pendingTask[T any] struct {
	t     Task[T]
	index int
}

// pendingTasks is a heap: highest Priority first, then the order of Go.
type pendingTasks[T any] []pendingTask[T]

func (p pendingTasks[T]) Len() int { return len(p) }
func (p pendingTasks[T]) Less(i, j int) bool {
	if p[i].t.Priority != p[j].t.Priority {
		return p[i].t.Priority > p[j].t.Priority
	}
	return p[i].index < p[j].index
}
func (p pendingTasks[T]) Swap(i, j int) { p[i], p[j] = p[j], p[i] }
func (p *pendingTasks[T]) Push(x any)   { *p = append(*p, x.(pendingTask[T])) }
func (p *pendingTasks[T]) Pop() any {
	old := *p
	x := old[len(old)-1]
	*p = old[:len(old)-1]
	return x
}
