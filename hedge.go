package fanout

import (
	"cmp"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofanout/fanout/internal/latency"
)

// HedgePolicy says when to start a second copy of a slow attempt. The
// first copy to succeed wins; the other is cancelled and waited for.
type HedgePolicy struct {
	// Delay starts the copy once an attempt has run this long.
	Delay time.Duration
	// Quantile, if set (0.95 for the p95), starts the copy once an attempt
	// has run longer than that quantile of the latencies of this run's
	// attempts: those that finished, with a value or an error or at their
	// deadline, and those still running, which count as slower than any
	// finished one. So when a fan-out's attempts all start together, the
	// p95 is known once 95% of them have finished, and only the last 5%
	// are hedged. Until it is known (and until MinSamples attempts
	// have finished), Delay is used if set; otherwise the attempt waits
	// for the estimate.
	Quantile float64
	// MinSamples is how many attempts of the run a Quantile hedge needs to
	// have seen finish, with a value or an error, before it trusts its
	// estimate; zero means 10.
	MinSamples int
	// MaxExtra caps the copies at this fraction of the run's tasks,
	// rounded up; zero means 0.1. The cap stops new copies only, never
	// running ones.
	MaxExtra float64
}

// WithHedge runs a second copy of any attempt still running after the
// delay p gives (see [HedgePolicy]): a backup request, as in "The Tail at
// Scale". An attempt has at most one copy. The copy waits on the run's
// rate limiters and checks the budget like any attempt, and once it calls
// Do it counts in Result.Attempts and Result.Hedges.
func WithHedge(p HedgePolicy) Option {
	return func(c *config) {
		switch {
		case p.Delay < 0:
			c.invalid("WithHedge: negative Delay %v", p.Delay)
		case !(p.Quantile >= 0 && p.Quantile < 1): // NaN too
			c.invalid("WithHedge: Quantile %v is outside [0, 1)", p.Quantile)
		case p.Delay == 0 && p.Quantile == 0:
			c.invalid("WithHedge: set Delay or Quantile")
		case !(p.MaxExtra >= 0): // NaN too
			c.invalid("WithHedge: MaxExtra %v is not a fraction", p.MaxExtra)
		case p.MinSamples < 0:
			c.invalid("WithHedge: negative MinSamples %d", p.MinSamples)
		default:
			c.hedge = &p
		}
	}
}

// hedger keeps a run's hedging state: the latency sample and the budget.
type hedger struct {
	policy  HedgePolicy
	total   int          // tasks in the run; -1 when lazy
	started atomic.Int64 // tasks that made a hedgeable attempt, for a lazy run's budget
	extra   atomic.Int64

	mu      sync.Mutex
	window  *latency.Window // latencies of the attempts that finished
	running int             // attempts in flight, copies aside: latencies not known yet
	changed chan struct{}   // closed when the estimate may have changed; nil if nobody waits
}

const hedgeWindow = 1024

func newHedger(p HedgePolicy, total int) *hedger {
	p.MaxExtra = cmp.Or(p.MaxExtra, 0.1)
	p.MinSamples = cmp.Or(p.MinSamples, 10)
	return &hedger{policy: p, total: total, window: latency.NewWindow(hedgeWindow)}
}

// begin counts an attempt that starts.
func (h *hedger) begin() {
	h.mu.Lock()
	h.running++
	h.mu.Unlock()
}

// end counts an attempt that ended after d, and adds d to the sample if it
// is the attempt's latency: if the attempt ended by itself, with a value
// or an error, or at its deadline, and was not cancelled.
func (h *hedger) end(d time.Duration, measured bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running--
	if measured && h.policy.Quantile > 0 {
		h.window.Add(d)
	}
	h.wake()
}

// record adds the latency of a hedged copy that ended by itself.
func (h *hedger) record(d time.Duration) {
	if h.policy.Quantile == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.window.Add(d)
	h.wake()
}

func (h *hedger) wake() {
	if h.changed != nil {
		close(h.changed)
		h.changed = nil
	}
}

// delay returns how long an attempt runs before it is hedged, or false if
// that is not known yet; then the estimate may become known when changed
// is closed.
//
// The attempts still running count as slower than every finished one:
// nobody knows better yet. So in a fan-out whose attempts all start
// together, the p95 is known once 95% of them have finished, and only the
// stragglers are hedged, as "The Tail at Scale" has it; the first few to
// finish, the fastest, do not make a low estimate that hedges everyone.
func (h *hedger) delay() (d time.Duration, ok bool, changed <-chan struct{}) {
	if q := h.policy.Quantile; q > 0 {
		h.mu.Lock()
		defer h.mu.Unlock()
		if n := h.window.Added(); n >= h.policy.MinSamples {
			// The q-quantile of the finished and the running attempts
			// together is this quantile of the finished ones alone.
			if qq := q * float64(n+h.running) / float64(n); qq <= 1 {
				return h.window.Quantile(qq), true, nil
			}
		}
		if h.policy.Delay == 0 {
			if h.changed == nil {
				h.changed = make(chan struct{})
			}
			return 0, false, h.changed
		}
	}
	return h.policy.Delay, h.policy.Delay > 0, nil
}

// take claims one copy from the budget.
func (h *hedger) take() bool {
	tasks := int64(h.total)
	if tasks < 0 {
		tasks = h.started.Load()
	}
	// Round up, so a small run may still hedge its one slow call; a
	// fraction past every count (+Inf) caps nothing, rather than
	// overflowing the conversion.
	allowed := int64(math.MaxInt64)
	if f := math.Ceil(h.policy.MaxExtra * float64(tasks)); f < math.MaxInt64 {
		allowed = int64(f)
	}
	for {
		n := h.extra.Load()
		if n >= allowed {
			return false
		}
		if h.extra.CompareAndSwap(n, n+1) {
			return true
		}
	}
}
