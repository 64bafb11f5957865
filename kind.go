package fanout

import (
	"context"
	"errors"
	"strings"
)

// ErrorKind names the kind of a key's error, for logs, metrics and the
// "kind" field of a [Result]'s JSON. It returns the kind of the first row
// that matches err, with [errors.Is] or [errors.As]:
//
//	kind          err matches                    the key
//	""            nil                            succeeded
//	"budget"      ErrBudgetExceeded              was skipped: WithBudget ran out
//	"skipped"     ErrSkipped                     never started: the run had stopped
//	"run_timeout" ErrRunTimeout                  was cut by WithTimeout
//	"canceled"    context.Canceled, ErrStopped   was cut by the caller, fail-fast or an early decision
//	"timeout"     ErrTaskTimeout                 ran past WithTaskTimeout
//	"panic"       *PanicError                    panicked
//	"goexit"      ErrGoexit                      called runtime.Goexit
//	"circuit_open" ErrCircuitOpen                was refused by an open CircuitBreaker
//	"retry_budget" ErrRetryBudgetExceeded        was refused a retry by a RetryBudget
//	"error"       anything else                  failed with its own error
//
// The order matters: a skipped key's error also wraps why the run stopped,
// and a key cut by fail-fast also wraps the error that stopped the run, so
// the reasons that end the run come before the task's own. A key cut by
// the deadline of the caller's context, rather than by WithTimeout, is
// "error": its message says context deadline exceeded.
func ErrorKind(err error) string {
	var panicked *PanicError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrBudgetExceeded):
		return "budget"
	case errors.Is(err, ErrSkipped):
		return "skipped"
	case errors.Is(err, ErrRunTimeout):
		return "run_timeout"
	case errors.Is(err, context.Canceled), errors.Is(err, ErrStopped):
		return "canceled"
	case errors.Is(err, ErrTaskTimeout):
		return "timeout"
	case errors.As(err, &panicked):
		return "panic"
	case errors.Is(err, ErrGoexit):
		return "goexit"
	case errors.Is(err, ErrCircuitOpen):
		return "circuit_open"
	case errors.Is(err, ErrRetryBudgetExceeded):
		return "retry_budget"
	}
	return "error"
}

// remoteError is a key's error decoded from JSON: its message, and the
// errors its kind stands for, so that errors.Is and errors.As match it as
// they matched the error that was sent, and ErrorKind gives its kind back.
type remoteError struct {
	msg     string
	matches []error
}

// newRemoteError rebuilds the error of message msg and kind kind. An
// unknown kind, as a newer sender may use, matches nothing.
func newRemoteError(msg, kind string) *remoteError {
	return &remoteError{msg: msg, matches: kindErrors(kind, msg)}
}

func (e *remoteError) Error() string   { return e.msg }
func (e *remoteError) Unwrap() []error { return e.matches }

// kindErrors returns the errors a decoded error of kind matches.
func kindErrors(kind, msg string) []error {
	switch kind {
	case "budget":
		return []error{ErrSkipped, ErrBudgetExceeded}
	case "skipped":
		return []error{ErrSkipped}
	case "run_timeout":
		return []error{ErrRunTimeout}
	case "canceled":
		return []error{context.Canceled}
	case "timeout":
		return []error{ErrTaskTimeout}
	case "goexit":
		return []error{ErrGoexit}
	case "circuit_open":
		return []error{ErrCircuitOpen}
	case "retry_budget":
		return []error{ErrRetryBudgetExceeded}
	case "panic":
		// The stack stays with the sender; the value is in its message.
		return []error{&PanicError{Value: strings.TrimPrefix(msg, panicPrefix())}}
	}
	return nil
}

// panicPrefix is what [PanicError.Error] writes before the panic value.
func panicPrefix() string {
	const mark = "\x00"
	return strings.TrimSuffix((&PanicError{Value: mark}).Error(), mark)
}
