package fanoutotel_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
	fanoutotel "github.com/gofanout/fanout/otel"
)

// requireAllEnded fails if a span was started and never ended.
func requireAllEnded(tb testing.TB, tel *telemetry) {
	tb.Helper()
	ended := map[string]bool{}
	for _, s := range tel.spans.Ended() {
		ended[s.SpanContext().SpanID().String()] = true
	}
	for _, s := range tel.spans.Started() {
		assert.True(tb, ended[s.SpanContext().SpanID().String()], "span %s (%v) never ended", s.Name(), s.Attributes())
	}
}

// outcomeOf is the fanout.outcome attribute of an attempt span.
func outcomeOf(s sdktrace.ReadOnlySpan) string {
	return attrs(s.Attributes())[fanoutotel.KeyOutcome].AsString()
}

// blockUntilDone returns a Do that returns the cause once its context ends.
func blockUntilDone(ctx context.Context) (int, error) {
	<-ctx.Done()
	return 0, context.Cause(ctx)
}

func after(d time.Duration, v int) func(context.Context) (int, error) {
	return func(ctx context.Context) (int, error) {
		select {
		case <-time.After(d):
			return v, nil
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}

func fail(err error) func(context.Context) (int, error) {
	return func(context.Context) (int, error) { return 0, err }
}

// dataPoints lists the attribute sets of every data point of every metric.
func dataPoints(tb testing.TB, tel *telemetry) map[string][]attribute.Set {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(tb, tel.reader.Collect(context.Background(), &rm))
	out := map[string][]attribute.Set{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out[m.Name] = append(out[m.Name], dp.Attributes)
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					out[m.Name] = append(out[m.Name], dp.Attributes)
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					out[m.Name] = append(out[m.Name], dp.Attributes)
				}
			default:
				tb.Fatalf("metric %s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return out
}

// TestNestedRunsHangUnderTheirAttempts runs, inside a task, a Run, a Call
// and a Gather with the same Observer: each nested run span is a child of
// the outer attempt that started it, each inner attempt a child of its own
// run, and the outer run's totals are its own.
func TestNestedRunsHangUnderTheirAttempts(t *testing.T) {
	tel := newTelemetry()
	ctx := context.Background()
	outer := []fanout.Task[int]{
		{Key: "outer-run", Do: func(ctx context.Context) (int, error) {
			res, err := fanout.Run(ctx, []fanout.Task[int]{
				{Key: "in-a", Do: fail(errBad)}, {Key: "in-b", Do: fail(nil)},
			}, fanout.WithObserver(tel.obs))
			return res.Len(), err
		}},
		{Key: "outer-call", Do: func(ctx context.Context) (int, error) {
			return fanout.Call(ctx, fail(nil), fanout.WithObserver(tel.obs))
		}},
		{Key: "outer-gather", Do: func(ctx context.Context) (int, error) {
			return fanout.Gather(ctx, []fanout.Task[int]{{Key: "g", Do: fail(nil)}},
				fanout.Reduce(0, func(acc int, r fanout.Result[int]) int { return acc + 1 }),
				fanout.WithObserver(tel.obs))
		}},
	}
	_, err := fanout.Run(ctx, outer, fanout.WithObserver(tel.obs))
	require.ErrorIs(t, err, errBad)
	requireAllEnded(t, tel)

	runs := tel.named("fanout.run")
	require.Len(t, runs, 4)
	byID := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range tel.spans.Ended() {
		byID[s.SpanContext().SpanID().String()] = s
	}
	var root sdktrace.ReadOnlySpan
	for _, r := range runs {
		if !r.Parent().IsValid() {
			require.Nil(t, root, "one root run")
			root = r
		}
	}
	require.NotNil(t, root)
	assert.Equal(t, attribute.IntValue(3), attrs(root.Attributes())[fanoutotel.KeyTasks])
	assert.Equal(t, attribute.IntValue(1), attrs(root.Attributes())[fanoutotel.KeyFailed])
	assert.Equal(t, codes.Error, root.Status().Code)
	assert.Equal(t, "1 of 3 keys failed", root.Status().Description)

	parentKey := map[string]string{"in-a": "outer-run", "in-b": "outer-run", "call": "outer-call", "g": "outer-gather"}
	for inner, outerKey := range parentKey {
		s := tel.attempt(t, inner, 1, false)
		run := byID[s.Parent().SpanID().String()]
		require.NotNil(t, run, inner)
		assert.Equal(t, "fanout.run", run.Name(), inner)
		att := byID[run.Parent().SpanID().String()]
		require.NotNil(t, att, inner)
		assert.Equal(t, "fanout.attempt", att.Name(), inner)
		assert.Equal(t, outerKey, attrs(att.Attributes())[fanoutotel.KeyKey].AsString(), inner)
		assert.Equal(t, root.SpanContext().SpanID(), att.Parent().SpanID(), inner)
		assert.Equal(t, root.SpanContext().TraceID(), s.SpanContext().TraceID(), inner)
	}
	for _, r := range runs {
		if r == root {
			continue
		}
		a := attrs(r.Attributes())
		if a[fanoutotel.KeyTasks].AsInt64() == 2 {
			assert.Equal(t, codes.Error, r.Status().Code, "the nested Run had a failure")
			assert.Equal(t, "1 of 2 keys failed", r.Status().Description)
		} else {
			assert.Equal(t, codes.Unset, r.Status().Code)
		}
	}
}

// TestEntryPoints checks that every entry point ends its run span once, with
// its attempts under it.
func TestEntryPoints(t *testing.T) {
	tasks := func() []fanout.Task[int] {
		return []fanout.Task[int]{{Key: "a", Do: fail(nil)}, {Key: "b", Do: fail(nil)}}
	}
	tests := []struct {
		give      string
		run       func(t *testing.T, obs *fanout.Observer)
		wantTasks int64
	}{
		{give: "Stream", wantTasks: 2, run: func(t *testing.T, obs *fanout.Observer) {
			seq, err := fanout.Stream(context.Background(), tasks(), fanout.WithObserver(obs))
			require.NoError(t, err)
			for range seq {
			}
		}},
		{give: "StreamSeq", wantTasks: -1, run: func(t *testing.T, obs *fanout.Observer) {
			seq, err := fanout.StreamSeq(context.Background(), slices.Values(tasks()),
				fanout.WithLimit(2), fanout.WithObserver(obs))
			require.NoError(t, err)
			for range seq {
			}
		}},
		{give: "Gather", wantTasks: 2, run: func(t *testing.T, obs *fanout.Observer) {
			_, err := fanout.Gather(context.Background(), tasks(), fanout.MergeMap[int](), fanout.WithObserver(obs))
			require.NoError(t, err)
		}},
		{give: "GatherSeq", wantTasks: -1, run: func(t *testing.T, obs *fanout.Observer) {
			_, err := fanout.GatherSeq(context.Background(), slices.Values(tasks()), fanout.MergeMap[int](),
				fanout.WithLimit(2), fanout.WithObserver(obs))
			require.NoError(t, err)
		}},
		{give: "Group", wantTasks: -1, run: func(t *testing.T, obs *fanout.Observer) {
			g, err := fanout.NewGroup[int](context.Background(), fanout.WithObserver(obs))
			require.NoError(t, err)
			for _, task := range tasks() {
				require.NoError(t, g.GoTask(task))
			}
			_, err = g.Wait()
			require.NoError(t, err)
		}},
		{give: "Map", wantTasks: 2, run: func(t *testing.T, obs *fanout.Observer) {
			_, err := fanout.Map(context.Background(), []int{1, 2},
				func(context.Context, int) (int, error) { return 0, nil }, fanout.WithObserver(obs))
			require.NoError(t, err)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			tel := newTelemetry()
			tt.run(t, tel.obs)
			requireAllEnded(t, tel)
			runs := tel.named("fanout.run")
			require.Len(t, runs, 1)
			a := attrs(runs[0].Attributes())
			assert.Equal(t, tt.wantTasks, a[fanoutotel.KeyTasks].AsInt64())
			assert.Equal(t, int64(2), a[fanoutotel.KeySucceeded].AsInt64())
			attempts := tel.named("fanout.attempt")
			require.Len(t, attempts, 2)
			for _, s := range attempts {
				assert.Equal(t, runs[0].SpanContext().SpanID(), s.Parent().SpanID())
				assert.Equal(t, fanoutotel.OutcomeOK, outcomeOf(s))
			}
			assert.Equal(t, map[string]int64{"ok": 2}, sums(t, tel.metrics(t)["fanout.tasks"], fanoutotel.KeyOutcome))
		})
	}
}

// TestStreamBreak stops ranging a Stream after the first Result: the key
// still running is cancelled with ErrStopped, which fails no key, and the
// run span ends.
func TestStreamBreak(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		tasks := []fanout.Task[int]{{Key: "fast", Do: after(time.Millisecond, 1)}, {Key: "slow", Do: blockUntilDone}}
		seq, err := fanout.Stream(t.Context(), tasks, fanout.WithObserver(tel.obs))
		require.NoError(t, err)
		for range seq {
			break
		}
		requireAllEnded(t, tel)
		runs := tel.named("fanout.run")
		require.Len(t, runs, 1)
		assert.Equal(t, codes.Unset, runs[0].Status().Code, "a consumer that stops fails no key")
		slow := tel.attempt(t, "slow", 1, false)
		assert.Equal(t, fanoutotel.OutcomeCancelled, outcomeOf(slow))
		assert.Equal(t, codes.Unset, slow.Status().Code)
		assert.Equal(t, map[string]int64{"ok": 1, "cancelled": 1},
			sums(t, tel.metrics(t)["fanout.tasks"], fanoutotel.KeyOutcome))
	})
}

// TestHedgeLoser races two copies whose loser returns an error of its own
// when cancelled: it is cancelled, not an error, and the cause (the lost
// race) is recorded.
func TestHedgeLoser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		var calls atomic.Int32
		do := func(ctx context.Context) (int, error) {
			if calls.Add(1) == 1 {
				<-ctx.Done()
				return 0, errors.New("aborted")
			}
			time.Sleep(10 * time.Millisecond)
			return 2, nil
		}
		_, err := fanout.Run(t.Context(), []fanout.Task[int]{{Key: "k", Do: do}}, fanout.WithObserver(tel.obs),
			fanout.WithHedge(fanout.HedgePolicy{Delay: 50 * time.Millisecond, MaxExtra: 1}))
		require.NoError(t, err)
		requireAllEnded(t, tel)
		loser, winner := tel.attempt(t, "k", 1, false), tel.attempt(t, "k", 1, true)
		assert.Equal(t, fanoutotel.OutcomeCancelled, outcomeOf(loser))
		assert.Equal(t, codes.Unset, loser.Status().Code)
		assert.Equal(t, fanoutotel.OutcomeOK, outcomeOf(winner))
		assert.Equal(t, codes.Unset, winner.Status().Code)
		run := tel.named("fanout.run")[0]
		assert.Equal(t, attribute.IntValue(1), attrs(run.Attributes())[fanoutotel.KeyHedges])
		assert.Equal(t, attribute.IntValue(2), attrs(run.Attributes())[fanoutotel.KeyAttempts])
		for _, s := range []sdktrace.ReadOnlySpan{loser, winner} {
			assert.Equal(t, run.SpanContext().SpanID(), s.Parent().SpanID())
		}
	})
}

// TestRetryEvents retries twice: once on a backoff wait, once on the wait a
// server asked for. Each retry is an event on the run span with its wait
// and whether the server directed it.
func TestRetryEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		var calls atomic.Int32
		do := func(ctx context.Context) (int, error) {
			switch calls.Add(1) {
			case 1:
				return 0, errFlaky
			case 2:
				return 0, &fanout.HTTPError{StatusCode: 429, Status: "429 Too Many Requests", Delay: 3 * time.Second}
			}
			return 1, nil
		}
		_, err := fanout.Run(t.Context(), []fanout.Task[int]{{Key: "k", Do: do}}, fanout.WithObserver(tel.obs),
			fanout.WithRetry(fanout.RetryPolicy{InitialInterval: 200 * time.Millisecond, Jitter: -1,
				RetryIf: func(error) bool { return true }}))
		require.NoError(t, err)
		requireAllEnded(t, tel)
		run := tel.named("fanout.run")[0]
		require.Len(t, run.Events(), 2)
		first, second := attrs(run.Events()[0].Attributes), attrs(run.Events()[1].Attributes)
		assert.Equal(t, "fanout.retry", run.Events()[0].Name)
		assert.Equal(t, attribute.IntValue(1), first[fanoutotel.KeyAttempt])
		assert.InDelta(t, 0.2, first[fanoutotel.KeyWait].AsFloat64(), 1e-9)
		assert.Equal(t, attribute.BoolValue(false), first[fanoutotel.KeyServerDirected])
		assert.Equal(t, attribute.IntValue(2), second[fanoutotel.KeyAttempt])
		assert.GreaterOrEqual(t, second[fanoutotel.KeyWait].AsFloat64(), 3.0, "never shorter than the server asked")
		assert.Equal(t, attribute.BoolValue(true), second[fanoutotel.KeyServerDirected])
		assert.Len(t, tel.named("fanout.attempt"), 3)
		assert.Equal(t, map[string]int64{"": 2}, sums(t, tel.metrics(t)["fanout.retries"], fanoutotel.KeyName))
	})
}

// TestTaskTimeoutRetried times out every attempt: each is an error with
// status Error, and the run fails.
func TestTaskTimeoutRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		_, err := fanout.Run(t.Context(), []fanout.Task[int]{{Key: "k", Do: blockUntilDone}},
			fanout.WithObserver(tel.obs), fanout.WithTaskTimeout(time.Second),
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, Jitter: -1, RetryIf: func(error) bool { return true }}))
		require.ErrorIs(t, err, fanout.ErrTaskTimeout)
		requireAllEnded(t, tel)
		for n := 1; n <= 2; n++ {
			s := tel.attempt(t, "k", n, false)
			assert.Equal(t, fanoutotel.OutcomeError, outcomeOf(s))
			assert.Equal(t, codes.Error, s.Status().Code)
			assert.Equal(t, time.Second, s.EndTime().Sub(s.StartTime()))
		}
		assert.Equal(t, codes.Error, tel.named("fanout.run")[0].Status().Code)
	})
}

// TestPanicAndGoexit makes one task panic and another call runtime.Goexit:
// both attempt spans end with status Error, the in-flight gauge comes
// back to zero, and the run span ends with both keys failed.
func TestPanicAndGoexit(t *testing.T) {
	tel := newTelemetry()
	tasks := []fanout.Task[int]{
		{Key: "panics", Do: func(context.Context) (int, error) { panic("boom") }},
		{Key: "exits", Do: func(context.Context) (int, error) { runtime.Goexit(); return 0, nil }},
		{Key: "fine", Do: fail(nil)},
	}
	_, err := fanout.Run(context.Background(), tasks, fanout.WithObserver(tel.obs))
	var pe *fanout.PanicError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, fanout.ErrGoexit)
	requireAllEnded(t, tel)

	for _, key := range []string{"panics", "exits"} {
		s := tel.attempt(t, key, 1, false)
		assert.Equal(t, fanoutotel.OutcomeError, outcomeOf(s), key)
		assert.Equal(t, codes.Error, s.Status().Code, key)
	}
	run := tel.named("fanout.run")[0]
	assert.Equal(t, "2 of 3 keys failed", run.Status().Description)
	m := tel.metrics(t)
	assert.Equal(t, map[string]int64{"": 0}, sums(t, m["fanout.attempts.in_flight"], fanoutotel.KeyName))
	assert.Equal(t, map[string]int64{"ok": 1, "error": 2}, sums(t, m["fanout.tasks"], fanoutotel.KeyOutcome))
	count, _ := histogram(t, m["fanout.attempt.duration"], fanoutotel.KeyOutcome)
	assert.Equal(t, map[string]uint64{"ok": 1, "error": 2}, count)
}

// TestGoexitInHedgedCopy makes the hedged copy call runtime.Goexit while
// the attempt it copies goes on to succeed.
func TestGoexitInHedgedCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		var calls atomic.Int32
		do := func(ctx context.Context) (int, error) {
			if calls.Add(1) == 2 {
				runtime.Goexit()
			}
			time.Sleep(100 * time.Millisecond)
			return 1, nil
		}
		_, err := fanout.Run(t.Context(), []fanout.Task[int]{{Key: "k", Do: do}}, fanout.WithObserver(tel.obs),
			fanout.WithHedge(fanout.HedgePolicy{Delay: 50 * time.Millisecond, MaxExtra: 1}))
		require.NoError(t, err)
		requireAllEnded(t, tel)
		assert.Equal(t, fanoutotel.OutcomeOK, outcomeOf(tel.attempt(t, "k", 1, false)))
		copied := tel.attempt(t, "k", 1, true)
		assert.Equal(t, codes.Error, copied.Status().Code)
		assert.Equal(t, map[string]int64{"": 0},
			sums(t, tel.metrics(t)["fanout.attempts.in_flight"], fanoutotel.KeyName))
	})
}

// TestAlreadyCancelled runs under a context already cancelled: every key
// is skipped, no attempt is made, and the run span ends without Error.
func TestAlreadyCancelled(t *testing.T) {
	tel := newTelemetry()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tasks := []fanout.Task[int]{{Key: "a", Do: fail(nil)}, {Key: "b", Do: fail(nil)}}
	_, err := fanout.Run(ctx, tasks, fanout.WithObserver(tel.obs), fanout.WithRetry(fanout.RetryPolicy{}))
	require.ErrorIs(t, err, fanout.ErrSkipped)
	requireAllEnded(t, tel)
	assert.Empty(t, tel.named("fanout.attempt"))
	runs := tel.named("fanout.run")
	require.Len(t, runs, 1)
	assert.Equal(t, codes.Unset, runs[0].Status().Code, "skipped keys do not fail the run span")
	assert.Equal(t, attribute.IntValue(2), attrs(runs[0].Attributes())[fanoutotel.KeySkipped])
	assert.Equal(t, map[string]int64{"skipped": 2}, sums(t, tel.metrics(t)["fanout.tasks"], fanoutotel.KeyOutcome))
}

// TestAggregatorStops lets First decide on the first success: the key in
// flight is cancelled, the key never started is skipped, and neither fails
// the run span.
func TestAggregatorStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		tasks := []fanout.Task[int]{
			{Key: "win", Do: after(time.Millisecond, 1)},
			{Key: "running", Do: blockUntilDone},
			{Key: "queued", Do: fail(nil)},
		}
		_, err := fanout.Gather(t.Context(), tasks, fanout.First[int](), fanout.WithLimit(2), fanout.WithObserver(tel.obs))
		require.NoError(t, err)
		requireAllEnded(t, tel)
		run := tel.named("fanout.run")[0]
		assert.Equal(t, codes.Unset, run.Status().Code)
		assert.Equal(t, fanoutotel.OutcomeCancelled, outcomeOf(tel.attempt(t, "running", 1, false)))
		assert.Len(t, tel.named("fanout.attempt"), 2, "the queued key made no attempt")
		assert.Equal(t, map[string]int64{"ok": 1, "cancelled": 1, "skipped": 1},
			sums(t, tel.metrics(t)["fanout.tasks"], fanoutotel.KeyOutcome))
	})
}

// TestFailFast fails one key while another runs: the first is an error,
// the one it cancelled is a cancelled attempt, and the run span is Error.
func TestFailFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		tasks := []fanout.Task[int]{
			{Key: "bad", Do: func(context.Context) (int, error) { time.Sleep(time.Millisecond); return 0, errBad }},
			{Key: "running", Do: blockUntilDone},
		}
		_, err := fanout.Run(t.Context(), tasks, fanout.WithFailFast(), fanout.WithObserver(tel.obs))
		require.ErrorIs(t, err, errBad)
		requireAllEnded(t, tel)
		bad, running := tel.attempt(t, "bad", 1, false), tel.attempt(t, "running", 1, false)
		assert.Equal(t, fanoutotel.OutcomeError, outcomeOf(bad))
		assert.Equal(t, codes.Error, bad.Status().Code)
		assert.Equal(t, fanoutotel.OutcomeCancelled, outcomeOf(running))
		assert.Equal(t, codes.Unset, running.Status().Code, "reported where it happened")
		assert.Equal(t, codes.Error, tel.named("fanout.run")[0].Status().Code)
	})
}

// TestBudgetSkips spends the budget in the first key: the next is skipped,
// counted as such, and does not fail the run span.
func TestBudgetSkips(t *testing.T) {
	tel := newTelemetry()
	tasks := []fanout.Task[int]{
		{Key: "spender", Do: func(ctx context.Context) (int, error) {
			fanout.Spend(ctx, fanout.Cost{Tokens: 100})
			return 1, nil
		}},
		{Key: "late", Do: fail(nil)},
	}
	res, _ := fanout.Run(context.Background(), tasks, fanout.WithLimit(1), fanout.WithBudget(fanout.Cost{Tokens: 10}),
		fanout.WithObserver(tel.obs))
	require.ErrorIs(t, res.Errs()["late"], fanout.ErrBudgetExceeded)
	requireAllEnded(t, tel)
	run := tel.named("fanout.run")[0]
	assert.Equal(t, codes.Unset, run.Status().Code)
	assert.Equal(t, attribute.IntValue(1), attrs(run.Attributes())[fanoutotel.KeySkipped])
	assert.Equal(t, map[string]int64{"ok": 1, "skipped": 1}, sums(t, tel.metrics(t)["fanout.tasks"], fanoutotel.KeyOutcome))
}

// TestBreakerRefusalIsAnError opens a breaker on the first failure: the
// keys it then refuses never start, but not because the run stopped, so
// they failed rather than were skipped, as RunSummary counts them.
func TestBreakerRefusalIsAnError(t *testing.T) {
	tel := newTelemetry()
	breaker := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{Name: "b", MinFailures: 1, FailureRatio: 1,
		FailureIf: func(error) bool { return true }})
	tasks := []fanout.Task[int]{{Key: "a", Do: fail(errBad)}, {Key: "b", Do: fail(nil)}, {Key: "c", Do: fail(nil)}}
	res, _ := fanout.Run(context.Background(), tasks, fanout.WithLimit(1), fanout.WithGuard(breaker),
		fanout.WithObserver(tel.obs))
	require.Error(t, res.Errs()["b"])
	require.NotErrorIs(t, res.Errs()["b"], fanout.ErrSkipped)
	requireAllEnded(t, tel)
	run := tel.named("fanout.run")[0]
	assert.Equal(t, attribute.IntValue(3), attrs(run.Attributes())[fanoutotel.KeyFailed])
	assert.Equal(t, codes.Error, run.Status().Code)
	assert.Equal(t, "3 of 3 keys failed", run.Status().Description, "the span's count agrees with fanout.failed")
	assert.Equal(t, map[string]int64{"error": 3}, sums(t, tel.metrics(t)["fanout.tasks"], fanoutotel.KeyOutcome))
}

// TestConcurrentRuns shares one Observer among many concurrent runs of
// different sizes and failures: each run's span counts its own keys and
// only its own attempts hang under it.
func TestConcurrentRuns(t *testing.T) {
	tel := newTelemetry()
	const runs = 16
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() {
			tasks := make([]fanout.Task[int], i+1)
			for j := range tasks {
				var err error
				if j < i%3 {
					err = errBad
				}
				tasks[j] = fanout.Task[int]{Key: fmt.Sprintf("r%d-k%d", i, j), Do: func(ctx context.Context) (int, error) {
					runtime.Gosched()
					return j, err
				}}
			}
			_, _ = fanout.Run(context.Background(), tasks, fanout.WithLimit(3), fanout.WithObserver(tel.obs),
				fanout.WithRateLimit(rate.NewLimiter(rate.Inf, 1)),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Microsecond,
					RetryIf: func(error) bool { return true }}))
		})
	}
	wg.Wait()
	requireAllEnded(t, tel)
	runSpans := map[string]sdktrace.ReadOnlySpan{}
	for _, r := range tel.named("fanout.run") {
		runSpans[r.SpanContext().SpanID().String()] = r
	}
	require.Len(t, runSpans, runs)
	perRun := map[string]map[string]bool{} // run span → run index prefixes seen
	for _, s := range tel.named("fanout.attempt") {
		var i, j int
		_, err := fmt.Sscanf(attrs(s.Attributes())[fanoutotel.KeyKey].AsString(), "r%d-k%d", &i, &j)
		require.NoError(t, err)
		id := s.Parent().SpanID().String()
		require.Contains(t, runSpans, id)
		if perRun[id] == nil {
			perRun[id] = map[string]bool{}
		}
		perRun[id][fmt.Sprint(i)] = true
		run := runSpans[id]
		assert.Equal(t, int64(i+1), attrs(run.Attributes())[fanoutotel.KeyTasks].AsInt64())
	}
	for id, seen := range perRun {
		assert.Len(t, seen, 1, "run %s has attempts of one run only", id)
	}
	for _, r := range runSpans {
		a := attrs(r.Attributes())
		i := int(a[fanoutotel.KeyTasks].AsInt64()) - 1
		wantFailed := int64(min(i%3, i+1))
		assert.Equal(t, wantFailed, a[fanoutotel.KeyFailed].AsInt64(), "run %d", i)
		if wantFailed > 0 {
			assert.Equal(t, fmt.Sprintf("%d of %d keys failed", wantFailed, i+1), r.Status().Description)
		} else {
			assert.Equal(t, codes.Unset, r.Status().Code, "run %d", i)
		}
		assert.Equal(t, wantFailed, int64(len(r.Events())), "run %d: a retry event per failing key", i)
	}
	m := tel.metrics(t)
	assert.Equal(t, map[string]int64{"": 0}, sums(t, m["fanout.attempts.in_flight"], fanoutotel.KeyName))
}

// TestAttributesEverywhere checks that WithAttributes is on the run span
// and every data point of every metric, gauges included, and that no data
// point carries a key, by attribute or by value.
func TestAttributesEverywhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mine := attribute.String("team", "search")
		tel := newTelemetry(fanoutotel.WithAttributes(mine), fanoutotel.WithAttributes(attribute.Int("shard", 7)))
		breaker := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{Name: "br", MinFailures: 1, FailureRatio: 0.1,
			FailureIf: func(err error) bool { return err != nil }, Observer: tel.obs})
		limiter := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Name: "al", Initial: 4, Observer: tel.obs})
		busy := &fanout.HTTPError{StatusCode: 503, Status: "503 Service Unavailable"}
		var calls atomic.Int32
		// One at a time: key-one's first call is slow, and its hedged
		// copy wins; the others fail, are retried and fail again.
		do := func(ctx context.Context) (int, error) {
			switch calls.Add(1) {
			case 1:
				return after(time.Second, 1)(ctx)
			case 2:
				return 1, nil
			}
			return 0, busy
		}
		keys := []string{"key-one", "key-two", "key-three"}
		tasks := []fanout.Task[int]{{Key: keys[0], Do: do}, {Key: keys[1], Do: do}, {Key: keys[2], Do: do}}
		_, _ = fanout.Run(t.Context(), tasks, fanout.WithObserver(tel.obs), fanout.WithLimit(1),
			fanout.WithRateLimit(rate.NewLimiter(rate.Every(10*time.Millisecond), 1)),
			fanout.WithHedge(fanout.HedgePolicy{Delay: 100 * time.Millisecond, MaxExtra: 1}),
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, Jitter: -1, RetryIf: func(error) bool { return true }}))
		guarded := []fanout.Task[int]{{Key: keys[0], Do: fail(busy)}, {Key: keys[1], Do: fail(busy)}}
		_, _ = fanout.Run(t.Context(), guarded, fanout.WithObserver(tel.obs), fanout.WithLimit(1),
			fanout.WithGuard(limiter), fanout.WithGuard(breaker))
		requireAllEnded(t, tel)

		run := tel.named("fanout.run")[0]
		assert.Equal(t, mine.Value, attrs(run.Attributes())["team"])
		assert.Equal(t, attribute.IntValue(7), attrs(run.Attributes())["shard"])

		points := dataPoints(t, tel)
		for _, name := range []string{"fanout.tasks", "fanout.attempt.duration", "fanout.attempts.in_flight",
			"fanout.limiter.wait", "fanout.retries", "fanout.hedges", "fanout.adaptive.limit", "fanout.breaker.state"} {
			assert.NotEmpty(t, points[name], "%s has data points", name)
		}
		for name, sets := range points {
			for _, set := range sets {
				v, ok := set.Value("team")
				assert.True(t, ok && v == mine.Value, "%s: %v lacks the run's attributes", name, set.ToSlice())
				v, ok = set.Value("shard")
				assert.True(t, ok && v.AsInt64() == 7, "%s: %v lacks the run's attributes", name, set.ToSlice())
				_, ok = set.Value(fanoutotel.KeyKey)
				assert.False(t, ok, "%s: a key as attribute", name)
				for _, kv := range set.ToSlice() {
					assert.NotContains(t, keys, kv.Value.Emit(), "%s: a key as value of %s", name, kv.Key)
				}
			}
		}
	})
}

// TestGauges follows a breaker through open, half-open and closed, and an
// adaptive limiter down and up, reading the gauges after each change.
func TestGauges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry(fanoutotel.WithAttributes(attribute.String("app", "x")))
		breaker := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{Name: "br", MinFailures: 1, FailureRatio: 1,
			CoolOff: time.Second, Probes: 1, FailureIf: func(err error) bool { return err != nil }, Observer: tel.obs})
		other := fanout.NewCircuitBreaker(fanout.CircuitBreakerConfig{Name: "other", Observer: tel.obs})
		gauge := func(name, who string) (int64, bool) {
			g, ok := tel.metrics(t)[name].(metricdata.Gauge[int64])
			if !ok {
				return 0, false
			}
			for _, dp := range g.DataPoints {
				if v, _ := dp.Attributes.Value(fanoutotel.KeyName); v.AsString() == who {
					return dp.Value, true
				}
			}
			return 0, false
		}
		run := func(err error) {
			_, _ = fanout.Run(t.Context(), []fanout.Task[int]{{Key: "k", Do: fail(err)}},
				fanout.WithGuard(breaker), fanout.WithGuard(other), fanout.WithObserver(tel.obs))
		}
		run(errBad)
		v, ok := gauge("fanout.breaker.state", "br")
		require.True(t, ok)
		assert.Equal(t, int64(fanout.BreakerOpen), v)
		_, ok = gauge("fanout.breaker.state", "other")
		assert.False(t, ok, "a breaker that never changed has no data point")

		time.Sleep(2 * time.Second)
		assert.Equal(t, fanout.BreakerHalfOpen, breaker.State())
		v, _ = gauge("fanout.breaker.state", "br")
		assert.Equal(t, int64(fanout.BreakerHalfOpen), v)
		run(nil)
		v, _ = gauge("fanout.breaker.state", "br")
		assert.Equal(t, int64(fanout.BreakerClosed), v)

		limiter := fanout.NewAdaptiveLimiter(fanout.AdaptiveLimiterConfig{Name: "al", Initial: 8, Observer: tel.obs})
		busy := &fanout.HTTPError{StatusCode: 503, Status: "503 Service Unavailable"}
		_, _ = fanout.Run(t.Context(), []fanout.Task[int]{{Key: "k", Do: fail(busy)}},
			fanout.WithGuard(limiter), fanout.WithObserver(tel.obs))
		v, ok = gauge("fanout.adaptive.limit", "al")
		require.True(t, ok)
		assert.Equal(t, int64(limiter.Limit()), v)
		assert.Less(t, v, int64(8))
	})
}

// TestTwoObserversOnOneRun gives one run two Observers of this package,
// with providers of their own: each traces the run once, in full.
func TestTwoObserversOnOneRun(t *testing.T) {
	a, b := newTelemetry(), newTelemetry()
	tasks := []fanout.Task[int]{{Key: "ok", Do: fail(nil)}, {Key: "bad", Do: fail(errBad)}}
	_, err := fanout.Run(context.Background(), tasks, fanout.WithObserver(a.obs), fanout.WithObserver(b.obs))
	require.ErrorIs(t, err, errBad)
	for name, tel := range map[string]*telemetry{"first": a, "second": b} {
		requireAllEnded(t, tel)
		runs := tel.named("fanout.run")
		require.Len(t, runs, 1, name)
		assert.Equal(t, codes.Error, runs[0].Status().Code, name)
		assert.Equal(t, "1 of 2 keys failed", runs[0].Status().Description, name)
		require.Len(t, tel.named("fanout.attempt"), 2, name)
		for _, s := range tel.named("fanout.attempt") {
			assert.NotEmpty(t, outcomeOf(s), name)
		}
		assert.Equal(t, map[string]int64{"ok": 1, "error": 1}, sums(t, tel.metrics(t)["fanout.tasks"], fanoutotel.KeyOutcome), name)
	}
}

// TestNilProviders passes nil providers, which mean the global ones.
func TestNilProviders(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	prevTP, prevMP := otel.GetTracerProvider(), otel.GetMeterProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetMeterProvider(prevMP) })

	var obs *fanout.Observer
	require.NotPanics(t, func() {
		obs = fanoutotel.Observer(fanoutotel.WithTracerProvider(nil), fanoutotel.WithMeterProvider(nil))
	})
	_, err := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "k", Do: fail(nil)}}, fanout.WithObserver(obs))
	require.NoError(t, err)
	assert.Len(t, spans.Ended(), 2, "a run and an attempt, on the global tracer provider")
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	require.Len(t, rm.ScopeMetrics, 1)
	assert.Equal(t, fanoutotel.ScopeName, rm.ScopeMetrics[0].Scope.Name)
}

// TestDuplicateLazyKeysKeepTheirWaits runs two tasks of one key from a
// lazy source, which does not check keys are unique. The first waits
// nothing for the rate limiter and then 1.5 s on a guard; the second waits
// 1 s for its token: each attempt span has its own wait.
func TestDuplicateLazyKeysKeepTheirWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		start := time.Now()
		var admits atomic.Int32
		slow := guardFunc(func(ctx context.Context, a fanout.Admission) (func(fanout.Outcome), error) {
			d := 1500 * time.Millisecond
			if admits.Add(1) == 2 {
				d = 2 * time.Second
			}
			time.Sleep(d)
			return func(fanout.Outcome) {}, nil
		})
		var src iter.Seq[fanout.Task[int]] = slices.Values([]fanout.Task[int]{
			{Key: "dup", Do: fail(nil)}, {Key: "dup", Do: fail(nil)},
		})
		seq, err := fanout.StreamSeq(t.Context(), src, fanout.WithLimit(2), fanout.WithObserver(tel.obs),
			fanout.WithRateLimit(rate.NewLimiter(rate.Every(time.Second), 1)), fanout.WithGuard(slow))
		require.NoError(t, err)
		for range seq {
		}
		requireAllEnded(t, tel)
		waits := map[time.Duration]float64{} // by the attempt's start
		for _, s := range tel.named("fanout.attempt") {
			waits[s.StartTime().Sub(start)] = attrs(s.Attributes())[fanoutotel.KeyLimiterWait].AsFloat64()
		}
		assert.Equal(t, map[time.Duration]float64{1500 * time.Millisecond: 0, 3 * time.Second: 1}, waits)
	})
}

type guardFunc func(ctx context.Context, a fanout.Admission) (func(fanout.Outcome), error)

func (g guardFunc) Admit(ctx context.Context, a fanout.Admission) (func(fanout.Outcome), error) {
	return g(ctx, a)
}

// TestStoppedWhileWaitingOnLimiter cancels the run while a key waits for
// its first token: it never started because the run stopped, so it is
// skipped, and the run span is no error.
func TestStoppedWhileWaitingOnLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(time.Second, cancel)
		tasks := []fanout.Task[int]{{Key: "first", Do: fail(nil)}, {Key: "waiting", Do: fail(nil)}}
		res, _ := fanout.Run(ctx, tasks, fanout.WithObserver(tel.obs),
			fanout.WithRateLimit(rate.NewLimiter(rate.Every(time.Hour), 1)))
		require.ErrorIs(t, res.Errs()["waiting"], context.Canceled)
		requireAllEnded(t, tel)
		assert.Equal(t, codes.Unset, tel.named("fanout.run")[0].Status().Code)
		assert.Equal(t, map[string]int64{"ok": 1, "skipped": 1}, sums(t, tel.metrics(t)["fanout.tasks"], fanoutotel.KeyOutcome))
	})
}

// TestInvalidLazyTaskIsAnError gives StreamSeq a task without Do, which
// fails with its own Result before any attempt: a failure, not a skip.
func TestInvalidLazyTaskIsAnError(t *testing.T) {
	tel := newTelemetry()
	seq, err := fanout.StreamSeq(context.Background(),
		slices.Values([]fanout.Task[int]{{Key: "ok", Do: fail(nil)}, {Key: "no-do"}}),
		fanout.WithLimit(1), fanout.WithObserver(tel.obs))
	require.NoError(t, err)
	for range seq {
	}
	requireAllEnded(t, tel)
	run := tel.named("fanout.run")[0]
	assert.Equal(t, attribute.IntValue(1), attrs(run.Attributes())[fanoutotel.KeyFailed])
	assert.Equal(t, codes.Error, run.Status().Code)
	assert.Equal(t, map[string]int64{"ok": 1, "error": 1}, sums(t, tel.metrics(t)["fanout.tasks"], fanoutotel.KeyOutcome))
}

// TestHedgeNeverStarted hedges an attempt whose copy waits for a token
// the rate limiter gives only after the attempt has succeeded: the copy
// never calls Do, so no hedge was started, by the metric as by the run
// span.
func TestHedgeNeverStarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		_, err := fanout.Run(t.Context(), []fanout.Task[int]{{Key: "k", Do: after(200*time.Millisecond, 1)}},
			fanout.WithObserver(tel.obs), fanout.WithRateLimit(rate.NewLimiter(rate.Every(time.Second), 1)),
			fanout.WithHedge(fanout.HedgePolicy{Delay: 50 * time.Millisecond, MaxExtra: 1}))
		require.NoError(t, err)
		requireAllEnded(t, tel)
		require.Len(t, tel.named("fanout.attempt"), 1, "the copy never called Do")
		run := tel.named("fanout.run")[0]
		assert.Equal(t, attribute.IntValue(0), attrs(run.Attributes())[fanoutotel.KeyHedges])
		assert.NotContains(t, tel.metrics(t), "fanout.hedges", "fanout.hedges counts copies started, as the run span does")
	})
}

// TestCancelledAttemptRecordsItsCause cancels an attempt whose Do answers
// with an error of its own: the span records the cause it was cancelled
// with, as the package doc says.
func TestCancelledAttemptRecordsItsCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		tasks := []fanout.Task[int]{
			{Key: "win", Do: after(time.Millisecond, 1)},
			{Key: "slow", Do: func(ctx context.Context) (int, error) {
				<-ctx.Done()
				return 0, errors.New("aborted")
			}},
		}
		_, err := fanout.Gather(t.Context(), tasks, fanout.First[int](), fanout.WithObserver(tel.obs))
		require.NoError(t, err)
		slow := tel.attempt(t, "slow", 1, false)
		assert.Equal(t, fanoutotel.OutcomeCancelled, outcomeOf(slow))
		assert.Equal(t, codes.Unset, slow.Status().Code)
		require.Len(t, slow.Events(), 1)
		assert.Contains(t, attrs(slow.Events()[0].Attributes)["exception.message"].AsString(), fanout.ErrStopped.Error())
	})
}

// brokenMeterProvider makes meters that cannot create a gauge.
type brokenMeterProvider struct{ noop.MeterProvider }

func (brokenMeterProvider) Meter(string, ...metric.MeterOption) metric.Meter { return brokenMeter{} }

type brokenMeter struct{ noop.Meter }

func (brokenMeter) Int64Gauge(string, ...metric.Int64GaugeOption) (metric.Int64Gauge, error) {
	return nil, errors.New("no gauges here")
}

// TestBrokenMeterProvider checks the documented panic, whose message
// starts with the package name and gives the reason.
func TestBrokenMeterProvider(t *testing.T) {
	assert.PanicsWithValue(t, "fanoutotel: no gauges here\nno gauges here", func() {
		fanoutotel.Observer(fanoutotel.WithMeterProvider(brokenMeterProvider{}))
	})
}

// TestPanicsOutsideTasks panics in a Stream's consumer, in a StreamSeq's
// source and in a Gather's aggregator: each run span still ends, and so
// does every attempt span.
func TestPanicsOutsideTasks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel := newTelemetry()
		tasks := []fanout.Task[int]{{Key: "fast", Do: after(time.Millisecond, 1)}, {Key: "slow", Do: blockUntilDone}}

		seq, err := fanout.Stream(t.Context(), tasks, fanout.WithObserver(tel.obs))
		require.NoError(t, err)
		assert.Panics(t, func() {
			for range seq {
				panic("consumer")
			}
		})

		source := func(yield func(fanout.Task[int]) bool) {
			if yield(tasks[0]) {
				panic("source")
			}
		}
		lazy, err := fanout.StreamSeq(t.Context(), source, fanout.WithLimit(2), fanout.WithObserver(tel.obs))
		require.NoError(t, err)
		assert.Panics(t, func() {
			for range lazy {
			}
		})

		_, err = fanout.Gather(t.Context(), tasks, fanout.Reduce(0, func(int, fanout.Result[int]) int { panic("agg") }),
			fanout.WithObserver(tel.obs))
		var pe *fanout.PanicError
		require.ErrorAs(t, err, &pe)

		requireAllEnded(t, tel)
		assert.Len(t, tel.named("fanout.run"), 3)
		m := tel.metrics(t)
		assert.Equal(t, map[string]int64{"": 0}, sums(t, m["fanout.attempts.in_flight"], fanoutotel.KeyName))
	})
}
