package fanout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
)

var (
	// ErrTaskTimeout is the cause of an attempt that ran past the deadline
	// set by [WithTaskTimeout]. The key's error matches it with [errors.Is],
	// and so does its context's [context.Cause].
	ErrTaskTimeout = errors.New("fanout: task timed out")

	// ErrRunTimeout is the cause reported to every unfinished key when the
	// deadline set by [WithTimeout] passes.
	ErrRunTimeout = errors.New("fanout: run timed out")

	// ErrSkipped marks a key whose task never started because the run had
	// already stopped. The key's error also wraps the reason the run
	// stopped, so errors.Is reaches both.
	ErrSkipped = errors.New("fanout: task skipped")

	// ErrStopped is the cause given to the tasks still running when an
	// aggregator decided early or a Stream's consumer stopped ranging.
	ErrStopped = errors.New("fanout: run stopped early")

	// ErrHedgeLost is the cause given to a copy of a hedged attempt when
	// another copy succeeded first. It ends that attempt alone, not the
	// run.
	ErrHedgeLost = errors.New("fanout: another copy of the attempt succeeded first")

	// ErrBudgetExceeded is the reason keys are skipped once the spending
	// reported through [Spend] passes the maximum set by [WithBudget].
	ErrBudgetExceeded = errors.New("fanout: budget exceeded")

	// ErrGoexit is the error of a key whose task called runtime.Goexit
	// (as t.FailNow and t.Fatal do when called inside a task), and Gather's
	// error when its aggregator did.
	ErrGoexit = errors.New("fanout: runtime.Goexit called")
)

// TaskError ties a failed key to its error. Run joins one TaskError per
// failed key, in input order; errors.Is and errors.As reach Err through it.
type TaskError struct {
	Key string
	Err error
}

// Error names the key and its error.
func (e *TaskError) Error() string {
	return fmt.Sprintf("fanout: task %q: %s", e.Key, unprefixed(e.Err))
}

// Unwrap returns the task's error.
func (e *TaskError) Unwrap() error { return e.Err }

// PanicError is the error of a task that panicked. Value is what was passed
// to panic and Stack the panicking goroutine's stack, without its header.
type PanicError struct {
	Value any
	Stack []byte
}

func newPanicError(v any) *PanicError {
	stack := debug.Stack()
	// Start the stack at the function that panicked: drop the goroutine
	// header, which differs between runs, and the frames of the recovery
	// itself, up to the runtime's panic frame and its file line.
	if i := bytes.Index(stack, []byte("\npanic(")); i >= 0 {
		rest := stack[i+1:]
		for range 2 {
			if j := bytes.IndexByte(rest, '\n'); j >= 0 {
				rest = rest[j+1:]
			}
		}
		stack = rest
	} else if i := bytes.IndexByte(stack, '\n'); i >= 0 {
		stack = stack[i+1:]
	}
	return &PanicError{Value: v, Stack: stack}
}

// Error gives the panic value; the stack is in Stack.
func (e *PanicError) Error() string { return fmt.Sprintf("fanout: panic: %v", e.Value) }

// Unwrap returns the panic value if it is an error, so errors.Is can match
// a task that panicked with a sentinel.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// skipped is the error of a key that never started.
func skipped(cause error) error {
	if cause == nil || errors.Is(cause, ErrSkipped) {
		return ErrSkipped
	}
	return wrap(ErrSkipped, ": ", cause)
}

// wrapped says outer, then inner: a reason and what it led to, or the
// other way round. errors.Is and errors.As reach both.
type wrapped struct {
	outer, inner error
	sep          string
}

// wrap joins outer and inner into one message with one "fanout: " prefix.
func wrap(outer error, sep string, inner error) error {
	return &wrapped{outer: outer, inner: inner, sep: sep}
}

func (e *wrapped) Error() string   { return e.outer.Error() + e.sep + unprefixed(e.inner) }
func (e *wrapped) Unwrap() []error { return []error{e.outer, e.inner} }

// unprefixed is err's message without its leading "fanout: ", for
// messages that already have one.
func unprefixed(err error) string { return strings.TrimPrefix(err.Error(), "fanout: ") }

// withCause replaces a bare context error returned by a task with one that
// also says why its context ended, so callers never see a plain
// "context canceled".
func withCause(ctx context.Context, err error) error {
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(err, cause) {
		return err
	}
	return wrap(cause, ": ", err)
}
