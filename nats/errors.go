package fanoutnats

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/gofanout/fanout"
)

var (
	// ErrMaxDeliveries is the error of a task that JetStream delivered the
	// maximum number of times (see [WithMaxDeliver]) without a worker
	// replying: workers kept dying or stalling on it. The default retry
	// policy of [fanout.WithRetry] retries it as a new task.
	ErrMaxDeliveries = errors.New("fanoutnats: task exhausted its deliveries")

	// ErrNoReply is the error of a task with no reply within the client's
	// [WithResultTimeout].
	ErrNoReply = errors.New("fanoutnats: no reply within the result timeout")

	// ErrBatchCancelled is the error of a task sent through a [Batch]
	// whose run has been cancelled: a Batch serves one run.
	ErrBatchCancelled = errors.New("fanoutnats: batch already cancelled")

	// ErrClientClosed is the error of an attempt made through a [Client]
	// after its Close, or still waiting for its reply when Close was
	// called. It is permanent.
	ErrClientClosed = errors.New("fanoutnats: client closed")

	// ErrTooLarge is matched by errors about arguments or results over the
	// server's maximum message size, and about keys over [MaxKeyLen]. They
	// are permanent: retrying cannot shrink them.
	ErrTooLarge = errors.New("fanoutnats: message too large")
)

// Code classifies a remote error so that it keeps its meaning on the
// client side.
type Code string

// The codes a worker sends. Unknown codes are treated as CodeError.
const (
	CodeError     Code = "error"      // an ordinary, retryable error
	CodePermanent Code = "permanent"  // backoff.Permanent: not worth retrying
	CodeTimeout   Code = "timeout"    // the task's deadline passed on the worker
	CodePanic     Code = "panic"      // the handler panicked
	CodeGoexit    Code = "goexit"     // the handler called runtime.Goexit (not retried)
	CodeNoHandler Code = "no_handler" // no worker serves the name (permanent)
	CodeBadArgs   Code = "bad_args"   // arguments did not decode (permanent)
	CodeTooLarge  Code = "too_large"  // the result is over max_payload (permanent)
)

// RemoteError is an error a worker returned for a task. Its Code decides
// how it matches on the client side: a CodeTimeout error matches
// [fanout.ErrTaskTimeout], a CodeGoexit one [fanout.ErrGoexit], and the
// client wraps permanent codes in [backoff.Permanent] and panics in a
// [*fanout.PanicError], so the core's retry policy treats them as it
// would local ones. errors.As finds the
// RemoteError under either wrapper.
type RemoteError struct {
	Code    Code
	Message string
	Key     string
	Worker  string
	// Delay is the wait the handler's error asked for through a
	// RetryAfter() time.Duration method, zero if none.
	Delay time.Duration
}

// Error names the worker and gives the handler's message.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("fanoutnats: worker %s: %s", e.Worker, e.Message)
}

// Unwrap lets a timeout match [fanout.ErrTaskTimeout], a Goexit
// [fanout.ErrGoexit] and an oversized result [ErrTooLarge].
func (e *RemoteError) Unwrap() error {
	switch e.Code {
	case CodeTimeout:
		return fanout.ErrTaskTimeout
	case CodeGoexit:
		return fanout.ErrGoexit
	case CodeTooLarge:
		return ErrTooLarge
	}
	return nil
}

// RetryAfter returns the delay the remote error asked for, so that
// [fanout.WithRetry] honours it.
func (e *RemoteError) RetryAfter() time.Duration { return e.Delay }

// wireError is a failed reply's body.
type wireError struct {
	Code         Code   `json:"code"`
	Message      string `json:"message"`
	Stack        string `json:"stack,omitempty"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

// toWire classifies a handler's error for the reply.
func toWire(ctx context.Context, err error) wireError {
	w := wireError{Code: CodeError, Message: err.Error()}
	var perm *backoff.PermanentError
	var panicked *fanout.PanicError
	var ra interface{ RetryAfter() time.Duration }
	var coded *codedError
	switch {
	case errors.As(err, &coded):
		w.Code = coded.code
	case errors.As(err, &panicked):
		w.Code, w.Message, w.Stack = CodePanic, fmt.Sprint(panicked.Value), string(panicked.Stack)
	case errors.As(err, &perm):
		w.Code = CodePermanent
	case errors.Is(err, fanout.ErrGoexit):
		w.Code = CodeGoexit
	case errors.Is(err, fanout.ErrTaskTimeout),
		errors.Is(err, context.DeadlineExceeded) && errors.Is(context.Cause(ctx), fanout.ErrTaskTimeout):
		w.Code = CodeTimeout
	}
	if errors.As(err, &ra) && ra.RetryAfter() > 0 {
		w.RetryAfterMS = ra.RetryAfter().Milliseconds()
	}
	return w
}

// fromWire rebuilds the client-side error of a failed reply.
func fromWire(w wireError, key, worker string) error {
	re := &RemoteError{Code: w.Code, Message: w.Message, Key: key, Worker: worker,
		Delay: time.Duration(w.RetryAfterMS) * time.Millisecond}
	switch w.Code {
	case CodePanic:
		return &fanout.PanicError{Value: re, Stack: []byte(w.Stack)}
	case CodePermanent, CodeNoHandler, CodeBadArgs, CodeTooLarge:
		return backoff.Permanent(re)
	}
	return re
}

// newPanicError records a handler's panic with its stack, without the
// goroutine header line.
func newPanicError(v any) *fanout.PanicError {
	stack := debug.Stack()
	if line := bytes.IndexByte(stack, '\n'); line >= 0 {
		stack = stack[line+1:]
	}
	return &fanout.PanicError{Value: v, Stack: stack}
}
