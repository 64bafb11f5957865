// Package fanout runs keyed tasks concurrently and collects every key's
// value or error.
//
// A run takes a slice of [Task] values, each with a unique Key and a Do
// function, and returns one [Result] per key: the value, the task's own
// error, a timeout, a recovered panic, or [ErrSkipped] for a task that never
// started because the run had stopped. Partial results are normal: one
// failed key never loses another key's value.
//
// There are four entry points:
//
//   - [Run] waits for every key and returns them as [*Results], by key and
//     in input order.
//   - [Stream] yields Results in completion order; breaking out of the loop
//     cancels the rest. [StreamSeq] does the same for a lazy source of
//     tasks, in memory bounded by the limit rather than the task count.
//   - [Map] applies one function to many inputs.
//   - [Gather] folds Results into an [Aggregator] (a vote, a quorum, the
//     first success, a reduction, ...) that may stop the run early.
//
// Options bound the run: [WithLimit] and [WithSemaphore] cap concurrency,
// [WithTaskTimeout] and [WithTimeout] set deadlines, [WithFailFast] stops at
// the first failure, [WithRetry], [WithRateLimit] and [WithHedge] deal with
// flaky, rate-limited and slow-tailed services, [WithBudget] caps spending
// and [WithObserver] watches it all.
//
// No goroutine started by a run outlives the call that started it: tasks
// that ignore their context are waited for (the one exception, a
// [StreamSeq] source blocked when its run stops, is documented there).
// User code that panics or calls runtime.Goexit never takes a worker down
// with it: in a task it fails that key, in an aggregator it is [Gather]'s
// error, in a lazy source it is raised again where the sequence is ranged.
//
// Start with [Run]; the per-task path (slot, limiters, budget, retries,
// hedging, the call) is the same under every entry point.
package fanout

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"slices"
	"strconv"
	"sync"
)

// Task is one keyed unit of work.
type Task[T any] struct {
	// Key names the task; it must be non-empty and unique within a run.
	Key string
	// Do does the work. It should return promptly when ctx is done; if
	// it does not, the run waits for it all the same.
	Do func(ctx context.Context) (T, error)
	// Weight is the task's vote in weighted aggregators; zero means 1. It
	// must be finite and not negative.
	Weight float64
	// Priority orders the start of tasks when slots are scarce: higher
	// starts first, equal priorities keep input order.
	Priority int
	// Tokens is charged to the limiters of WithRateLimit on each attempt,
	// for instance the estimated tokens of an LLM call; zero means 1.
	Tokens int
	// Resource names the shared limit the task needs — a host, a model,
	// an API — that ForResource and WithResourceLimit cap; empty means
	// none.
	Resource string
}

// Run runs every task and returns when each has a Result.
//
// The error is nil if every task succeeded. Otherwise it joins the
// [*TaskError] of each failed key in input order, and the *Results still
// holds every key's outcome. Invalid input — an empty or duplicate key, a
// nil Do, a bad option, Tokens beyond a limiter's burst — is reported
// before any task starts, with a nil *Results.
//
// A task that panics fails its own key with a [*PanicError]; one that
// calls runtime.Goexit (t.FailNow in a test, say) fails its own key with
// [ErrGoexit]. Either way the other keys are unaffected and Run returns.
//
// On the 2-core benchmark machine, a Run of 1 000 trivial tasks under
// WithLimit(8) costs no allocation per task beyond the Result itself and
// about a third of errgroup with the mutex-guarded map of results that
// Run replaces; with WithTaskTimeout, 4 allocations (those of
// context.WithTimeoutCause) and about 0.55 times the same errgroup code
// with a context.WithTimeout per task (0.75 times with 100 000 tasks;
// see BENCHMARKS.md).
func Run[T any](ctx context.Context, tasks []Task[T], opts ...Option) (*Results[T], error) {
	cfg := newConfig(opts)
	index, err := validate(cfg, tasks)
	if err != nil {
		return nil, err
	}
	rs := &Results[T]{list: make([]Result[T], len(tasks)), index: index}
	if len(tasks) > 0 {
		r := newRun(ctx, cfg, taskSource(tasks, cfg), len(tasks))
		r.results = rs.list
		r.runAll()
	}
	return rs, rs.Err()
}

// Map calls fn once per input, concurrently, and returns the Results keyed
// by the inputs' indexes ("0", "1", ...).
func Map[In, T any](ctx context.Context, inputs []In, fn func(context.Context, In) (T, error), opts ...Option) (*Results[T], error) {
	if fn == nil {
		return nil, errors.New("fanout: Map: nil function")
	}
	tasks := make([]Task[T], len(inputs))
	for i, in := range inputs {
		tasks[i] = Task[T]{
			Key: strconv.Itoa(i),
			Do:  func(ctx context.Context) (T, error) { return fn(ctx, in) },
		}
	}
	return Run(ctx, tasks, opts...)
}

// Stream validates tasks and options, and returns a sequence that runs the
// tasks when ranged over and yields each Result as it completes. Breaking
// out of the loop cancels the tasks still running, with cause
// [ErrStopped], and waits for them before the loop ends. Each range runs
// the tasks anew.
func Stream[T any](ctx context.Context, tasks []Task[T], opts ...Option) (iter.Seq[Result[T]], error) {
	cfg := newConfig(opts)
	if _, err := validate(cfg, tasks); err != nil {
		return nil, err
	}
	return func(yield func(Result[T]) bool) {
		if len(tasks) == 0 {
			return
		}
		newRun(ctx, cfg, taskSource(tasks, cfg), len(tasks)).stream(yield)
	}, nil
}

// StreamSeq is [Stream] over a lazy source of tasks: tasks are pulled only
// as slots free up, so memory stays bounded by the limit however many
// tasks the source yields. It needs [WithLimit] or [WithSemaphore].
//
// Keys are not checked for uniqueness, since that would hold every key in
// memory; a task with an empty key, a nil Do or too many Tokens fails with
// its own Result. Priority is ignored: tasks start in source order. The
// source is pulled from one goroutine at a time, and no longer once the
// run has stopped, spent its [WithBudget], or had a rate limiter refuse a
// wait that would outlast its deadline: every task pulled gets its Result,
// and the tasks never pulled get none.
//
// The source cannot see the run's context, so it may block while the run
// stops (a receive from a channel nobody sends on, say). The run does not
// wait for it: the sequence ends, WithTimeout still bounds it, and the
// blocked pull is abandoned; when it returns, its task is dropped without
// a Result and the source is stopped. Until then one goroutine of the run
// outlives it, blocked in the source; a source that selects on ctx as well
// leaves none. A source that panics or calls runtime.Goexit stops the run,
// and once every task has ended the panic (as a [*PanicError]) or the
// Goexit is raised again on the goroutine ranging the sequence.
func StreamSeq[T any](ctx context.Context, tasks iter.Seq[Task[T]], opts ...Option) (iter.Seq[Result[T]], error) {
	cfg := newConfig(opts)
	if err := checkSeq("StreamSeq", cfg, tasks != nil, true); err != nil {
		return nil, err
	}
	return func(yield func(Result[T]) bool) {
		src := lazySource(tasks)
		r := newRun(ctx, cfg, src, -1)
		src.start(max(r.workerCount(), 1), r.pulling, r.fail)
		defer src.raise()
		defer src.close()
		r.stream(yield)
	}, nil
}

// Gather runs the tasks and folds their Results, in completion order, into
// agg, calling agg.Add from one goroutine at a time. When agg.Add reports
// that it has decided, the tasks still running are cancelled with cause
// [ErrStopped] and the tasks not yet started are skipped; their Results
// still reach agg.Add, so every key is accounted for. Gather then returns
// agg.Result. A built-in aggregator given a bad argument (a nil function,
// a quorum larger than the tasks) is reported before any task starts.
//
// If agg panics or calls runtime.Goexit (in Begin, Add or Result, or in a
// function given to a built-in aggregator), the run stops, every task
// ends, and Gather returns the panic as a [*PanicError] (or [ErrGoexit]);
// agg is not called again. What agg.Result reports through [Spend] (a
// Collect step that calls an LLM, say) counts in the run's [WithBudget]
// and in the RunSummary of its Observer.
func Gather[T, R any](ctx context.Context, tasks []Task[T], agg Aggregator[T, R], opts ...Option) (R, error) {
	var zero R
	if agg == nil {
		return zero, errors.New("fanout: Gather: nil Aggregator")
	}
	cfg := newConfig(opts)
	if _, err := validate(cfg, tasks); err != nil {
		return zero, err
	}
	if c, ok := agg.(interface{ check(tasks int) error }); ok {
		if err := c.check(len(tasks)); err != nil {
			return zero, err
		}
	}
	if b, ok := agg.(interface{ Begin([]Task[T]) }); ok {
		if err := guard(func() { b.Begin(tasks) }); err != nil {
			return zero, err
		}
	}
	if len(tasks) == 0 {
		return result(ctx, agg)
	}
	r := newRun(ctx, cfg, taskSource(tasks, cfg), len(tasks))
	defer r.end()
	// Add runs on the worker that finished the task, before it claims
	// another, so a decision is made before the next task can start.
	r.fold = agg.Add
	r.runWorkers()
	if err := r.fatalErr(); err != nil {
		return zero, err
	}
	// What agg.Result spends (a judging LLM call) counts in the run's
	// total and budget.
	return result(context.WithValue(ctx, scopeKey{}, newScope(ctx, nil, r.spend)), agg)
}

// result calls agg.Result, turning a panic or Goexit into its error.
func result[T, R any](ctx context.Context, agg Aggregator[T, R]) (res R, err error) {
	if perr := guard(func() { res, err = agg.Result(ctx) }); perr != nil {
		var zero R
		return zero, perr
	}
	return res, err
}

// GatherSeq is [Gather] over a lazy source of tasks, pulled as [StreamSeq]
// pulls them, in memory bounded by the limit (it needs [WithLimit] or
// [WithSemaphore]). The aggregator is not shown the tasks beforehand, so
// Vote decides only at the end, and Quorum(k) fails once every key has
// ended without k successes. A source that panics or calls runtime.Goexit
// stops the run, and GatherSeq returns the panic as a [*PanicError] (or
// [ErrGoexit]) once every task has ended.
func GatherSeq[T, R any](ctx context.Context, tasks iter.Seq[Task[T]], agg Aggregator[T, R], opts ...Option) (R, error) {
	var zero R
	cfg := newConfig(opts)
	if err := checkSeq("GatherSeq", cfg, tasks != nil, agg != nil); err != nil {
		return zero, err
	}
	if c, ok := agg.(interface{ check(tasks int) error }); ok {
		if err := c.check(-1); err != nil {
			return zero, err
		}
	}
	src := lazySource(tasks)
	r := newRun(ctx, cfg, src, -1)
	defer r.end()
	src.start(max(r.workerCount(), 1), r.pulling, r.fail)
	r.fold = agg.Add
	r.runWorkers()
	src.close()
	if err := r.fatalErr(); err != nil {
		return zero, err
	}
	return result(context.WithValue(ctx, scopeKey{}, newScope(ctx, nil, r.spend)), agg)
}

// checkSeq refuses bad options, a nil source or aggregator, and a lazy
// source without a bound on memory.
func checkSeq(name string, cfg *config, haveSource, haveAgg bool) error {
	switch {
	case len(cfg.errs) > 0:
		return cfg.errs[0]
	case !haveSource:
		return fmt.Errorf("fanout: %s: nil task source", name)
	case !haveAgg:
		return fmt.Errorf("fanout: %s: nil Aggregator", name)
	case cfg.limit == 0 && cfg.sem == nil:
		return fmt.Errorf("fanout: %s needs WithLimit or WithSemaphore to bound memory", name)
	}
	return nil
}

// Call runs fn once under the policy opts set — retries, the attempt's
// deadline, rate limits, a semaphore, hedging, the budget, an observer —
// as the single task of a [Run] would, and returns its value and error
// (the key's error, not wrapped in a *TaskError). It is the piece to use
// inside a task whose own children fan out, where WithRetry or
// WithTaskTimeout on the outer run would cover the children too; given the
// semaphore its task holds, Call borrows the task's slot.
func Call[T any](ctx context.Context, fn func(ctx context.Context) (T, error), opts ...Option) (T, error) {
	var zero T
	if fn == nil {
		return zero, errors.New("fanout: Call: nil function")
	}
	rs, err := Run(ctx, []Task[T]{{Key: "call", Do: fn}}, opts...)
	if rs == nil {
		return zero, err
	}
	r := rs.list[0]
	return r.Value, r.Err
}

// NewTask returns a Task with key and do, its type inferred from do: for
// building a slice of tasks without repeating the type in every literal.
func NewTask[T any](key string, do func(ctx context.Context) (T, error)) Task[T] {
	return Task[T]{Key: key, Do: do}
}

// MapBy is [Map] keyed by key(input) instead of the input's index. Two
// inputs with the same key are refused before any call, as in Run.
func MapBy[In, T any](ctx context.Context, inputs []In, key func(In) string, fn func(context.Context, In) (T, error), opts ...Option) (*Results[T], error) {
	if key == nil || fn == nil {
		return nil, errors.New("fanout: MapBy: nil function")
	}
	tasks := make([]Task[T], len(inputs))
	for i, in := range inputs {
		tasks[i] = Task[T]{Key: key(in), Do: func(ctx context.Context) (T, error) { return fn(ctx, in) }}
	}
	return Run(ctx, tasks, opts...)
}

// guard calls f and returns its panic as a *PanicError, or ErrGoexit if it
// called runtime.Goexit, which guard cannot stop but runs f on a goroutine
// of its own to survive.
func guard(f func()) (err error) {
	var wg sync.WaitGroup
	wg.Go(func() {
		err = ErrGoexit
		defer func() {
			if p := recover(); p != nil {
				err = newPanicError(p)
			}
		}()
		f()
		err = nil
	})
	wg.Wait()
	return err
}

func validateOptions(cfg *config) error {
	if len(cfg.errs) > 0 {
		return cfg.errs[0]
	}
	return nil
}

// validate checks options and tasks, and returns the key index.
func validate[T any](cfg *config, tasks []Task[T]) (map[string]int, error) {
	if err := validateOptions(cfg); err != nil {
		return nil, err
	}
	index := make(map[string]int, len(tasks))
	for i, t := range tasks {
		if err := validateTask(cfg, i, t); err != nil {
			return nil, err
		}
		// One map operation per key: a duplicate leaves the map short.
		index[t.Key] = i
		if len(index) != i+1 {
			j := slices.IndexFunc(tasks, func(u Task[T]) bool { return u.Key == t.Key })
			return nil, fmt.Errorf("%w %q (tasks %d and %d)", ErrDuplicateKey, t.Key, j, i)
		}
	}
	return index, nil
}

func validateTask[T any](c *config, i int, t Task[T]) error {
	switch {
	case t.Key == "":
		return fmt.Errorf("fanout: task %d: empty Key", i)
	case t.Do == nil:
		return fmt.Errorf("fanout: task %q: nil Do", t.Key)
	case t.Weight < 0:
		return fmt.Errorf("fanout: task %q: negative Weight %v", t.Key, t.Weight)
	case math.IsNaN(t.Weight) || math.IsInf(t.Weight, 1):
		return fmt.Errorf("fanout: task %q: Weight %v is not a finite number", t.Key, t.Weight)
	case t.Tokens < 0:
		return fmt.Errorf("fanout: task %q: negative Tokens %d", t.Key, t.Tokens)
	}
	return c.checkCharges(t.Key, t.Resource, t.Tokens)
}
