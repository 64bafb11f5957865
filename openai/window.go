package fanoutopenai

import "time"

// window is one of the server's budgets, requests or tokens, as a Limits
// models it: limit units per window, remaining of them left (what the
// server last said, less what was granted since; below zero after a call
// used more than it was charged), whole again at resetAt and every period
// after. Its zero value knows nothing and holds nothing back.
type window struct {
	known     bool
	limit     int
	remaining int
	resetAt   time.Time
	period    time.Duration // the longest reset the server has announced
}

// observe takes in what a response said of this budget at now.
func (w *window) observe(b budgetHeader, now time.Time) {
	if !b.complete() {
		return
	}
	at := now.Add(b.reset)
	w.roll(now)
	if !w.known {
		*w = window{known: true, limit: b.limit, remaining: b.remaining, resetAt: at, period: b.reset}
		return
	}
	w.period = max(w.period, b.reset)
	if at.Before(w.resetAt.Add(-w.period / 2)) {
		return // it describes a window that has passed
	}
	w.limit = b.limit
	w.remaining = min(w.remaining, b.remaining)
	if at.After(w.resetAt) {
		w.resetAt = at
	}
}

// roll makes the budget whole again if its reset has passed.
func (w *window) roll(now time.Time) {
	if !w.known || now.Before(w.resetAt) {
		return
	}
	if w.period <= 0 {
		*w = window{} // no window to count in: wait for the server's word
		return
	}
	w.remaining = w.limit
	w.resetAt = w.resetAt.Add(w.period * (now.Sub(w.resetAt)/w.period + 1))
}

// ready returns the zero time if n units fit now, and otherwise when the
// budget is whole again.
func (w *window) ready(now time.Time, n int) time.Time {
	w.roll(now)
	if !w.known || w.remaining >= n {
		return time.Time{}
	}
	return w.resetAt
}

// take takes n units, which may leave the budget in debt.
func (w *window) take(n int) {
	if w.known {
		w.remaining -= n
	}
}

// tooLarge reports whether n units can never fit.
func (w *window) tooLarge(n int) bool { return w.known && n > w.limit }
