package fanout_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
)

type traceKey struct{}

// recorder is an Observer that writes down every call.
type recorder struct {
	mu     sync.Mutex
	events []string
	done   map[string]fanout.TaskInfo
	sum    fanout.RunSummary
}

func (r *recorder) log(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
}

func (r *recorder) observer() *fanout.Observer {
	r.done = map[string]fanout.TaskInfo{}
	return &fanout.Observer{
		RunStart: func(ctx context.Context, n int) context.Context {
			r.log("run start")
			return context.WithValue(ctx, traceKey{}, "run")
		},
		TaskStart: func(_ context.Context, key string) { r.log("task " + key) },
		AttemptStart: func(ctx context.Context, a fanout.AttemptInfo) context.Context {
			r.log("attempt " + a.Key)
			return context.WithValue(ctx, traceKey{}, "attempt "+a.Key)
		},
		AttemptDone: func(ctx context.Context, a fanout.AttemptInfo) {
			r.log("attempt done " + ctx.Value(traceKey{}).(string))
		},
		Retry:       func(_ context.Context, i fanout.RetryInfo) { r.log("retry " + i.Key) },
		LimiterWait: func(_ context.Context, w fanout.WaitInfo) { r.log("wait " + w.Key) },
		TaskDone: func(_ context.Context, t fanout.TaskInfo) {
			r.mu.Lock()
			r.done[t.Key] = t
			r.mu.Unlock()
		},
		RunDone: func(ctx context.Context, s fanout.RunSummary) {
			r.log("run done " + ctx.Value(traceKey{}).(string))
			r.sum = s
		},
	}
}

func (r *recorder) count(prefix string) int {
	n := 0
	for _, e := range r.events {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

func TestObserver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		var seen string
		task, _ := flaky("retried", 1, errFlaky)
		tasks := []fanout.Task[int]{
			{Key: "traced", Do: func(ctx context.Context) (int, error) {
				seen, _ = ctx.Value(traceKey{}).(string)
				fanout.Spend(ctx, fanout.Cost{Tokens: 7})
				return 1, nil
			}},
			task,
			failing[int]("broken", errors.New("down")),
			sleeping("late", time.Hour, 0),
		}
		_, err := fanout.Run(context.Background(), tasks, fanout.WithObserver(rec.observer()),
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, RetryIf: func(err error) bool { return errors.Is(err, errFlaky) }}),
			fanout.WithRequestLimit(rate.NewLimiter(rate.Inf, 1)), fanout.WithLimit(1), fanout.WithFailFast())
		require.Error(t, err)

		assert.Equal(t, "attempt traced", seen, "Do runs under the context AttemptStart returned")
		assert.Equal(t, "run start", rec.events[0])
		assert.Equal(t, "run done run", rec.events[len(rec.events)-1])
		assert.Equal(t, 1, rec.count("retry retried"))
		assert.Equal(t, 2, rec.count("attempt retried"))
		assert.Equal(t, 2, rec.count("wait retried"))
		require.Len(t, rec.done, 4)
		assert.Equal(t, fanout.Cost{Tokens: 7}, rec.done["traced"].Cost)
		assert.Equal(t, fanout.RunSummary{
			Tasks: 4, Succeeded: 2, Failed: 1, Skipped: 1, Attempts: 4, Cost: fanout.Cost{Tokens: 7},
			Elapsed: rec.done["retried"].Elapsed, // the retry's jittered wait is the only time that passed
		}, rec.sum)
	})
}

func TestObserverPanicsCostNothing(t *testing.T) {
	boom := func() { panic("observer bug") }
	o := &fanout.Observer{
		RunStart:     func(context.Context, int) context.Context { boom(); return nil },
		TaskStart:    func(context.Context, string) { boom() },
		AttemptStart: func(context.Context, fanout.AttemptInfo) context.Context { boom(); return nil },
		AttemptDone:  func(context.Context, fanout.AttemptInfo) { boom() },
		TaskDone:     func(context.Context, fanout.TaskInfo) { boom() },
		RunDone:      func(context.Context, fanout.RunSummary) { boom() },
	}
	rs, err := fanout.Run(context.Background(), []fanout.Task[int]{value("a", 1), value("b", 2)}, fanout.WithObserver(o))
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"a": 1, "b": 2}, rs.Values())
}

func TestSeveralObservers(t *testing.T) {
	a, b := &recorder{}, &recorder{}
	_, err := fanout.Run(context.Background(), []fanout.Task[int]{value("x", 1)},
		fanout.WithObserver(a.observer()), fanout.WithObserver(b.observer()))
	require.NoError(t, err)
	assert.Equal(t, a.events, b.events)
	assert.Equal(t, 1, a.sum.Succeeded)
}

func TestSlogObserver(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "elapsed" || a.Key == "limiter_wait" {
				return slog.Attr{}
			}
			return a
		},
	}))
	_, _ = fanout.Run(context.Background(), []fanout.Task[int]{value("ok", 1), failing[int]("bad", errors.New("down"))},
		fanout.WithObserver(fanout.SlogObserver(l)), fanout.WithLimit(1))
	assert.Equal(t, strings.Join([]string{
		`level=DEBUG msg="fanout attempt" key=ok attempt=1 hedge=false error=<nil>`,
		`level=INFO msg="fanout task done" key=ok attempts=1 error=<nil>`,
		`level=DEBUG msg="fanout attempt" key=bad attempt=1 hedge=false error=down`,
		`level=WARN msg="fanout task done" key=bad attempts=1 error=down`,
		`level=INFO msg="fanout run done" tasks=2 succeeded=1 failed=1 skipped=0 attempts=2 hedges=0 tokens=0 cents=0`,
	}, "\n")+"\n", buf.String())
}
