// Package fanoutotel reports fanout runs to OpenTelemetry: a span per run,
// a child span per attempt, and metrics on tasks, attempts, rate-limiter
// waits, retries and hedges.
//
// It lives in its own module so that the core fanout module does not depend
// on OpenTelemetry. Pass the Observer it builds to a run:
//
//	obs := fanoutotel.Observer() // global providers
//	res, err := fanout.Run(ctx, tasks, fanout.WithObserver(obs))
//
// The attempt's span is in the context the task's Do receives, so the
// spans of the HTTP client, database driver or nested fan-out that Do starts
// are its children, and a nested run's span hangs under the attempt that
// started it.
//
// # Spans
//
// "fanout.run" covers a run, from before its first task to after its last.
// It carries fanout.tasks at start, and the run's totals at the end
// (fanout.succeeded, fanout.failed, fanout.skipped, fanout.attempts,
// fanout.hedges); its status is Error when some key failed, not counting
// the keys skipped or cancelled because the run stopped early.
// Retries and hedges are events on it, since they happen between attempts:
// "fanout.retry" with fanout.key, fanout.attempt (the one that failed),
// fanout.wait (seconds), fanout.server_directed (the wait came from the
// error's RetryAfter) and exception.message; "fanout.hedge" with fanout.key,
// fanout.attempt and fanout.after (seconds the attempt had run).
//
// "fanout.attempt" covers one call of a task's Do, hedged copies included.
// Its attributes are fanout.key, fanout.attempt (1 for the first try),
// fanout.hedge, fanout.limiter_wait (seconds spent on the rate limiters just
// before the call) and fanout.outcome: "ok", "error", or "cancelled" for an
// attempt whose context ended before it did (a hedge that lost the race, an
// aggregator that decided, fail-fast, the run's timeout, the caller's
// cancellation). A failed attempt, one past its WithTaskTimeout deadline
// included, has its error recorded and status Error; a cancelled one has
// its cause recorded and no Error status, since the failure, if any, is
// reported where it happened. A Do that calls runtime.Goexit never
// returns, yet its span is ended too, as an error ([fanout.ErrGoexit]),
// once its key is done (a hedged copy's, once the run is), and it leaves
// fanout.attempts.in_flight.
//
// # Metrics
//
//   - fanout.tasks (counter, {task}): keys done, by fanout.outcome "ok",
//     "error" (a key refused by a guard, or a bad task of a lazy source,
//     included), "skipped" (never started because the run had stopped) or
//     "cancelled" (stopped by an aggregator that had decided, or by a
//     Stream's consumer, with cause [fanout.ErrStopped]).
//   - fanout.attempt.duration (histogram, s): each call of Do, by
//     fanout.outcome and fanout.hedge.
//   - fanout.attempts.in_flight (up-down counter, {attempt}): calls of Do
//     running right now.
//   - fanout.limiter.wait (histogram, s): each wait on the rate limiters.
//   - fanout.retries (counter, {retry}): retries about to wait.
//   - fanout.hedges (counter, {hedge}): hedged copies started.
//
// Keys are never metric attributes, since there may be millions of them;
// they are on the spans. [WithAttributes] adds attributes of your own (the
// name of the fan-out, say) to the run span and to every data point.
//
// An Observer is safe for concurrent use, and one Observer may watch any
// number of runs at once, nested ones included; a run may be given several
// Observers of this package (one per backend, say), and each traces it in
// full.
package fanoutotel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/gofanout/fanout"
)

// ScopeName is the instrumentation scope of the tracer and meter.
const ScopeName = "github.com/gofanout/fanout/otel"

// Attribute keys of the spans and metrics.
const (
	KeyTasks          = attribute.Key("fanout.tasks")
	KeyKey            = attribute.Key("fanout.key")
	KeyAttempt        = attribute.Key("fanout.attempt")
	KeyHedge          = attribute.Key("fanout.hedge")
	KeyLimiterWait    = attribute.Key("fanout.limiter_wait")
	KeyOutcome        = attribute.Key("fanout.outcome")
	KeyName           = attribute.Key("fanout.name") // an AdaptiveLimiter's or CircuitBreaker's
	KeyWait           = attribute.Key("fanout.wait")
	KeyAfter          = attribute.Key("fanout.after")
	KeyServerDirected = attribute.Key("fanout.server_directed") // a retry's wait came from the error's RetryAfter
	KeySucceeded      = attribute.Key("fanout.succeeded")
	KeyFailed         = attribute.Key("fanout.failed")
	KeySkipped        = attribute.Key("fanout.skipped")
	KeyAttempts       = attribute.Key("fanout.attempts")
	KeyHedges         = attribute.Key("fanout.hedges")
)

// Outcomes, the values of [KeyOutcome].
const (
	OutcomeOK        = "ok"
	OutcomeError     = "error"
	OutcomeSkipped   = "skipped"
	OutcomeCancelled = "cancelled"
)

// An Option configures [Observer].
type Option func(*config)

type config struct {
	tp    trace.TracerProvider
	mp    metric.MeterProvider
	attrs []attribute.KeyValue
}

// WithTracerProvider sets the provider of the tracer; the default is the
// global one, otel.GetTracerProvider.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets the provider of the meter; the default is the
// global one, otel.GetMeterProvider.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithAttributes adds attrs to the run span and to every metric data point,
// to tell one fan-out from another. Keep them of low cardinality.
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return func(c *config) { c.attrs = append(c.attrs, attrs...) }
}

// Observer returns a [fanout.Observer] that traces and measures the runs it
// is given to. It panics if an instrument cannot be created, which only a
// broken MeterProvider does.
func Observer(opts ...Option) *fanout.Observer {
	c := config{}
	for _, o := range opts {
		o(&c)
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	o, err := newObserver(c)
	if err != nil {
		panic("fanoutotel: " + err.Error())
	}
	return o.hooks()
}

type observer struct {
	tracer trace.Tracer
	attrs  []attribute.KeyValue
	set    metric.MeasurementOption // attrs as a metric option

	tasks       metric.Int64Counter
	duration    metric.Float64Histogram
	inFlight    metric.Int64UpDownCounter
	limiterWait metric.Float64Histogram
	retries     metric.Int64Counter
	hedges      metric.Int64Counter
	limit       metric.Int64Gauge
	breaker     metric.Int64Gauge
}

func newObserver(c config) (*observer, error) {
	m := c.mp.Meter(ScopeName)
	o := &observer{
		tracer: c.tp.Tracer(ScopeName),
		attrs:  c.attrs,
		set:    metric.WithAttributeSet(attribute.NewSet(c.attrs...)),
	}
	var errs [8]error
	o.tasks, errs[0] = m.Int64Counter("fanout.tasks", metric.WithUnit("{task}"),
		metric.WithDescription("Keys done, by outcome: ok, error, skipped (never started), "+
			"or cancelled (stopped by an aggregator that had decided or by a Stream's consumer)."))
	o.duration, errs[1] = m.Float64Histogram("fanout.attempt.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of each call of a task's Do."))
	o.inFlight, errs[2] = m.Int64UpDownCounter("fanout.attempts.in_flight", metric.WithUnit("{attempt}"),
		metric.WithDescription("Calls of a task's Do running now."))
	o.limiterWait, errs[3] = m.Float64Histogram("fanout.limiter.wait", metric.WithUnit("s"),
		metric.WithDescription("Time spent waiting on the rate limiters before an attempt."))
	o.retries, errs[4] = m.Int64Counter("fanout.retries", metric.WithUnit("{retry}"),
		metric.WithDescription("Failed attempts about to be retried."))
	o.hedges, errs[5] = m.Int64Counter("fanout.hedges", metric.WithUnit("{hedge}"),
		metric.WithDescription("Hedged copies of slow attempts started."))
	o.limit, errs[6] = m.Int64Gauge("fanout.adaptive.limit", metric.WithUnit("{attempt}"),
		metric.WithDescription("The concurrency an AdaptiveLimiter has learned, by its name."))
	o.breaker, errs[7] = m.Int64Gauge("fanout.breaker.state",
		metric.WithDescription("A CircuitBreaker's state, by its name: 0 closed, 1 open, 2 half-open."))
	return o, errors.Join(errs[:]...)
}

// runKey and attemptKey hold an observer's state in the contexts the run
// hands back to the hooks, so that another observer's spans in between
// cannot be mistaken for ours: not even those of another Observer of this
// package watching the same run, which is why each key names its observer.
type (
	runKey     struct{ o *observer }
	attemptKey struct{ o *observer }
)

// runState is one run's span, what it counts, and its attempts under way.
type runState struct {
	span   trace.Span
	failed atomic.Int64 // keys with outcome "error"
	mu     sync.Mutex
	open   map[*attempt]struct{}
}

// attempt is one call of Do under way. A Do that calls runtime.Goexit never
// returns, so no AttemptDone ends its span: the key's TaskDone does, or
// else RunDone.
type attempt struct {
	span  trace.Span
	key   string
	hedge bool
	start time.Time
}

func (s *runState) started(a *attempt) {
	s.mu.Lock()
	s.open[a] = struct{}{}
	s.mu.Unlock()
}

// done reports whether a was still under way, and is no longer.
func (s *runState) done(a *attempt) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.open[a]
	delete(s.open, a)
	return ok
}

// abandon takes the attempts of key still under way, or all of them if
// all is set.
func (s *runState) abandon(key string, all bool) []*attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*attempt
	for a := range s.open {
		if all || a.key == key {
			out = append(out, a)
			delete(s.open, a)
		}
	}
	return out
}

func (o *observer) stateOf(ctx context.Context) *runState {
	s, _ := ctx.Value(runKey{o}).(*runState)
	return s
}

func (o *observer) hooks() *fanout.Observer {
	return &fanout.Observer{
		RunStart:     o.runStart,
		AttemptStart: o.attemptStart,
		AttemptDone:  o.attemptDone,
		Retry:        o.retry,
		Hedge:        o.hedge,
		LimiterWait:  o.waited,
		TaskDone:     o.taskDone,
		RunDone:      o.runDone,
		Limit:        o.limitChanged,
		Breaker:      o.breakerChanged,
	}
}

// limitChanged records an AdaptiveLimiter's limit; give the limiter this
// Observer in its config.
func (o *observer) limitChanged(ctx context.Context, l fanout.LimitInfo) {
	o.limit.Record(ctx, int64(l.Limit), o.set, metric.WithAttributes(KeyName.String(l.Name)))
}

// breakerChanged records a CircuitBreaker's state; give the breaker this
// Observer in its config.
func (o *observer) breakerChanged(ctx context.Context, b fanout.BreakerInfo) {
	o.breaker.Record(ctx, int64(b.To), o.set, metric.WithAttributes(KeyName.String(b.Name)))
}

func (o *observer) runStart(ctx context.Context, tasks int) context.Context {
	attrs := append([]attribute.KeyValue{KeyTasks.Int(tasks)}, o.attrs...)
	ctx, span := o.tracer.Start(ctx, "fanout.run", trace.WithAttributes(attrs...))
	return context.WithValue(ctx, runKey{o}, &runState{span: span, open: map[*attempt]struct{}{}})
}

func (o *observer) runDone(ctx context.Context, s fanout.RunSummary) {
	st := o.stateOf(ctx)
	if st == nil {
		return
	}
	o.endAbandoned(ctx, st.abandon("", true), fanout.ErrGoexit)
	st.span.SetAttributes(KeySucceeded.Int(s.Succeeded), KeyFailed.Int(s.Failed), KeySkipped.Int(s.Skipped),
		KeyAttempts.Int(s.Attempts), KeyHedges.Int(s.Hedges))
	if failed := st.failed.Load(); failed > 0 {
		st.span.SetStatus(codes.Error, fmt.Sprintf("%d of %d keys failed", failed, s.Tasks))
	}
	st.span.End()
}

func (o *observer) attemptStart(ctx context.Context, a fanout.AttemptInfo) context.Context {
	// The attempt's own wait, not one looked up by key: a lazy source's
	// keys need not be unique.
	ctx, span := o.tracer.Start(ctx, "fanout.attempt", trace.WithAttributes(KeyKey.String(a.Key),
		KeyAttempt.Int(a.Attempt), KeyHedge.Bool(a.Hedge), KeyLimiterWait.Float64(a.LimiterWait.Seconds())))
	o.inFlight.Add(ctx, 1, o.set)
	if a.Hedge {
		// Counted here, not in the Hedge hook: a copy may yet be refused
		// by the limiters or the budget, or called off while it waits.
		o.hedges.Add(ctx, 1, o.set)
	}
	at := &attempt{span: span, key: a.Key, hedge: a.Hedge, start: time.Now()}
	if st := o.stateOf(ctx); st != nil {
		st.started(at)
	}
	return context.WithValue(ctx, attemptKey{o}, at)
}

func (o *observer) attemptDone(ctx context.Context, a fanout.AttemptInfo) {
	at, ok := ctx.Value(attemptKey{o}).(*attempt)
	if st := o.stateOf(ctx); ok && st != nil && !st.done(at) {
		return // ended as abandoned already
	}
	outcome := attemptOutcome(ctx, a.Err)
	o.attemptEnded(ctx, a.Hedge, a.Elapsed, outcome)
	if !ok {
		return
	}
	at.span.SetAttributes(KeyOutcome.String(outcome))
	switch outcome {
	case OutcomeError:
		at.span.RecordError(a.Err)
		at.span.SetStatus(codes.Error, a.Err.Error())
	case OutcomeCancelled:
		// The reason it was called off, which Do's own error (an
		// "aborted" of its making) need not name.
		at.span.RecordError(context.Cause(ctx))
	}
	at.span.End()
}

func (o *observer) attemptEnded(ctx context.Context, hedge bool, elapsed time.Duration, outcome string) {
	o.inFlight.Add(ctx, -1, o.set)
	o.duration.Record(ctx, elapsed.Seconds(), o.set,
		metric.WithAttributes(KeyOutcome.String(outcome), KeyHedge.Bool(hedge)))
}

// endAbandoned ends the spans of attempts whose Do never returned, as
// failed with err.
func (o *observer) endAbandoned(ctx context.Context, abandoned []*attempt, err error) {
	for _, at := range abandoned {
		o.attemptEnded(ctx, at.hedge, time.Since(at.start), OutcomeError)
		at.span.SetAttributes(KeyOutcome.String(OutcomeError))
		at.span.RecordError(err)
		at.span.SetStatus(codes.Error, err.Error())
		at.span.End()
	}
}

// attemptOutcome tells an attempt that failed on its own from one the run
// called off: ctx, the attempt's context without its per-attempt deadline,
// ends only when the run, a won hedge race or an aggregator stops it.
func attemptOutcome(ctx context.Context, err error) string {
	switch {
	case err == nil:
		return OutcomeOK
	case ctx.Err() != nil && !errors.Is(err, fanout.ErrTaskTimeout):
		return OutcomeCancelled
	default:
		return OutcomeError
	}
}

func (o *observer) waited(ctx context.Context, w fanout.WaitInfo) {
	o.limiterWait.Record(ctx, w.Wait.Seconds(), o.set)
}

func (o *observer) retry(ctx context.Context, r fanout.RetryInfo) {
	o.retries.Add(ctx, 1, o.set)
	if st := o.stateOf(ctx); st != nil {
		attrs := []attribute.KeyValue{KeyKey.String(r.Key), KeyAttempt.Int(r.Attempt), KeyWait.Float64(r.Wait.Seconds()),
			KeyServerDirected.Bool(r.ServerDirected)}
		if r.Err != nil {
			attrs = append(attrs, attribute.String("exception.message", r.Err.Error()))
		}
		st.span.AddEvent("fanout.retry", trace.WithAttributes(attrs...))
	}
}

func (o *observer) hedge(ctx context.Context, h fanout.HedgeInfo) {
	if st := o.stateOf(ctx); st != nil {
		st.span.AddEvent("fanout.hedge", trace.WithAttributes(
			KeyKey.String(h.Key), KeyAttempt.Int(h.Attempt), KeyAfter.Float64(h.After.Seconds())))
	}
}

func (o *observer) taskDone(ctx context.Context, t fanout.TaskInfo) {
	outcome := taskOutcome(ctx, t)
	st := o.stateOf(ctx)
	if st != nil && outcome == OutcomeError {
		st.failed.Add(1)
	}
	if st != nil && errors.Is(t.Err, fanout.ErrGoexit) {
		// Not for every key: a lazy source may repeat a key, and the
		// other task's attempt may still be under way. An abandoned
		// hedged copy of a key that did not fail waits for RunDone.
		o.endAbandoned(ctx, st.abandon(t.Key, false), t.Err)
	}
	o.tasks.Add(ctx, 1, o.set, metric.WithAttributes(KeyOutcome.String(outcome)))
}

// taskOutcome is "skipped" for a key that never started because the run
// had stopped, "cancelled" for one an aggregator or a Stream's consumer
// stopped, "error" for any other failure, one that never started for a
// reason of its own (a breaker's refusal, a bad task) included.
func taskOutcome(ctx context.Context, t fanout.TaskInfo) string {
	switch {
	case t.Err == nil:
		return OutcomeOK
	case errors.Is(t.Err, fanout.ErrSkipped),
		t.Attempts == 0 && ctx.Err() != nil && errors.Is(t.Err, context.Cause(ctx)): // stopped in a limiter wait
		return OutcomeSkipped
	case errors.Is(t.Err, fanout.ErrStopped):
		return OutcomeCancelled
	default:
		return OutcomeError
	}
}
