package fanout

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Result is the outcome of one key: its value, or the error that stopped
// it. Every task of a run gets exactly one Result.
type Result[T any] struct {
	Key   string
	Index int // position of the task in the input (or in a lazy source)
	Value T
	// Err is nil on success. Otherwise it is the task's own error, an
	// error matching ErrTaskTimeout, a *PanicError, or an error matching
	// ErrSkipped when the task never started.
	Err error
	// Attempts counts every try: first call, retries and hedged copies.
	Attempts int
	// Hedges counts the hedged copies among Attempts.
	Hedges int
	// Elapsed runs from the task's first start to its final end, and
	// includes waits for retries and rate limiters.
	Elapsed time.Duration
	// LimiterWait is the time spent waiting on rate limiters.
	LimiterWait time.Duration
	// Cost is what the task reported through Spend.
	Cost Cost
	// Replayed is true when the Result came from the run's Journal (see
	// WithJournal): Do was not called.
	Replayed bool

	weight float64 // the task's Weight, for WeightedVote over a lazy source
}

// OK reports whether the task succeeded.
func (r Result[T]) OK() bool { return r.Err == nil }

// resultJSON is the JSON form of a Result, as MarshalJSON documents it.
type resultJSON[T any] struct {
	Key           string    `json:"key"`
	Index         int       `json:"index"`
	Value         *T        `json:"value,omitempty"`
	Error         string    `json:"error,omitempty"`
	Kind          string    `json:"kind,omitempty"`
	Attempts      int       `json:"attempts"`
	Hedges        int       `json:"hedges"`
	ElapsedMS     float64   `json:"elapsed_ms"`
	LimiterWaitMS float64   `json:"limiter_wait_ms"`
	Cost          *costJSON `json:"cost,omitempty"`
	Replayed      bool      `json:"replayed,omitempty"`
}

type costJSON struct {
	Tokens int64   `json:"tokens"`
	Cents  float64 `json:"cents"`
}

// MarshalJSON encodes r as one JSON object, so that a service can send
// the results of a run:
//
//	{"key":"a","index":0,"value":…,"error":"…","kind":"timeout",
//	 "attempts":2,"hedges":0,"elapsed_ms":1500.25,"limiter_wait_ms":0,
//	 "cost":{"tokens":120,"cents":0.3}}
//
// value is Value's own JSON, present only when the key succeeded; error is
// Err's message and kind its [ErrorKind], both absent on success;
// elapsed_ms and limiter_wait_ms are Elapsed and LimiterWait in
// milliseconds, with fractions; cost is absent when the key reported none;
// replayed is present, true, when the Result came from a Journal.
// [Result.UnmarshalJSON] decodes it back.
func (r Result[T]) MarshalJSON() ([]byte, error) {
	out := resultJSON[T]{
		Key: r.Key, Index: r.Index, Attempts: r.Attempts, Hedges: r.Hedges,
		ElapsedMS: millis(r.Elapsed), LimiterWaitMS: millis(r.LimiterWait), Replayed: r.Replayed,
	}
	if r.Err == nil {
		out.Value = &r.Value
	} else {
		out.Error, out.Kind = r.Err.Error(), ErrorKind(r.Err)
	}
	if r.Cost != (Cost{}) {
		out.Cost = &costJSON{Tokens: r.Cost.Tokens, Cents: r.Cost.Cents}
	}
	return json.Marshal(out)
}

// UnmarshalJSON decodes what [Result.MarshalJSON] encodes. A key that
// failed gets an Err whose Error() is the message sent, and which matches
// with [errors.Is] what its kind names in [ErrorKind]'s table (kind
// "timeout" matches ErrTaskTimeout, "canceled" context.Canceled, "budget"
// both ErrBudgetExceeded and ErrSkipped), or, for "panic", a
// [*PanicError] whose Value is the panic value as the message spelled it,
// and whose Stack is empty. ErrorKind of the decoded Err is the kind sent;
// an unknown kind matches nothing and is "error".
func (r *Result[T]) UnmarshalJSON(data []byte) error {
	var in resultJSON[T]
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	*r = Result[T]{
		Key: in.Key, Index: in.Index, Attempts: in.Attempts, Hedges: in.Hedges,
		Elapsed: fromMillis(in.ElapsedMS), LimiterWait: fromMillis(in.LimiterWaitMS), Replayed: in.Replayed,
	}
	if in.Value != nil {
		r.Value = *in.Value
	}
	if in.Error != "" || in.Kind != "" {
		r.Err = newRemoteError(in.Error, in.Kind)
	}
	if in.Cost != nil {
		r.Cost = Cost{Tokens: in.Cost.Tokens, Cents: in.Cost.Cents}
	}
	return nil
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fromMillis(ms float64) time.Duration {
	return time.Duration(math.Round(ms * float64(time.Millisecond)))
}

// Results holds one Result per key of a run. It answers by key, in input
// order and as maps. A Results is safe for concurrent reads.
type Results[T any] struct {
	list  []Result[T]
	index map[string]int
}

// NewResults returns the Results of tasks run by other means (a
// provider's batch API, say), so that they read like a [Run]'s: list holds
// one Result per key in input order, and each Result's Index is set to its
// position. An empty or duplicate key is an error. NewResults keeps list.
func NewResults[T any](list []Result[T]) (*Results[T], error) {
	index := make(map[string]int, len(list))
	for i := range list {
		key := list[i].Key
		if key == "" {
			return nil, fmt.Errorf("fanout: NewResults: Result %d: empty Key", i)
		}
		if j, dup := index[key]; dup {
			return nil, fmt.Errorf("fanout: NewResults: duplicate key %q (Results %d and %d)", key, j, i)
		}
		index[key] = i
		list[i].Index = i
	}
	return &Results[T]{list: list, index: index}, nil
}

// Len returns the number of keys.
func (rs *Results[T]) Len() int { return len(rs.list) }

// All returns the Results in input order. The slice is shared: do not
// modify it.
func (rs *Results[T]) All() []Result[T] { return rs.list }

// Get returns the Result of key, and whether the run had that key.
func (rs *Results[T]) Get(key string) (Result[T], bool) {
	i, ok := rs.index[key]
	if !ok {
		return Result[T]{}, false
	}
	return rs.list[i], true
}

// Value returns the value and error of key. A key the run did not have
// returns an error saying so.
func (rs *Results[T]) Value(key string) (T, error) {
	r, ok := rs.Get(key)
	if !ok {
		var zero T
		return zero, &TaskError{Key: key, Err: errUnknownKey}
	}
	return r.Value, r.Err
}

var errUnknownKey = errors.New("fanout: no such key in the run")

// Values returns the values of the keys that succeeded.
func (rs *Results[T]) Values() map[string]T {
	m := make(map[string]T, len(rs.list))
	for _, r := range rs.list {
		if r.Err == nil {
			m[r.Key] = r.Value
		}
	}
	return m
}

// Errs returns the errors of the keys that failed.
func (rs *Results[T]) Errs() map[string]error {
	m := make(map[string]error)
	for _, r := range rs.list {
		if r.Err != nil {
			m[r.Key] = r.Err
		}
	}
	return m
}

// Succeeded returns how many keys succeeded.
func (rs *Results[T]) Succeeded() int {
	n := 0
	for _, r := range rs.list {
		if r.Err == nil {
			n++
		}
	}
	return n
}

// Cost returns the total reported by every key through Spend.
func (rs *Results[T]) Cost() Cost {
	var c Cost
	for _, r := range rs.list {
		c = c.Add(r.Cost)
	}
	return c
}

// Err returns nil if every key succeeded, and otherwise the *TaskError of
// each failed key joined in input order.
func (rs *Results[T]) Err() error {
	var errs []error
	for _, r := range rs.list {
		if r.Err != nil {
			errs = append(errs, &TaskError{Key: r.Key, Err: r.Err})
		}
	}
	return errors.Join(errs...)
}
