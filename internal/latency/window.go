// Package latency keeps a sliding window of recent latencies and reads
// quantiles off it, for hedging attempts that run slower than most.
package latency

import (
	"slices"
	"time"
)

// Window holds the most recent latencies, up to a fixed size, and keeps
// them sorted as they come, so a quantile is always one index away. It is
// not safe for concurrent use.
type Window struct {
	ring   []time.Duration // in arrival order, overwritten once full
	sorted []time.Duration // the same latencies, ascending
	size   int
	added  int
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
// It costs a binary search and a copy of up to size durations.
func (w *Window) Add(d time.Duration) {
	if len(w.ring) < w.size {
		w.ring = append(w.ring, d)
	} else {
		slot := w.added % w.size
		i, _ := slices.BinarySearch(w.sorted, w.ring[slot])
		w.sorted = slices.Delete(w.sorted, i, i+1)
		w.ring[slot] = d
	}
	i, _ := slices.BinarySearch(w.sorted, d)
	w.sorted = slices.Insert(w.sorted, i, d)
	w.added++
}

// Added returns how many latencies were ever added.
func (w *Window) Added() int { return w.added }

// Len returns how many latencies the window holds.
func (w *Window) Len() int { return len(w.sorted) }

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of the latencies in the
// window: the one at rank ⌊q·(n-1)⌋ in ascending order, so it is always
// one that was observed. It returns 0 for an empty window.
func (w *Window) Quantile(q float64) time.Duration {
	if len(w.sorted) == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	return w.sorted[int(q*float64(len(w.sorted)-1))]
}
