package fanout

import (
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
	open     pendingTasks[T]             // tasks without a Resource: no map lookup
	byName   map[string]*pendingTasks[T] // tasks with one
	inFlight map[string]int              // per Resource
	running  int
	len      int
}

func newTaskQueue[T any](cfg *config) *taskQueue[T] {
	return &taskQueue[T]{cfg: cfg, byName: map[string]*pendingTasks[T]{}, inFlight: map[string]int{}}
}

func (q *taskQueue[T]) push(p pendingTask[T]) {
	q.len++
	if p.t.Resource == "" {
		q.open.push(p)
		return
	}
	h := q.byName[p.t.Resource]
	if h == nil {
		h = &pendingTasks[T]{}
		q.byName[p.t.Resource] = h
	}
	h.push(p)
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
	if q.open.len() > 0 {
		best = &q.open
	}
	for name, h := range q.byName {
		if h.len() > 0 && (anyRoom || q.hasRoom(name)) && (best == nil || before(h.first(), best.first())) {
			best = h
		}
	}
	if best == nil {
		return pendingTask[T]{}, false
	}
	p := best.pop()
	q.len--
	q.take(p.t.Resource)
	return p, true
}

// take counts a task of resource name in flight.
func (q *taskQueue[T]) take(name string) {
	q.running++
	if name != "" {
		q.inFlight[name]++
	}
}

func (q *taskQueue[T]) release(name string) {
	q.running--
	if name != "" {
		q.inFlight[name]--
	}
}

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

// pendingTasks is a queue of tasks: first in, first out while none has a
// Priority (every push and pop O(1)); from the first Priority on, a binary
// heap, highest Priority first, then the order of Go.
type pendingTasks[T any] struct {
	items []pendingTask[T]
	head  int  // the FIFO's front; 0 once a heap
	heap  bool // a Priority was seen
}

func (h *pendingTasks[T]) len() int { return len(h.items) - h.head }

// first returns the task pop would return.
func (h *pendingTasks[T]) first() pendingTask[T] { return h.items[h.head] }

func (h *pendingTasks[T]) push(p pendingTask[T]) {
	if !h.heap && p.t.Priority != 0 {
		// Tasks in index order, all of Priority 0, are already a heap.
		h.items, h.head, h.heap = h.items[h.head:], 0, true
	}
	h.items = append(h.items, p)
	if !h.heap {
		return
	}
	s := h.items
	for i := len(s) - 1; i > 0; {
		parent := (i - 1) / 2
		if !before(s[i], s[parent]) {
			break
		}
		s[i], s[parent] = s[parent], s[i]
		i = parent
	}
}

func (h *pendingTasks[T]) pop() pendingTask[T] {
	if !h.heap {
		p := h.items[h.head]
		h.items[h.head] = pendingTask[T]{} // drop the task for the collector
		if h.head++; h.head == len(h.items) {
			h.items, h.head = h.items[:0], 0
		}
		return p
	}
	s := h.items
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = pendingTask[T]{}
	s = s[:last]
	for i := 0; ; {
		least, l, r := i, 2*i+1, 2*i+2
		if l < len(s) && before(s[l], s[least]) {
			least = l
		}
		if r < len(s) && before(s[r], s[least]) {
			least = r
		}
		if least == i {
			break
		}
		s[i], s[least] = s[least], s[i]
		i = least
	}
	h.items = s
	return top
}
