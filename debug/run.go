package fanoutdebug

import (
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofanout/fanout"
)

// runState is what the page keeps of one run. Its memory is bounded by
// the page's caps whatever the run's size: the keys in flight, the slowest
// keys, and a ring each of failures and retries. The hooks every key calls
// touch atomic counters and the shard of the key's flight only.
type runState struct {
	id    uint64
	name  string
	start time.Time
	caps  *caps

	succeeded, failed, skipped atomic.Int64
	attempts, retries, hedges  atomic.Int64
	waited                     atomic.Int64  // ns on the rate limiters
	tokens                     atomic.Int64  // cost
	cents                      atomic.Uint64 // cost, as float64 bits
	slowFloor                  atomic.Int64  // ns: a key this slow or faster is not among the slowest
	flights                    *flights
	ended                      atomic.Bool     // RunDone came: later hooks are ignored
	parentID                   uint64          // set before the run is shared, then read-only
	startDone                  <-chan struct{} // the Done of RunStart's context; set as parentID

	mu        sync.Mutex // guards what follows
	tasks     int
	running   bool
	elapsed   time.Duration // set when the run ends
	slowest   []KeyDone     // slowest first, at most caps.slowest
	failures  ring[Failure]
	retried   ring[Retry]
	parent    *runState // while running, the run whose task started this one
	nestedNow int       // runs running in this run's tasks
	nestedAll int       // runs started in this run's tasks
}

func newRunState(id uint64, name string, tasks int, c *caps) *runState {
	return &runState{
		id: id, name: name, start: time.Now(), caps: c, tasks: tasks, running: true,
		flights:  newFlights(c.keys),
		failures: ring[Failure]{max: c.failures},
		retried:  ring[Retry]{max: c.failures},
	}
}

func (r *runState) taskStart(key string) { r.flights.begin(key, time.Now()) }

func (r *runState) attemptStart(a fanout.AttemptInfo) {
	r.attempts.Add(1)
	// A first attempt starts when its limiter waits end: one clock read
	// fewer per key, a tenth of what the page costs a task on a VM whose
	// clock reads take 100 ns. A guard that waits after the limiters is
	// counted in the attempt.
	var now time.Time
	first := a.Attempt == 1 && !a.Hedge
	if !first {
		now = time.Now()
	}
	r.flights.update(a.Key, func(f *flight) {
		if first {
			now = f.start.Add(a.LimiterWait)
		}
		f.attempt = max(f.attempt, a.Attempt)
		f.copies++
		f.attemptStart = now
		f.retryAt = time.Time{}
	})
}

func (r *runState) attemptDone(a fanout.AttemptInfo) {
	r.flights.update(a.Key, func(f *flight) {
		f.copies = max(0, f.copies-1)
		if a.Err != nil && !errors.Is(a.Err, fanout.ErrHedgeLost) {
			f.lastErr = a.Err
		}
	})
}

func (r *runState) retry(ri fanout.RetryInfo) Retry {
	now := time.Now()
	rv := Retry{Key: clip(ri.Key), Attempt: ri.Attempt, WaitMS: ms(ri.Wait),
		ServerDirected: ri.ServerDirected, Error: errText(ri.Err), At: now}
	r.retries.Add(1)
	r.flights.update(ri.Key, func(f *flight) { f.retryAt = now.Add(ri.Wait) })
	r.mu.Lock()
	r.retried.add(rv)
	r.mu.Unlock()
	return rv
}

func (r *runState) hedge() { r.hedges.Add(1) }

func (r *runState) limiterWait(d time.Duration) { r.waited.Add(int64(d)) }

func (r *runState) taskDone(t fanout.TaskInfo) {
	r.flights.end(t.Key)
	r.addCost(t.Cost)
	switch {
	case t.Err == nil:
		r.succeeded.Add(1)
	case errors.Is(t.Err, fanout.ErrSkipped):
		r.skipped.Add(1)
	default:
		r.failed.Add(1)
		// Formatted outside the lock: an error's message is user code.
		fail := Failure{Key: clip(t.Key), Kind: fanout.ErrorKind(t.Err), Error: errText(t.Err),
			Attempts: t.Attempts, ElapsedMS: ms(t.Elapsed), At: time.Now()}
		r.mu.Lock()
		r.failures.add(fail)
		r.mu.Unlock()
	}
	if t.Attempts > 0 && int64(t.Elapsed) > r.slowFloor.Load() {
		r.noteSlow(t)
	}
}

func (r *runState) addCost(c fanout.Cost) {
	if c.Tokens != 0 {
		r.tokens.Add(c.Tokens)
	}
	if c.Cents == 0 {
		return
	}
	for {
		old := r.cents.Load()
		if r.cents.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+c.Cents)) {
			return
		}
	}
}

func (r *runState) cost() fanout.Cost {
	return fanout.Cost{Tokens: r.tokens.Load(), Cents: math.Float64frombits(r.cents.Load())}
}

// noteSlow keeps t if it is among the slowest keys so far.
func (r *runState) noteSlow(t fanout.TaskInfo) {
	k := KeyDone{Key: clip(t.Key), Attempts: t.Attempts, ElapsedMS: ms(t.Elapsed), Kind: fanout.ErrorKind(t.Err)}
	r.mu.Lock()
	defer r.mu.Unlock()
	i, _ := slices.BinarySearchFunc(r.slowest, k.ElapsedMS, func(d KeyDone, e float64) int {
		switch {
		case d.ElapsedMS > e:
			return -1
		case d.ElapsedMS < e:
			return 1
		}
		return 0
	})
	if i >= r.caps.slowest {
		return
	}
	r.slowest = slices.Insert(r.slowest, i, k)
	if len(r.slowest) >= r.caps.slowest {
		r.slowest = r.slowest[:r.caps.slowest]
		r.slowFloor.Store(int64(r.slowest[len(r.slowest)-1].ElapsedMS * float64(time.Millisecond)))
	}
}

// end records the run's totals, which the core counted itself, and lets
// go of what only a running run needs.
func (r *runState) end(s fanout.RunSummary) {
	r.succeeded.Store(int64(s.Succeeded))
	r.failed.Store(int64(s.Failed))
	r.skipped.Store(int64(s.Skipped))
	r.attempts.Store(int64(s.Attempts))
	r.hedges.Store(int64(s.Hedges))
	r.tokens.Store(s.Cost.Tokens)
	r.cents.Store(math.Float64bits(s.Cost.Cents))
	r.flights.clear()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running = false
	r.tasks, r.elapsed = s.Tasks, s.Elapsed
}

// parentRun returns the run r is nested in, nil if none or r has ended.
func (r *runState) parentRun() *runState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.parent
}

func (r *runState) nestedStarted() {
	r.mu.Lock()
	r.nestedNow++
	r.nestedAll++
	r.mu.Unlock()
}

func (r *runState) nestedEnded() {
	r.mu.Lock()
	r.nestedNow = max(0, r.nestedNow-1)
	r.mu.Unlock()
}

// view returns the run's line at now.
func (r *runState) view(now time.Time) Run {
	v := Run{ID: r.id, Parent: r.parentID, Name: r.name, Started: r.start, ETAMS: -1}
	// Whether the run is running is read first: end stores the final
	// counters before it says the run is over, so a run read as finished
	// has them, never counters from before its end.
	r.mu.Lock()
	v.Running, v.Tasks, v.ElapsedMS = r.running, r.tasks, ms(r.elapsed)
	v.NestedRunning, v.NestedRuns = r.nestedNow, r.nestedAll
	r.mu.Unlock()
	v.Succeeded, v.Failed, v.Skipped = int(r.succeeded.Load()), int(r.failed.Load()), int(r.skipped.Load())
	v.InFlight, v.Attempts, v.Retries = r.flights.count(), int(r.attempts.Load()), int(r.retries.Load())
	v.Hedges, v.LimiterWaitMS, v.Cost = int(r.hedges.Load()), ms(time.Duration(r.waited.Load())), costOf(r.cost())
	v.Done = v.Succeeded + v.Failed + v.Skipped
	if v.Running {
		elapsed := now.Sub(r.start)
		v.ElapsedMS = ms(elapsed)
		if v.Tasks > 0 && v.Done > 0 && v.Done < v.Tasks {
			v.ETAMS = ms(elapsed) * float64(v.Tasks-v.Done) / float64(v.Done)
		}
	}
	return v
}

// detail returns the run's page at now.
func (r *runState) detail(now time.Time) RunDetail {
	d := RunDetail{Run: r.view(now), Keys: r.flights.list(now, maxKeysShown)}
	r.mu.Lock()
	d.Slowest = slices.Clone(r.slowest)
	d.Failures, d.RecentRetries = r.failures.newestFirst(), r.retried.newestFirst()
	r.mu.Unlock()
	if d.Slowest == nil {
		d.Slowest = []KeyDone{}
	}
	return d
}

// maxKeysShown caps the keys in flight a RunDetail lists.
const maxKeysShown = 100
