package fanout_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

func (r *recorder) count(prefix string) int { return len(r.with(prefix)) }

// with returns the events starting with prefix, in order.
func (r *recorder) with(prefix string) []string {
	var out []string
	for _, e := range r.events {
		if strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	return out
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
		assert.Equal(t, []string{"task traced", "task retried", "task broken"}, rec.with("task "),
			"TaskStart once per key that starts, not per attempt, and not for the skipped key")
		for _, key := range []string{"traced", "retried", "broken"} {
			i := slices.Index(rec.events, "task "+key)
			require.Less(t, i+1, len(rec.events))
			assert.Equal(t, "wait "+key, rec.events[i+1], "TaskStart comes before the first attempt's limiter wait")
		}
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
	// panicking returns an Observer each of whose nine hooks counts its
	// call in calls, then panics.
	panicking := func(calls *sync.Map) *fanout.Observer {
		boom := func(hook string) {
			n, _ := calls.LoadOrStore(hook, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
			panic("observer bug in " + hook)
		}
		return &fanout.Observer{
			RunStart:     func(context.Context, int) context.Context { boom("RunStart"); return nil },
			TaskStart:    func(context.Context, string) { boom("TaskStart") },
			AttemptStart: func(context.Context, fanout.AttemptInfo) context.Context { boom("AttemptStart"); return nil },
			AttemptDone:  func(context.Context, fanout.AttemptInfo) { boom("AttemptDone") },
			Retry:        func(context.Context, fanout.RetryInfo) { boom("Retry") },
			Hedge:        func(context.Context, fanout.HedgeInfo) { boom("Hedge") },
			LimiterWait:  func(context.Context, fanout.WaitInfo) { boom("LimiterWait") },
			TaskDone:     func(context.Context, fanout.TaskInfo) { boom("TaskDone") },
			RunDone:      func(context.Context, fanout.RunSummary) { boom("RunDone") },
		}
	}
	called := func(calls *sync.Map) []string {
		var hooks []string
		calls.Range(func(k, _ any) bool { hooks = append(hooks, k.(string)); return true })
		slices.Sort(hooks)
		return hooks
	}

	t.Run("a plain run keeps every value", func(t *testing.T) {
		var calls sync.Map
		rs, err := fanout.Run(context.Background(), []fanout.Task[int]{value("a", 1), value("b", 2)},
			fanout.WithObserver(panicking(&calls)))
		require.NoError(t, err)
		assert.Equal(t, map[string]int{"a": 1, "b": 2}, rs.Values())
		assert.Equal(t, []string{"AttemptDone", "AttemptStart", "RunDone", "RunStart", "TaskDone", "TaskStart"},
			called(&calls))
	})
	t.Run("a run that retries, hedges and waits on a rate limiter keeps every result", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var calls sync.Map
			retried, _ := flaky("retried", 1, errFlaky)
			hedged := slowFirst("hedged", 10*time.Second, time.Second)
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{retried, hedged, value("plain", 3)},
				fanout.WithObserver(panicking(&calls)),
				fanout.WithRetry(exact(3)),
				fanout.WithHedge(fanout.HedgePolicy{Delay: 2 * time.Second, MaxExtra: 1}),
				fanout.WithRateLimit(rate.NewLimiter(rate.Every(100*time.Millisecond), 1)))
			require.NoError(t, err)

			assert.Equal(t, []string{"AttemptDone", "AttemptStart", "Hedge", "LimiterWait", "Retry", "RunDone",
				"RunStart", "TaskDone", "TaskStart"}, called(&calls), "every hook panicked at least once")
			tests := []struct {
				key                      string
				wantValue                int
				wantAttempts, wantHedges int
			}{
				{key: "retried", wantValue: 1, wantAttempts: 2},
				{key: "hedged", wantValue: 2, wantAttempts: 2, wantHedges: 1}, // the copy's value
				{key: "plain", wantValue: 3, wantAttempts: 1},
			}
			require.Equal(t, len(tests), rs.Len())
			for _, tt := range tests {
				r, ok := rs.Get(tt.key)
				require.True(t, ok, tt.key)
				assert.NoError(t, r.Err, tt.key)
				assert.Equal(t, tt.wantValue, r.Value, tt.key)
				assert.Equal(t, tt.wantAttempts, r.Attempts, tt.key)
				assert.Equal(t, tt.wantHedges, r.Hedges, tt.key)
			}
		})
	})
}

// slowFirst is a task whose first call takes first and every later call
// (a hedged copy) then; each returns its call's number, 1, 2, ...
func slowFirst(key string, first, then time.Duration) fanout.Task[int] {
	var calls atomic.Int32
	return fanout.Task[int]{Key: key, Do: func(ctx context.Context) (int, error) {
		n := calls.Add(1)
		d := then
		if n == 1 {
			d = first
		}
		select {
		case <-time.After(d):
			return int(n), nil
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}}
}

// TestSlowObserver blocks in every hook for a second of fake time. Hooks
// run synchronously on the goroutine doing the work (RunStart and RunDone
// on the caller's, the others on the key's worker), holding no lock of the
// run, so a slow hook delays only its own key: the keys' hook time adds up
// along each key, not across keys.
func TestSlowObserver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hook = time.Second
		slow := func() { time.Sleep(hook) }
		var hooks atomic.Int32
		o := &fanout.Observer{
			RunStart:     func(ctx context.Context, _ int) context.Context { hooks.Add(1); slow(); return ctx },
			TaskStart:    func(context.Context, string) { hooks.Add(1); slow() },
			AttemptStart: func(ctx context.Context, _ fanout.AttemptInfo) context.Context { hooks.Add(1); slow(); return ctx },
			AttemptDone:  func(context.Context, fanout.AttemptInfo) { hooks.Add(1); slow() },
			Retry:        func(context.Context, fanout.RetryInfo) { hooks.Add(1); slow() },
			TaskDone:     func(context.Context, fanout.TaskInfo) { hooks.Add(1); slow() },
			RunDone:      func(context.Context, fanout.RunSummary) { hooks.Add(1); slow() },
		}
		var sum fanout.RunSummary
		o2 := &fanout.Observer{RunDone: func(_ context.Context, s fanout.RunSummary) { sum = s }}
		retried, _ := flaky("retried", 1, errFlaky)
		tasks := []fanout.Task[int]{sleeping("a", time.Second, 1), sleeping("b", time.Second, 2), retried}

		start := time.Now()
		rs, err := fanout.Run(context.Background(), tasks, fanout.WithObserver(o), fanout.WithObserver(o2),
			fanout.WithRetry(exact(2)))
		require.NoError(t, err)

		assert.Equal(t, map[string]int{"a": 1, "b": 2, "retried": 1}, rs.Values(), "no result is lost")
		// a and b: TaskStart, AttemptStart, 1 s of work, AttemptDone; TaskDone
		// comes after Elapsed is taken.
		for _, k := range []string{"a", "b"} {
			r, _ := rs.Get(k)
			assert.Equal(t, 4*time.Second, r.Elapsed, k)
		}
		// retried: TaskStart, AttemptStart, AttemptDone, Retry, the 1 s
		// backoff, AttemptStart, AttemptDone.
		r, _ := rs.Get("retried")
		assert.Equal(t, 2, r.Attempts)
		assert.Equal(t, 7*time.Second, r.Elapsed)
		// Each key on its own worker: RunStart, then the longest key
		// (7 s) and its TaskDone, then RunDone. One at a time it would be
		// 1 + (5 + 5 + 8) + 1 = 20 s.
		assert.Equal(t, 10*time.Second, time.Since(start))
		assert.Equal(t, int32(2+4+4+7), hooks.Load(), "each key's hooks, and the run's two")
		assert.Equal(t, fanout.RunSummary{Tasks: 3, Succeeded: 3, Attempts: 4,
			Elapsed: 9 * time.Second}, sum, "RunDone's totals are taken before the slow RunDone runs")
	})
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
	// logTo returns a logger writing text lines, without the time, to buf.
	logTo := func(buf *bytes.Buffer) *slog.Logger {
		return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{
			Level: slog.LevelDebug,
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			},
		}))
	}

	t.Run("logs each attempt and key with its elapsed time, and the run's totals", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var buf bytes.Buffer
			bad := fanout.Task[int]{Key: "bad", Do: func(context.Context) (int, error) {
				time.Sleep(500 * time.Millisecond)
				return 0, errors.New("down")
			}}
			_, _ = fanout.Run(context.Background(), []fanout.Task[int]{sleeping("ok", 2*time.Second, 1), bad},
				fanout.WithObserver(fanout.SlogObserver(logTo(&buf))), fanout.WithLimit(1))
			assert.Equal(t, strings.Join([]string{
				`level=DEBUG msg="fanout attempt" key=ok attempt=1 hedge=false elapsed=2s error=<nil>`,
				`level=INFO msg="fanout task done" key=ok attempts=1 elapsed=2s limiter_wait=0s error=<nil>`,
				`level=DEBUG msg="fanout attempt" key=bad attempt=1 hedge=false elapsed=500ms error=down`,
				`level=WARN msg="fanout task done" key=bad attempts=1 elapsed=500ms limiter_wait=0s error=down`,
				`level=INFO msg="fanout run done" tasks=2 succeeded=1 failed=1 skipped=0 attempts=2 hedges=0 tokens=0 cents=0 elapsed=2.5s`,
			}, "\n")+"\n", buf.String())
		})
	})
	t.Run("logs retries, hedges and rate-limiter waits", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var buf bytes.Buffer
			retried, _ := flaky("flaky", 1, errFlaky)
			slow := slowFirst("slow", 10*time.Second, time.Second)
			// One key at a time, a token every 2 s:
			//   0 s  flaky takes the first token and fails at once; retried after 1 s,
			//   1 s  it waits 1 s for the next token, and succeeds at 2 s;
			//   2 s  slow waits 2 s for a token, and starts at 4 s;
			//   9 s  it is hedged after 5 s; the copy has a token at once and wins at 10 s.
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{retried, slow},
				fanout.WithObserver(fanout.SlogObserver(logTo(&buf))), fanout.WithLimit(1),
				fanout.WithRetry(exact(2)),
				fanout.WithHedge(fanout.HedgePolicy{Delay: 5 * time.Second, MaxExtra: 1}),
				fanout.WithRateLimit(rate.NewLimiter(rate.Every(2*time.Second), 1)))
			require.NoError(t, err)
			assert.Equal(t, strings.Join([]string{
				`level=DEBUG msg="fanout rate limit wait" key=flaky attempt=1 hedge=false wait=0s error=<nil>`,
				`level=DEBUG msg="fanout attempt" key=flaky attempt=1 hedge=false elapsed=0s error=flaky`,
				`level=WARN msg="fanout retry" key=flaky attempt=1 wait=1s server_directed=false error=flaky`,
				`level=DEBUG msg="fanout rate limit wait" key=flaky attempt=2 hedge=false wait=1s error=<nil>`,
				`level=DEBUG msg="fanout attempt" key=flaky attempt=2 hedge=false elapsed=0s error=<nil>`,
				`level=INFO msg="fanout task done" key=flaky attempts=2 elapsed=2s limiter_wait=1s error=<nil>`,
				`level=DEBUG msg="fanout rate limit wait" key=slow attempt=1 hedge=false wait=2s error=<nil>`,
				`level=INFO msg="fanout hedge" key=slow attempt=1 after=5s`,
				`level=DEBUG msg="fanout rate limit wait" key=slow attempt=1 hedge=true wait=0s error=<nil>`,
				`level=DEBUG msg="fanout attempt" key=slow attempt=1 hedge=true elapsed=1s error=<nil>`,
				`level=DEBUG msg="fanout attempt" key=slow attempt=1 hedge=false elapsed=6s error="` + fanout.ErrHedgeLost.Error() + `"`,
				`level=INFO msg="fanout task done" key=slow attempts=2 elapsed=8s limiter_wait=2s error=<nil>`,
				`level=INFO msg="fanout run done" tasks=2 succeeded=2 failed=0 skipped=0 attempts=4 hedges=1 tokens=0 cents=0 elapsed=10s`,
			}, "\n")+"\n", buf.String())
		})
	})
}
