package fanoutotel_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
	fanoutotel "github.com/gofanout/fanout/otel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// telemetry is a tracer and meter provider writing to memory.
type telemetry struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
	obs    *fanout.Observer
}

func newTelemetry(opts ...fanoutotel.Option) *telemetry {
	t := &telemetry{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	t.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(t.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(t.reader))
	opts = append([]fanoutotel.Option{fanoutotel.WithTracerProvider(t.tp), fanoutotel.WithMeterProvider(mp)}, opts...)
	t.obs = fanoutotel.Observer(opts...)
	return t
}

func (t *telemetry) named(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range t.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// attempt returns the span of the given attempt of key.
func (t *telemetry) attempt(tb testing.TB, key string, n int, hedge bool) sdktrace.ReadOnlySpan {
	tb.Helper()
	for _, s := range t.named("fanout.attempt") {
		a := attrs(s.Attributes())
		if a["fanout.key"] == attribute.StringValue(key) && a["fanout.attempt"] == attribute.IntValue(n) &&
			a["fanout.hedge"] == attribute.BoolValue(hedge) {
			return s
		}
	}
	tb.Fatalf("no span for attempt %d of %q (hedge %v)", n, key, hedge)
	return nil
}

func (t *telemetry) metrics(tb testing.TB) map[string]metricdata.Aggregation {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(tb, t.reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		require.Equal(tb, fanoutotel.ScopeName, sm.Scope.Name)
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

func attrs(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// sums maps each data point of an int64 sum, by the value of key, to its
// value.
func sums(tb testing.TB, agg metricdata.Aggregation, key attribute.Key) map[string]int64 {
	tb.Helper()
	s, ok := agg.(metricdata.Sum[int64])
	require.True(tb, ok, "want an int64 sum, got %T", agg)
	out := map[string]int64{}
	for _, dp := range s.DataPoints {
		v, _ := dp.Attributes.Value(key)
		out[v.String()] += dp.Value
	}
	return out
}

// histogram maps each data point of a float64 histogram, by the value of
// key, to its count and sum.
func histogram(tb testing.TB, agg metricdata.Aggregation, key attribute.Key) (count map[string]uint64, sum map[string]float64) {
	tb.Helper()
	h, ok := agg.(metricdata.Histogram[float64])
	require.True(tb, ok, "want a float64 histogram, got %T", agg)
	count, sum = map[string]uint64{}, map[string]float64{}
	for _, dp := range h.DataPoints {
		v, _ := dp.Attributes.Value(key)
		count[v.String()] += dp.Count
		sum[v.String()] += dp.Sum
	}
	return count, sum
}

var (
	errBad   = errors.New("bad input")
	errFlaky = errors.New("flaky backend")
)

// TestRun runs, one at a time: a success, a key that fails once and
// succeeds on retry, a key that fails for good and stops the run, and a
// key skipped because of it. A rate limiter of one token a second spaces
// the attempts; each call takes 10 ms of fake time.
func TestRun(t *testing.T) {
	tel := newTelemetry(fanoutotel.WithAttributes(attribute.String("fanout.name", "test")))
	var doParent trace.SpanContext // the parent of a span started inside Do
	synctest.Test(t, func(t *testing.T) {
		flakyCalls := 0
		work := func(err error) func(ctx context.Context) (string, error) {
			return func(ctx context.Context) (string, error) {
				time.Sleep(10 * time.Millisecond)
				return "done", err
			}
		}
		tasks := []fanout.Task[string]{
			{Key: "ok", Do: func(ctx context.Context) (string, error) {
				_, span := tel.tp.Tracer("app").Start(ctx, "inside do")
				doParent = trace.SpanContextFromContext(ctx)
				span.End()
				return work(nil)(ctx)
			}},
			{Key: "flaky", Do: func(ctx context.Context) (string, error) {
				flakyCalls++
				if flakyCalls == 1 {
					return work(errFlaky)(ctx)
				}
				return work(nil)(ctx)
			}},
			{Key: "bad", Do: work(errBad)},
			{Key: "skipped", Do: work(nil)},
		}
		res, err := fanout.Run(t.Context(), tasks,
			fanout.WithLimit(1), fanout.WithFailFast(),
			fanout.WithRateLimit(rate.NewLimiter(rate.Every(time.Second), 1)),
			fanout.WithRetry(fanout.RetryPolicy{InitialInterval: 100 * time.Millisecond, Jitter: -1,
				RetryIf: func(err error) bool { return errors.Is(err, errFlaky) }}),
			fanout.WithObserver(tel.obs))
		require.ErrorIs(t, err, errBad)
		require.ErrorIs(t, res.Errs()["skipped"], fanout.ErrSkipped)
	})

	t.Run("a run span", func(t *testing.T) {
		runs := tel.named("fanout.run")
		require.Len(t, runs, 1)
		run := runs[0]
		assert.False(t, run.Parent().IsValid(), "the run span is a root")
		assert.Equal(t, codes.Error, run.Status().Code)
		assert.Equal(t, "1 of 4 keys failed", run.Status().Description)
		a := attrs(run.Attributes())
		assert.Equal(t, attribute.IntValue(4), a["fanout.tasks"])
		assert.Equal(t, attribute.StringValue("test"), a["fanout.name"])
		assert.Equal(t, attribute.IntValue(2), a["fanout.succeeded"])
		assert.Equal(t, attribute.IntValue(1), a["fanout.failed"])
		assert.Equal(t, attribute.IntValue(1), a["fanout.skipped"])
		assert.Equal(t, attribute.IntValue(4), a["fanout.attempts"])
		require.Len(t, run.Events(), 1)
		ev := run.Events()[0]
		assert.Equal(t, "fanout.retry", ev.Name)
		ea := attrs(ev.Attributes)
		assert.Equal(t, attribute.StringValue("flaky"), ea["fanout.key"])
		assert.Equal(t, attribute.IntValue(1), ea["fanout.attempt"])
		assert.Equal(t, attribute.Float64Value(0.1), ea["fanout.wait"])
		assert.Equal(t, attribute.StringValue("flaky backend"), ea["exception.message"])
	})

	t.Run("an attempt span per call of Do, child of the run span", func(t *testing.T) {
		run := tel.named("fanout.run")[0]
		attempts := tel.named("fanout.attempt")
		require.Len(t, attempts, 4, "ok, flaky twice, bad; the skipped key makes none")
		for _, s := range attempts {
			assert.Equal(t, run.SpanContext().SpanID(), s.Parent().SpanID())
			assert.Equal(t, run.SpanContext().TraceID(), s.SpanContext().TraceID())
			assert.Equal(t, 10*time.Millisecond, s.EndTime().Sub(s.StartTime()))
		}
		tests := []struct {
			key         string
			attempt     int
			wantWait    float64
			wantOutcome string
			wantErr     string
		}{
			{key: "ok", attempt: 1, wantWait: 0, wantOutcome: "ok"},
			// 1 s after the first token, at 1.01 s.
			{key: "flaky", attempt: 1, wantWait: 0.99, wantOutcome: "error", wantErr: "flaky backend"},
			// Retried after 100 ms, at 1.11 s; the next token is at 2 s.
			{key: "flaky", attempt: 2, wantWait: 0.89, wantOutcome: "ok"},
			{key: "bad", attempt: 1, wantWait: 0.99, wantOutcome: "error", wantErr: "bad input"},
		}
		for _, tt := range tests {
			s := tel.attempt(t, tt.key, tt.attempt, false)
			a := attrs(s.Attributes())
			assert.InDelta(t, tt.wantWait, a["fanout.limiter_wait"].AsFloat64(), 1e-6, "%s %d", tt.key, tt.attempt)
			assert.Equal(t, tt.wantOutcome, a["fanout.outcome"].AsString(), "%s %d", tt.key, tt.attempt)
			if tt.wantErr == "" {
				assert.Equal(t, codes.Unset, s.Status().Code)
				assert.Empty(t, s.Events())
				continue
			}
			assert.Equal(t, codes.Error, s.Status().Code)
			assert.Equal(t, tt.wantErr, s.Status().Description)
			require.Len(t, s.Events(), 1)
			assert.Equal(t, "exception", s.Events()[0].Name)
			assert.Equal(t, attribute.StringValue(tt.wantErr), attrs(s.Events()[0].Attributes)["exception.message"])
		}
	})

	t.Run("the attempt span is the parent of what Do starts", func(t *testing.T) {
		ok := tel.attempt(t, "ok", 1, false)
		assert.Equal(t, ok.SpanContext().SpanID(), doParent.SpanID())
		inner := tel.named("inside do")
		require.Len(t, inner, 1)
		assert.Equal(t, ok.SpanContext().SpanID(), inner[0].Parent().SpanID())
	})

	t.Run("metrics", func(t *testing.T) {
		m := tel.metrics(t)
		assert.Equal(t, map[string]int64{"ok": 2, "error": 1, "skipped": 1},
			sums(t, m["fanout.tasks"], "fanout.outcome"))
		assert.Equal(t, map[string]int64{"test": 1}, sums(t, m["fanout.retries"], "fanout.name"))
		assert.Equal(t, map[string]int64{"test": 0}, sums(t, m["fanout.attempts.in_flight"], "fanout.name"))
		assert.NotContains(t, m, "fanout.hedges", "no hedge, no data point")

		count, sum := histogram(t, m["fanout.attempt.duration"], "fanout.outcome")
		assert.Equal(t, map[string]uint64{"ok": 2, "error": 2}, count)
		assert.InDelta(t, 0.02, sum["ok"], 1e-6)
		assert.InDelta(t, 0.02, sum["error"], 1e-6)

		count, sum = histogram(t, m["fanout.limiter.wait"], "fanout.name")
		assert.Equal(t, map[string]uint64{"test": 4}, count)
		assert.InDelta(t, 0.99+0.89+0.99, sum["test"], 1e-6)
	})
}

// TestHedge hedges a slow call: the copy wins, and the original is
// cancelled, which is no error. Each copy has its own limiter wait.
func TestHedge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		var calls atomic.Int32
		slowThenFast := func(ctx context.Context) (int, error) {
			n := calls.Add(1)
			d := 10 * time.Millisecond
			if n == 1 {
				d = time.Second
			}
			select {
			case <-time.After(d):
				return int(n), nil
			case <-ctx.Done():
				return 0, context.Cause(ctx)
			}
		}
		tasks := []fanout.Task[int]{{Key: "slow", Do: slowThenFast}}
		// A token every 100 ms: the copy, started at 50 ms, waits 50 ms
		// for its own, then wins at 110 ms.
		res, err := fanout.Run(t.Context(), tasks, fanout.WithObserver(tel.obs),
			fanout.WithRateLimit(rate.NewLimiter(rate.Every(100*time.Millisecond), 1)),
			fanout.WithHedge(fanout.HedgePolicy{Delay: 50 * time.Millisecond, MaxExtra: 1}))
		require.NoError(t, err)
		got, _ := res.Get("slow")
		assert.Equal(t, 2, got.Attempts)
		assert.Equal(t, 1, got.Hedges)

		first := tel.attempt(t, "slow", 1, false)
		assert.Equal(t, "cancelled", attrs(first.Attributes())["fanout.outcome"].AsString())
		assert.Equal(t, codes.Unset, first.Status().Code, "losing a hedge race is no failure")
		assert.Equal(t, 110*time.Millisecond, first.EndTime().Sub(first.StartTime()))
		assert.InDelta(t, 0, attrs(first.Attributes())["fanout.limiter_wait"].AsFloat64(), 1e-6)
		hedge := tel.attempt(t, "slow", 1, true)
		assert.Equal(t, "ok", attrs(hedge.Attributes())["fanout.outcome"].AsString())
		assert.InDelta(t, 0.05, attrs(hedge.Attributes())["fanout.limiter_wait"].AsFloat64(), 1e-6)

		run := tel.named("fanout.run")[0]
		assert.Equal(t, codes.Unset, run.Status().Code)
		require.Len(t, run.Events(), 1)
		assert.Equal(t, "fanout.hedge", run.Events()[0].Name)
		assert.Equal(t, attribute.Float64Value(0.05), attrs(run.Events()[0].Attributes)["fanout.after"])

		m := tel.metrics(t)
		assert.Equal(t, map[string]int64{"": 1}, sums(t, m["fanout.hedges"], "fanout.name"))
		count, _ := histogram(t, m["fanout.attempt.duration"], "fanout.outcome")
		assert.Equal(t, map[string]uint64{"ok": 1, "cancelled": 1}, count)
	})
}

// TestInFlight reads the in-flight gauge while a run is under way: two
// workers for three keys of a second each, so two calls of Do are running
// for the first second, one (the third key) for the next, none at the end.
func TestInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		inFlight := func() int64 {
			return sums(t, tel.metrics(t)["fanout.attempts.in_flight"], "fanout.name")[""]
		}
		second := func(ctx context.Context) (int, error) {
			time.Sleep(time.Second)
			return 1, nil
		}
		tasks := []fanout.Task[int]{{Key: "a", Do: second}, {Key: "b", Do: second}, {Key: "c", Do: second}}
		done := make(chan error)
		go func() {
			_, err := fanout.Run(t.Context(), tasks, fanout.WithLimit(2), fanout.WithObserver(tel.obs))
			done <- err
		}()

		synctest.Wait() // a and b are asleep in Do
		assert.Equal(t, int64(2), inFlight(), "at 0 s")
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait() // a and b are done; c is asleep in Do
		assert.Equal(t, int64(1), inFlight(), "at 1.5 s")
		require.NoError(t, <-done)
		assert.Equal(t, int64(0), inFlight(), "at the end")
	})
}

// TestNested checks that a run started inside a task hangs under the
// attempt that started it, and that a vote's early stop cancels, rather
// than fails, the attempts still running.
func TestNested(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		sample := func(answer string, d time.Duration) func(ctx context.Context) (string, error) {
			return func(ctx context.Context) (string, error) {
				select {
				case <-time.After(d):
					return answer, nil
				case <-ctx.Done():
					return "", context.Cause(ctx)
				}
			}
		}
		outer := []fanout.Task[string]{{Key: "text-1", Do: func(ctx context.Context) (string, error) {
			votes := []fanout.Task[string]{
				{Key: "s1", Do: sample("yes", 10*time.Millisecond)},
				{Key: "s2", Do: sample("yes", 20*time.Millisecond)},
				{Key: "s3", Do: sample("no", time.Second)},
			}
			tally, err := fanout.Gather(ctx, votes, fanout.Vote(func(s string) string { return s }),
				fanout.WithObserver(tel.obs))
			return tally.Winner, err
		}}}
		res, err := fanout.Run(t.Context(), outer, fanout.WithObserver(tel.obs))
		require.NoError(t, err)
		v, _ := res.Value("text-1")
		assert.Equal(t, "yes", v)

		runs := tel.named("fanout.run")
		require.Len(t, runs, 2)
		outerAttempt := tel.attempt(t, "text-1", 1, false)
		var inner sdktrace.ReadOnlySpan
		for _, r := range runs {
			if r.Parent().IsValid() {
				inner = r
			}
		}
		require.NotNil(t, inner)
		assert.Equal(t, outerAttempt.SpanContext().SpanID(), inner.Parent().SpanID())
		assert.Equal(t, codes.Unset, inner.Status().Code)
		s3 := tel.attempt(t, "s3", 1, false)
		assert.Equal(t, inner.SpanContext().SpanID(), s3.Parent().SpanID())
		assert.Equal(t, "cancelled", attrs(s3.Attributes())["fanout.outcome"].AsString())

		count := sums(t, tel.metrics(t)["fanout.tasks"], "fanout.outcome")
		assert.Equal(t, map[string]int64{"ok": 3, "cancelled": 1}, count, "text-1, s1 and s2 ok; s3 cancelled")
	})
}

// TestTimeouts tells an attempt that ran past its own deadline, an error,
// from one the run's deadline called off.
func TestTimeouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		wait := func(d time.Duration) func(ctx context.Context) (int, error) {
			return func(ctx context.Context) (int, error) {
				select {
				case <-time.After(d):
					return 1, nil
				case <-ctx.Done():
					return 0, context.Cause(ctx)
				}
			}
		}
		tasks := []fanout.Task[int]{{Key: "slow", Do: wait(time.Hour)}}
		_, err := fanout.Run(t.Context(), tasks, fanout.WithObserver(tel.obs), fanout.WithTaskTimeout(time.Second))
		require.ErrorIs(t, err, fanout.ErrTaskTimeout)
		_, err = fanout.Run(t.Context(), tasks, fanout.WithObserver(tel.obs), fanout.WithTimeout(time.Second))
		require.ErrorIs(t, err, fanout.ErrRunTimeout)

		attempts := tel.named("fanout.attempt")
		require.Len(t, attempts, 2)
		assert.Equal(t, "error", attrs(attempts[0].Attributes())["fanout.outcome"].AsString())
		assert.Equal(t, codes.Error, attempts[0].Status().Code)
		assert.Equal(t, "cancelled", attrs(attempts[1].Attributes())["fanout.outcome"].AsString())
		assert.Equal(t, codes.Unset, attempts[1].Status().Code)
		runs := tel.named("fanout.run")
		require.Len(t, runs, 2)
		for _, r := range runs {
			assert.Equal(t, codes.Error, r.Status().Code, "the key failed either way")
		}
	})
}

func TestGuardsMetrics(t *testing.T) {
	tel := newTelemetry()
	obs := tel.obs
	breaker := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{Name: "llm", MinFailures: 2, Observer: obs})
	limiter := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Name: "llm", Initial: 8, Observer: obs})
	busy := &fanout.HTTPError{StatusCode: 503, Status: "503 Service Unavailable"}
	tasks := make([]fanout.Task[int], 4)
	for i := range tasks {
		tasks[i] = fanout.Task[int]{Key: fmt.Sprint(i), Do: func(context.Context) (int, error) { return 0, busy }}
	}
	_, _ = fanout.Run(context.Background(), tasks, fanout.WithGuard(breaker), fanout.WithGuard(limiter), fanout.WithLimit(1))
	m := tel.metrics(t)
	gauge := func(name string) int64 {
		g, ok := m[name].(metricdata.Gauge[int64])
		require.True(t, ok, "%s is a gauge", name)
		require.Len(t, g.DataPoints, 1)
		v, _ := g.DataPoints[0].Attributes.Value(fanoutotel.KeyName)
		assert.Equal(t, "llm", v.AsString())
		return g.DataPoints[0].Value
	}
	assert.Equal(t, int64(fanout.BreakerOpen), gauge("fanout.breaker.state"))
	assert.Less(t, gauge("fanout.adaptive.limit"), int64(8), "the 503s brought the limit down")
}
