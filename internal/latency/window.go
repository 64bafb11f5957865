// Package latency keeps a sliding window of recent latencies and reads
// quantiles off it, for hedging attempts that run slower than most.
package latency

import (
	"slices"
	"time"
)

// Window holds the most recent latencies, up to a fixed size. It is not
// safe for concurrent use.
type Window struct {
	samples []time.Duration // a ring once full
	size    int
	added   int
}

// NewWindow returns a Window that keeps the last size latencies. It panics
// if size < 1.
func NewWindow(size int) *Window {
	if size < 1 {
		panic("latency: NewWindow: size must be positive")
	}
	return &Window{size: size}
}

// Add records a latency, forgetting the oldest once the window is full.
func (w *Window) Add(d time.Duration) {
	if len(w.samples) < w.size {
		w.samples = append(w.samples, d)
	} else {
		w.samples[w.added%w.size] = d
	}
	w.added++
}

// Added returns how many latencies were ever added.
func (w *Window) Added() int { return w.added }

// Sorted returns the latencies in the window in ascending order, in a
// new slice: O(n log n), for callers to refresh now and then, not on every
// Add.
func (w *Window) Sorted() []time.Duration {
	sorted := slices.Clone(w.samples)
	slices.Sort(sorted)
	return sorted
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of sorted latencies: the
// sample at rank ⌊q·(n-1)⌋, so it is always one that was observed. It
// returns 0 when sorted is empty.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	return sorted[int(q*float64(len(sorted)-1))]
}
