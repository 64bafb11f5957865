package fanout

import (
	"context"
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
	// are hedged. Until it is known (and until HedgeMinSamples attempts
	// have finished), Delay is used if set; otherwise the attempt waits
	// for the estimate.
	Quantile float64
	// MaxExtra caps the copies at this fraction of the run's tasks,
	// rounded up; zero means 0.1. The cap stops new copies only, never
	// running ones.
	MaxExtra float64
}

// HedgeMinSamples is how many successful attempts a quantile hedge needs
// before it trusts its estimate.
const HedgeMinSamples = 10

// WithHedge runs a second copy of any attempt still running after the
// delay p gives (see [HedgePolicy]): a backup request, as in "The Tail at
// Scale". Each copy waits on the run's rate limiters and counts in
// Result.Attempts and Result.Hedges.
func WithHedge(p HedgePolicy) Option {
	return func(c *config) {
		switch {
		case p.Delay < 0:
			c.invalid("WithHedge: negative Delay %v", p.Delay)
		case p.Quantile < 0 || p.Quantile >= 1:
			c.invalid("WithHedge: Quantile %v is outside [0, 1)", p.Quantile)
		case p.Delay == 0 && p.Quantile == 0:
			c.invalid("WithHedge: set Delay or Quantile")
		case p.MaxExtra < 0:
			c.invalid("WithHedge: negative MaxExtra %v", p.MaxExtra)
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
	if p.MaxExtra == 0 {
		p.MaxExtra = 0.1
	}
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
		if n := h.window.Added(); n >= HedgeMinSamples {
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
	// Round up, so a small run may still hedge its one slow call.
	allowed := int64(math.Ceil(h.policy.MaxExtra * float64(tasks)))
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

// hedged makes the n-th attempt of t, starting a copy if it runs past the
// hedge delay, and returns the first success, or the first error if both
// copies fail.
func (r *run[T]) hedged(ctx context.Context, t Task[T], info AttemptInfo, res *Result[T]) (T, error) {
	type outcome struct {
		v    T
		err  error
		wait time.Duration
	}
	h := r.hedger
	if info.Attempt == 1 {
		h.started.Add(1) // tasks, not attempts: retries do not grow the budget
	}
	hctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan outcome, 2)
	// ended is set before the attempt's end can wake this loop, so that
	// an attempt that has ended is not hedged on its way out.
	var ended atomic.Bool
	h.begin()
	go func() {
		start := monotime()
		v, err := r.try(hctx, t, info, nil)
		ended.Store(true)
		h.end(monotime()-start, hctx.Err() == nil) // a latency unless a winning copy or the run cancelled it
		done <- outcome{v: v, err: err}
	}()
	running := 1
	start := time.Now()

	var timer *time.Timer
	var fire <-chan time.Time
	var ready <-chan struct{}
	arm := func(d time.Duration) {
		timer = time.NewTimer(max(d-time.Since(start), 0))
		fire = timer.C
	}
	armOrWait := func() {
		d, ok, changed := h.delay()
		if ok {
			arm(d)
		}
		ready = changed
	}
	armOrWait()
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()

	var first *outcome
	for running > 0 {
		select {
		case o := <-done:
			running--
			res.LimiterWait += o.wait
			fire, ready = nil, nil // a finished attempt is not hedged
			if o.err == nil {
				cancel(ErrHedgeLost)
				for ; running > 0; running-- {
					res.LimiterWait += (<-done).wait
				}
				return o.v, nil
			}
			if first == nil {
				first = &o
			}
		case <-ready:
			armOrWait()
		case <-fire:
			fire = nil
			if hctx.Err() != nil || ended.Load() || !h.take() {
				continue
			}
			res.Attempts++
			res.Hedges++
			running++
			r.obs.hedge(ctx, HedgeInfo{Key: t.Key, Attempt: info.Attempt, After: time.Since(start)})
			go func() {
				var v T
				wait, err := r.limiterWait(hctx, t, info.Attempt, true)
				if err == nil {
					copyInfo := AttemptInfo{Key: t.Key, Attempt: info.Attempt, Hedge: true, LimiterWait: wait}
					start := monotime()
					v, err = r.try(hctx, t, copyInfo, nil)
					if hctx.Err() == nil { // a latency unless the attempt or the run cancelled it
						h.record(monotime() - start)
					}
				}
				done <- outcome{v: v, err: err, wait: wait}
			}()
		}
	}
	return first.v, first.err
}
