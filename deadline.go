package fanout

import (
	"context"
	"sync"
	"time"
)

// A per-task deadline built with context.WithTimeout costs four
// allocations, a timer and a registration on the parent context per task:
// more than the rest of a run. A worker runs one attempt at a time, so it
// keeps one timer for all its attempts and re-arms it, and gives each
// attempt a cancel context of its own that is not registered on any
// parent; the run cancels the attempts in flight itself when it stops.
// Hedged copies, which run beside their attempt, use context.WithTimeout.

// attemptContext is the context of an attempt with a deadline. Done, Err
// and context.Cause come from its own cancel context; values and an
// earlier deadline from the worker's context it stands under.
type attemptContext struct {
	context.Context // the attempt's own cancel context
	parent          context.Context
	deadline        time.Time
}

func (c *attemptContext) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *attemptContext) Value(key any) any {
	// The own context answers only for itself (which is how
	// context.Cause finds the cause); everything else is the parent's.
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.parent.Value(key)
}

// Err reports DeadlineExceeded when the attempt's deadline passed, as a
// context.WithTimeout would, and the run's own error when it stopped.
func (c *attemptContext) Err() error {
	err := c.Context.Err()
	if err == nil {
		return nil
	}
	if context.Cause(c.Context) == ErrTaskTimeout {
		return context.DeadlineExceeded
	}
	if perr := c.parent.Err(); perr != nil {
		return perr
	}
	return err
}

// deadlines arms one worker's attempt deadlines.
type deadlines struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel context.CancelCauseFunc // the running attempt's; nil between attempts
	end    time.Duration           // monotime of its deadline
}

// begin returns the context of an attempt that must end within d, under
// parent, in a run whose context is runCtx. The caller must call finish
// when the attempt returns.
func (dl *deadlines) begin(clock *runClock, runCtx, parent context.Context, d time.Duration) context.Context {
	own, cancel := context.WithCancelCause(context.Background())
	now := monotime()
	ctx := &attemptContext{Context: own, parent: parent, deadline: clock.wall(now + d)}
	dl.mu.Lock()
	dl.cancel, dl.end = cancel, now+d
	dl.mu.Unlock()
	// The run may have stopped before this attempt was registered for
	// stop; runCtx is read after registering, so one of the two sees the
	// other.
	if runCtx.Err() != nil {
		cancel(context.Cause(runCtx))
	}
	if dl.timer == nil {
		dl.timer = time.AfterFunc(d, dl.fire)
	} else {
		dl.timer.Reset(d)
	}
	return ctx
}

func (dl *deadlines) finish() {
	// The timer is left armed: the next begin re-arms it, and if it fires
	// first it finds no attempt to cancel. Stopping it would cost as much
	// as the rest of finish.
	dl.mu.Lock()
	cancel := dl.cancel
	dl.cancel = nil
	dl.mu.Unlock()
	cancel(nil)
}

// close stops the timer when the worker is done.
func (dl *deadlines) close() {
	if dl.timer != nil {
		dl.timer.Stop()
	}
}

// fire is the timer's callback. It may run late, after its attempt ended
// and the next began; the check against the current deadline keeps it
// from cancelling the wrong attempt.
func (dl *deadlines) fire() {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.cancel != nil && monotime() >= dl.end {
		dl.cancel(ErrTaskTimeout)
	}
}

// stop cancels the attempt in flight, if any, with cause.
func (dl *deadlines) stop(cause error) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.cancel != nil {
		dl.cancel(cause)
	}
}

// runClock converts monotime to wall-clock deadlines.
type runClock struct {
	wallStart time.Time
	monoStart time.Duration
}

func newRunClock() runClock { return runClock{wallStart: time.Now(), monoStart: monotime()} }

func (c *runClock) wall(mono time.Duration) time.Time { return c.wallStart.Add(mono - c.monoStart) }
