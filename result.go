package fanout

import (
	"errors"
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
}

// OK reports whether the task succeeded.
func (r Result[T]) OK() bool { return r.Err == nil }

// Results holds one Result per key of a run. It answers by key, in input
// order and as maps. A Results is safe for concurrent reads.
type Results[T any] struct {
	list  []Result[T]
	index map[string]int
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
