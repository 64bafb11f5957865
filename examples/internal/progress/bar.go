// Package progress shows how far a fan-out has got: keys done out of the
// total, failures, retries, calls, rate and time left, as a live bar on a
// terminal and as one summary line anywhere else.
//
// The bar is drawn by github.com/vbauerster/mpb/v8 rather than
// github.com/schollz/progressbar/v3. Both are kept up and safe to advance
// from many goroutines, but mpb composes a bar from decorators, and any
// function of the moment's state can be one (decor.Any), so the counts of
// failures and retries sit beside the bar as first-class parts of it,
// re-read at each refresh; progressbar has one free-text description that
// the caller must rewrite itself. mpb also draws from a goroutine and ticker
// of its own, so the hooks, called on the fan-out's hot path, only bump
// atomic counters and hand the bar its increment; they never draw.
//
// Whether the output is a terminal is decided here, with golang.org/x/term
// (TERM=dumb counts as none): piped into a file or a CI log, a progress bar
// is only noise, so there the package draws nothing and prints the summary
// line when the run ends.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// Bar shows a [Counter] as it goes. Create it with [New], pass its
// observers to the runs, and call Stop when the run has returned.
type Bar struct {
	*Counter
	label string
	w     io.Writer
	p     *mpb.Progress // nil when w is not a terminal
	bar   *mpb.Bar
	mu    sync.Mutex // orders the bar's totals as the Counter's grow
}

// New returns a Bar of total keys, named label, drawing on w if w is a
// terminal and otherwise silent until Stop. The total may grow with
// AddTotal.
func New(total int, w io.Writer, label string) *Bar {
	b := &Bar{Counter: NewCounter(total), label: label, w: w}
	if !IsTerminal(w) {
		return b
	}
	b.p = mpb.New(mpb.WithOutput(w), mpb.WithWidth(32), mpb.WithRefreshRate(100*time.Millisecond))
	b.onDone = func() { b.bar.Increment() }
	b.onTotal = func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.bar.SetTotal(b.total.Load(), false)
	}
	// Made with no total, so that mpb lets the total change; Stop
	// completes the bar.
	b.bar = b.p.AddBar(0,
		mpb.PrependDecorators(
			decor.Name(label, decor.WCSyncSpaceR),
			decor.CountersNoUnit("%d/%d", decor.WCSyncWidth),
		),
		mpb.AppendDecorators(
			decor.Percentage(decor.WC{W: 5}),
			decor.Any(func(decor.Statistics) string { return b.Snapshot().Status() }),
		),
	)
	b.bar.SetTotal(int64(total), false)
	return b
}

// Status returns the text the bar draws after itself: failures, skips
// (only once there are some, since they happen only when a run stops
// early), retries, calls, rate and time left.
func (s Snapshot) Status() string {
	eta := "ETA --"
	if d, ok := s.ETA(); ok {
		eta = "ETA " + d.Round(time.Second).String()
	}
	skipped := ""
	if s.Skipped > 0 {
		skipped = fmt.Sprintf("  %d skipped", s.Skipped)
	}
	return fmt.Sprintf("  ✗ %d failed%s  ↻ %d retries  %d calls  %5.1f/s  %s",
		s.Failed, skipped, s.Retries, s.Calls, s.Rate(), eta)
}

// Stop ends the display and returns the final counts: on a terminal it
// completes the bar and waits for its last drawing; elsewhere it prints
// the summary line. Call it once, after the run has returned.
func (b *Bar) Stop() Snapshot {
	if b.p != nil {
		b.bar.SetTotal(-1, true) // complete, even if some key never came

		b.p.Wait()
	}
	s := b.Snapshot()
	if b.p == nil {
		fmt.Fprintf(b.w, "%s: %v\n", b.label, s)
	}
	return s
}

// IsTerminal reports whether w is a terminal that can redraw a bar.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}
