package progress

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gofanout/fanout"
)

// Counter counts a fan-out's progress through the hooks of the observers
// it hands out. It draws nothing: [Bar] draws it. A Counter is safe for
// concurrent use.
type Counter struct {
	total atomic.Int64
	start time.Time

	done, failed, skipped  atomic.Int64
	calls, retries, hedges atomic.Int64
	nested                 atomic.Bool // CallObserver was handed out
	onDone                 func()      // called after each key done, if set
	onTotal                func()      // called after the total grows, if set
}

// NewCounter returns a Counter of total keys, its clock started now.
func NewCounter(total int) *Counter {
	c := &Counter{start: time.Now()}
	c.total.Store(int64(total))
	return c
}

// AddTotal adds n keys to the total, for a run whose keys are found as it
// goes: the pages of a crawl, say.
func (c *Counter) AddTotal(n int) {
	c.total.Add(int64(n))
	if c.onTotal != nil {
		c.onTotal()
	}
}

// Observer returns the observer of the run whose keys the Counter counts.
// It counts each key as done, failed or skipped, and the run's retries and
// hedges. It counts the run's attempts as calls too, unless CallObserver
// has been called: the run's tasks then only hold the nested runs that make
// the calls.
func (c *Counter) Observer() *fanout.Observer {
	o := c.callHooks()
	o.AttemptDone = func(context.Context, fanout.AttemptInfo) {
		if !c.nested.Load() {
			c.calls.Add(1)
		}
	}
	o.TaskDone = func(_ context.Context, t fanout.TaskInfo) {
		switch {
		case t.Err == nil:
		case t.Attempts == 0:
			c.skipped.Add(1)
		default:
			c.failed.Add(1)
		}
		c.done.Add(1)
		if c.onDone != nil {
			c.onDone()
		}
	}
	return o
}

// CallObserver returns the observer of the runs nested in the counted
// run's tasks (a vote among several samples of each key, say): it counts
// their attempts as calls, and their retries and hedges, but not their keys.
// Call it before the counted run starts.
func (c *Counter) CallObserver() *fanout.Observer {
	c.nested.Store(true)
	return c.callHooks()
}

func (c *Counter) callHooks() *fanout.Observer {
	return &fanout.Observer{
		AttemptDone: func(context.Context, fanout.AttemptInfo) { c.calls.Add(1) },
		Retry:       func(context.Context, fanout.RetryInfo) { c.retries.Add(1) },
		Hedge:       func(context.Context, fanout.HedgeInfo) { c.hedges.Add(1) },
	}
}

// Snapshot returns the counts so far.
func (c *Counter) Snapshot() Snapshot {
	return Snapshot{
		Total: int(c.total.Load()), Done: int(c.done.Load()), Failed: int(c.failed.Load()), Skipped: int(c.skipped.Load()),
		Calls: int(c.calls.Load()), Retries: int(c.retries.Load()), Hedges: int(c.hedges.Load()),
		Elapsed: time.Since(c.start),
	}
}

// Snapshot is a Counter's counts at one moment.
type Snapshot struct {
	Total   int // keys in all
	Done    int // keys with a result, failures and skips included
	Failed  int // keys that failed after starting
	Skipped int // keys that never started
	Calls   int // attempts, retries and hedged copies included
	Retries int
	Hedges  int
	Elapsed time.Duration
}

// Rate returns the keys done per second so far.
func (s Snapshot) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Done) / s.Elapsed.Seconds()
}

// ETA returns the time left at the rate so far, and false while no key is
// done, since there is no rate to go by yet.
func (s Snapshot) ETA() (time.Duration, bool) {
	if s.Done == 0 || s.Elapsed <= 0 {
		return 0, false
	}
	left := max(s.Total-s.Done, 0)
	return time.Duration(float64(s.Elapsed) * float64(left) / float64(s.Done)), true
}

// String returns the counts on one line, as the bar's summary prints them.
func (s Snapshot) String() string {
	return fmt.Sprintf("%d/%d done, %d failed, %d skipped, %d calls, %d retries, %d hedges in %v (%.1f/s)",
		s.Done, s.Total, s.Failed, s.Skipped, s.Calls, s.Retries, s.Hedges,
		s.Elapsed.Round(time.Millisecond), s.Rate())
}
