package fanout

import (
	"cmp"
	"context"
	"iter"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// source hands out tasks to workers. claim is safe for concurrent use; it
// returns false when there are no more tasks, or, for a lazy source, when
// ctx ends first.
type source[T any] interface {
	claim(ctx context.Context) (t Task[T], index int, ok bool)
}

// taskSource picks the source of a slice of tasks: in input order when
// Results are yielded in that order, by resource under per-resource
// limits, by Priority otherwise.
func taskSource[T any](tasks []Task[T], cfg *config) source[T] {
	switch {
	case cfg.ordered:
		return &sliceTasks[T]{tasks: tasks}
	case cfg.limitsResources():
		return queuedSource(tasks, cfg)
	}
	return sliceSource(tasks)
}

// releaser is a source that must hear when a claimed task has ended.
type releaser[T any] interface{ release(Task[T]) }

// sliceTasks claims tasks from a slice with one atomic add each, in
// priority order when any task has a Priority.
type sliceTasks[T any] struct {
	tasks []Task[T]
	order []int // nil: input order
	next  atomic.Int64
}

func sliceSource[T any](tasks []Task[T]) *sliceTasks[T] {
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

func (s *sliceTasks[T]) claim(context.Context) (Task[T], int, bool) {
	k := int(s.next.Add(1) - 1)
	if k >= len(s.tasks) {
		return Task[T]{}, 0, false
	}
	if s.order != nil {
		k = s.order[k]
	}
	return s.tasks[k], k, true
}

// lazyTasks pulls tasks from an iterator on a goroutine of its own, one
// task per worker's request. A worker waiting for a task can so give up
// when the run stops, even while the iterator blocks (in a channel
// receive, say), and a panic or Goexit in the iterator happens where
// fanout can catch it.
//
// A worker asks on ask and takes the next task pulled from reply: any
// worker may take any task, as each ask is answered once. Both channels
// hold one message per worker, so neither side ever blocks on a send, and
// a worker waits in a single select.
type lazyTasks[T any] struct {
	seq      iter.Seq[Task[T]]
	more     func() bool     // whether the run still wants tasks
	fail     func(err error) // stops the run when the iterator panics
	ask      chan struct{}   // a worker wants a task; closed when the run is over
	reply    chan pulled[T]  // and gets one here
	exited   chan struct{}   // closed when the puller stops pulling
	fault    error           // the iterator's panic or Goexit, set before exited closes
	goexit   bool            // fault is a Goexit
	returned bool            // the puller returned normally

	mu     sync.Mutex
	busy   bool // the puller is inside the iterator
	closed bool // the run is over: no more pulls
}

type pulled[T any] struct {
	t     Task[T]
	index int
	ok    bool
}

func lazySource[T any](seq iter.Seq[Task[T]]) *lazyTasks[T] {
	return &lazyTasks[T]{seq: seq, exited: make(chan struct{})}
}

// start pulls for run r, with at most workers workers asking at once,
// until the iterator ends, r wants no more, or close is called.
func (s *lazyTasks[T]) start(workers int, more func() bool, fail func(error)) {
	s.more, s.fail = more, fail
	s.ask, s.reply = make(chan struct{}, workers), make(chan pulled[T], workers)
	go s.pull() // joined in close, unless the iterator blocks
}

func (s *lazyTasks[T]) claim(ctx context.Context) (Task[T], int, bool) {
	s.ask <- struct{}{}
	select {
	case p := <-s.reply:
		return p.t, p.index, p.ok
	case <-s.exited:
		select { // a task pulled just before the end is still to run
		case p := <-s.reply:
			return p.t, p.index, p.ok
		default:
		}
	case <-ctx.Done(): // the pull, if any, is abandoned with its task
	}
	return Task[T]{}, 0, false
}

// pull ranges over the iterator, resuming it only once a worker has
// asked for the next task: nothing is pulled ahead.
func (s *lazyTasks[T]) pull() {
	defer close(s.exited)
	defer s.recoverPull()
	index := 0
	if s.await() {
		for t := range s.seq {
			if !s.leave() {
				break
			}
			s.reply <- pulled[T]{t: t, index: index, ok: true}
			index++
			if !s.await() {
				break
			}
		}
		s.leave()
	}
	s.returned = true
}

// await waits for a worker's ask, then marks the puller as inside the
// iterator, unless the run is over or wants no more tasks.
func (s *lazyTasks[T]) await() bool {
	if _, ok := <-s.ask; !ok {
		return false
	}
	return s.more() && s.enter()
}

// enter marks the puller as inside the iterator, unless the run is over.
func (s *lazyTasks[T]) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = !s.closed
	return s.busy
}

// leave marks the puller as out of the iterator, and reports whether the
// run still wants what it pulled.
func (s *lazyTasks[T]) leave() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = false
	return !s.closed
}

// recoverPull keeps the iterator's panic or Goexit, for the goroutine
// ranging the stream to raise again, and stops the run.
func (s *lazyTasks[T]) recoverPull() {
	if s.returned {
		return
	}
	s.leave()
	if p := recover(); p != nil {
		s.fault = newPanicError(p)
	} else {
		s.fault, s.goexit = ErrGoexit, true
	}
	s.fail(s.fault)
}

// close ends the pulling once every worker has ended, and waits for the
// puller, unless it is inside the iterator: an iterator blocked in a
// channel receive may never return, and the run must. Such a puller stops
// the iterator itself when its pull returns, and its task is dropped.
func (s *lazyTasks[T]) close() {
	s.mu.Lock()
	s.closed = true
	busy := s.busy
	s.mu.Unlock()
	close(s.ask)
	if !busy {
		<-s.exited
	}
}

// raise re-raises on the calling goroutine a panic or Goexit of the
// iterator, once close has returned.
func (s *lazyTasks[T]) raise() {
	select {
	case <-s.exited:
	default:
		return // the puller is still blocked in the iterator
	}
	switch {
	case s.goexit:
		runtime.Goexit()
	case s.fault != nil:
		panic(s.fault)
	}
}
