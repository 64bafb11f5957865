package fanout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
)

// Aggregator folds a run's Results into one answer, for [Gather].
//
// Gather calls Add once per key, in completion order, from one goroutine.
// When Add returns true the aggregator has decided: the tasks still running
// are cancelled and the rest skipped, and their Results are still passed
// to Add (whose answer is then ignored), so every key is accounted for.
// Result is called last, with Gather's context, so it may itself call out
// (an LLM that synthesises the branches' answers, say).
//
// An Aggregator that also has a Begin([]Task[T]) method is shown the tasks
// before the run starts; [Vote] uses it to know how many votes remain.
// Aggregators hold state: make a new one for each Gather.
type Aggregator[T, R any] interface {
	Add(r Result[T]) (decided bool)
	Result(ctx context.Context) (R, error)
}

// failures collects the errors of failed keys, to join in input order
// as Run does, whatever order they completed in.
type failures []failure

type failure struct {
	index int
	err   error
}

func (f *failures) add(index int, key string, err error) {
	*f = append(*f, failure{index: index, err: &TaskError{Key: key, Err: err}})
}

func (f failures) err() error {
	sorted := slices.SortedStableFunc(slices.Values(f), func(a, b failure) int { return cmp.Compare(a.index, b.index) })
	errs := make([]error, len(sorted))
	for i, x := range sorted {
		errs[i] = x.err
	}
	return errors.Join(errs...)
}

// none is the error of an aggregator that saw no success: it joins the
// failures, or says there were no keys at all.
func (f failures) none(agg string) error {
	if len(f) == 0 {
		return fmt.Errorf("fanout: %s: no keys", agg)
	}
	return wrap(fmt.Errorf("fanout: %s: no key succeeded", agg), ": ", f.err())
}

// MergeMap returns an Aggregator whose answer maps each key that succeeded
// to its value. Its error, like Run's, joins the failed keys' errors in
// input order, whatever order they completed in.
func MergeMap[T any]() Aggregator[T, map[string]T] {
	return &mergeMap[T]{values: make(map[string]T)}
}

type mergeMap[T any] struct {
	values map[string]T
	failed failures
}

func (m *mergeMap[T]) Add(r Result[T]) bool {
	if r.Err != nil {
		m.failed.add(r.Index, r.Key, r.Err)
	} else {
		m.values[r.Key] = r.Value
	}
	return false
}

func (m *mergeMap[T]) Result(context.Context) (map[string]T, error) { return m.values, m.failed.err() }

// nilFunc reports a missing function argument of an aggregator, which
// Gather returns before any task starts.
func nilFunc(agg, arg string, isNil bool) error {
	if isNil {
		return fmt.Errorf("fanout: %s: nil %s", agg, arg)
	}
	return nil
}

// Reduce returns an Aggregator that folds every Result, failures included,
// into an accumulator starting at init.
func Reduce[T, R any](init R, fn func(acc R, r Result[T]) R) Aggregator[T, R] {
	return &reduce[T, R]{acc: init, fn: fn}
}

type reduce[T, R any] struct {
	acc R
	fn  func(R, Result[T]) R
}

func (a *reduce[T, R]) check(int) error { return nilFunc("Reduce", "fn", a.fn == nil) }

func (a *reduce[T, R]) Add(r Result[T]) bool              { a.acc = a.fn(a.acc, r); return false }
func (a *reduce[T, R]) Result(context.Context) (R, error) { return a.acc, nil }

// Collect returns an Aggregator that waits for every key, then calls fn
// with the Results in input order: the place for a final step that needs
// all the branches at once, such as an LLM call that compares them.
func Collect[T, R any](fn func(ctx context.Context, results []Result[T]) (R, error)) Aggregator[T, R] {
	return &collect[T, R]{fn: fn}
}

type collect[T, R any] struct {
	results []Result[T]
	fn      func(context.Context, []Result[T]) (R, error)
}

func (c *collect[T, R]) check(int) error { return nilFunc("Collect", "fn", c.fn == nil) }

func (c *collect[T, R]) Add(r Result[T]) bool { c.results = append(c.results, r); return false }

func (c *collect[T, R]) Result(ctx context.Context) (R, error) {
	slices.SortFunc(c.results, func(a, b Result[T]) int { return cmp.Compare(a.Index, b.Index) })
	return c.fn(ctx, c.results)
}

// First returns an Aggregator that decides at the first success, which
// wins the race; the other tasks are cancelled. Its error joins the
// failures if no key succeeded.
func First[T any]() Aggregator[T, Result[T]] { return &first[T]{} }

type first[T any] struct {
	won    *Result[T]
	failed failures
}

func (f *first[T]) Add(r Result[T]) bool {
	switch {
	case f.won != nil:
	case r.Err == nil:
		f.won = &r
	default:
		f.failed.add(r.Index, r.Key, r.Err)
	}
	return f.won != nil
}

func (f *first[T]) Result(context.Context) (Result[T], error) {
	if f.won == nil {
		return Result[T]{}, f.failed.none("First")
	}
	return *f.won, nil
}

// Quorum returns an Aggregator that decides once k keys have succeeded,
// answering with those k Results in completion order, or once so many have
// failed that k can no longer succeed, answering with an error. k must be
// positive.
func Quorum[T any](k int) Aggregator[T, []Result[T]] {
	return &quorum[T]{k: k, remaining: -1}
}

type quorum[T any] struct {
	k         int
	remaining int // keys not yet seen; -1 if unknown
	ok        []Result[T]
	failed    failures
	decided   bool
}

func (q *quorum[T]) check(tasks int) error {
	if q.k < 1 || (tasks >= 0 && q.k > tasks) {
		return fmt.Errorf("fanout: Quorum(%d): k must be between 1 and the %d tasks", q.k, tasks)
	}
	return nil
}

func (q *quorum[T]) Begin(tasks []Task[T]) { q.remaining = len(tasks) }

func (q *quorum[T]) Add(r Result[T]) bool {
	if q.decided {
		return true
	}
	if q.remaining > 0 {
		q.remaining--
	}
	if r.Err == nil {
		q.ok = append(q.ok, r)
	} else {
		q.failed.add(r.Index, r.Key, r.Err)
	}
	q.decided = len(q.ok) >= q.k || (q.remaining >= 0 && len(q.ok)+q.remaining < q.k)
	return q.decided
}

func (q *quorum[T]) Result(context.Context) ([]Result[T], error) {
	if len(q.ok) < q.k {
		return q.ok, wrap(fmt.Errorf("fanout: quorum of %d not reached, %d succeeded", q.k, len(q.ok)), ": ", q.failed.err())
	}
	return q.ok, nil
}
