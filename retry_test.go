package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

// flaky returns a task that fails with errs[i] on its i-th call, and
// succeeds with v once errs runs out. It records when each call started.
func flaky(key string, v int, errs ...error) (fanout.Task[int], *callLog) {
	log := &callLog{start: time.Now()}
	return fanout.Task[int]{Key: key, Do: func(ctx context.Context) (int, error) {
		n := log.add()
		if n < len(errs) {
			return 0, errs[n]
		}
		return v, nil
	}}, log
}

type callLog struct {
	mu    sync.Mutex
	start time.Time
	at    []time.Duration
}

func (l *callLog) add() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.at = append(l.at, time.Since(l.start))
	return len(l.at) - 1
}

func (l *callLog) times() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Duration(nil), l.at...)
}

var errFlaky = errors.New("flaky")

// exact is a policy with no jitter, so waits are exact.
func exact(max int) fanout.RetryPolicy {
	return fanout.RetryPolicy{MaxAttempts: max, InitialInterval: time.Second, Multiplier: 2, Jitter: -1}
}

func TestRetry(t *testing.T) {
	t.Run("waits what the backoff says and stops at the attempt cap", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			task, log := flaky("k", 1, errFlaky, errFlaky, errFlaky, errFlaky, errFlaky)
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(exact(4)))
			assert.ErrorIs(t, err, errFlaky)
			assert.Equal(t, []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second}, log.times())
			r, _ := rs.Get("k")
			assert.Equal(t, 4, r.Attempts)
			assert.Equal(t, 7*time.Second, r.Elapsed)
		})
	})
	t.Run("succeeds on a later attempt", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			task, log := flaky("k", 42, errFlaky)
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(exact(3)))
			require.NoError(t, err)
			r, _ := rs.Get("k")
			assert.Equal(t, 42, r.Value)
			assert.Equal(t, 2, r.Attempts)
			assert.Len(t, log.times(), 2)
		})
	})
	t.Run("MaxWait caps a single wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			task, log := flaky("k", 1, errFlaky, errFlaky, errFlaky)
			p := exact(4)
			p.Multiplier, p.MaxWait = 10, 5*time.Second
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(p))
			require.NoError(t, err)
			assert.Equal(t, []time.Duration{0, time.Second, 6 * time.Second, 11 * time.Second}, log.times())
		})
	})
	t.Run("a server-directed delay sets the next wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			busy := &fanout.HTTPError{StatusCode: 429, Status: "429 Too Many Requests", Delay: 7 * time.Second}
			task, log := flaky("k", 1, busy, errFlaky)
			var retries []fanout.RetryInfo
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(exact(3)),
				fanout.WithObserver(&fanout.Observer{Retry: func(_ context.Context, r fanout.RetryInfo) { retries = append(retries, r) }}))
			require.NoError(t, err)
			assert.Equal(t, []time.Duration{0, 7 * time.Second, 8 * time.Second}, log.times(),
				"7s as the server said, then the backoff's first wait of 1s")
			require.Len(t, retries, 2)
			assert.True(t, retries[0].ServerDirected)
			assert.Equal(t, 7*time.Second, retries[0].Wait)
			assert.False(t, retries[1].ServerDirected)
		})
	})
	t.Run("a server-directed delay beyond MaxWait ends the retries", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			busy := &fanout.HTTPError{StatusCode: 429, Status: "429 Too Many Requests", Delay: time.Minute}
			task, log := flaky("k", 1, busy)
			p := exact(3)
			p.MaxWait = 10 * time.Second
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(p))
			var he *fanout.HTTPError
			require.ErrorAs(t, err, &he)
			assert.Equal(t, time.Minute, he.RetryAfter())
			assert.Len(t, log.times(), 1)
		})
	})
	t.Run("a wait cut short by the context reports the cause and the last error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			task, log := flaky("k", 1, errFlaky, errFlaky)
			p := exact(3)
			p.InitialInterval = 10 * time.Second
			start := time.Now()
			rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(p), fanout.WithTimeout(3*time.Second))
			assert.Equal(t, 3*time.Second, time.Since(start), "the wait ends with the run, not after 10s")
			r, _ := rs.Get("k")
			assert.ErrorIs(t, r.Err, fanout.ErrRunTimeout)
			assert.ErrorIs(t, r.Err, errFlaky)
			assert.EqualError(t, r.Err, "fanout: run timed out; last attempt: flaky")
			assert.Len(t, log.times(), 1)
		})
	})
	t.Run("what is not retried by default", func(t *testing.T) {
		tests := []struct {
			name string
			give error
		}{
			{"permanent", backoff.Permanent(errFlaky)},
			{"a 404 from CheckResponse", checkStatus(t, http.StatusNotFound)},
			{"context canceled", context.Canceled},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					task, log := flaky("k", 1, tt.give)
					_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(exact(3)))
					assert.ErrorIs(t, err, tt.give)
					assert.Len(t, log.times(), 1)
				})
			})
		}
		t.Run("panic", func(t *testing.T) {
			var calls atomic.Int32
			rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "k", Do: func(context.Context) (int, error) {
				calls.Add(1)
				panic("bug")
			}}}, fanout.WithRetry(exact(3)))
			assert.Equal(t, int32(1), calls.Load())
			assert.Equal(t, 1, rs.All()[0].Attempts)
		})
	})
	t.Run("a per-task timeout is retried", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var calls atomic.Int32
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "k", Do: func(ctx context.Context) (int, error) {
				if calls.Add(1) == 1 {
					<-ctx.Done()
					return 0, ctx.Err()
				}
				return 5, nil
			}}}, fanout.WithRetry(exact(3)), fanout.WithTaskTimeout(2*time.Second))
			require.NoError(t, err)
			assert.Equal(t, 2, rs.All()[0].Attempts)
			assert.Equal(t, 3*time.Second, rs.All()[0].Elapsed, "2s timeout, then a 1s wait")
		})
	})
	t.Run("RetryIf decides", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			task, log := flaky("k", 1, errFlaky)
			p := exact(3)
			p.RetryIf = func(err error) bool { return !errors.Is(err, errFlaky) }
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(p))
			assert.ErrorIs(t, err, errFlaky)
			assert.Len(t, log.times(), 1)
		})
	})
	t.Run("RetryIf can refine the default", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			task, log := flaky("k", 1, fmt.Errorf("wrapped: %w", fanout.ErrTaskTimeout), backoff.Permanent(errFlaky))
			p := exact(5)
			p.RetryIf = func(err error) bool { return fanout.Retryable(err) && !errors.Is(err, errFlaky) }
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(p))
			assert.ErrorIs(t, err, errFlaky)
			assert.Len(t, log.times(), 2, "the timeout was retried, the permanent error was not")
		})
	})
	t.Run("NewBackOff makes a fresh schedule per task", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var made atomic.Int32
			p := fanout.RetryPolicy{MaxAttempts: 3, NewBackOff: func() fanout.BackOff {
				made.Add(1)
				return backoff.NewConstantBackOff(500 * time.Millisecond)
			}}
			tasks := make([]fanout.Task[int], 20)
			logs := make([]*callLog, 20)
			for i := range tasks {
				tasks[i], logs[i] = flaky(fmt.Sprint(i), i, errFlaky, errFlaky)
			}
			_, err := fanout.Run(context.Background(), tasks, fanout.WithRetry(p))
			require.NoError(t, err)
			assert.Equal(t, int32(20), made.Load())
			for _, l := range logs {
				assert.Equal(t, []time.Duration{0, 500 * time.Millisecond, time.Second}, l.times())
			}
		})
	})
	t.Run("the default schedule jitters around the exponential one", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			task, log := flaky("k", 1, errFlaky, errFlaky)
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(fanout.RetryPolicy{}))
			require.NoError(t, err)
			at := log.times()
			require.Len(t, at, 3)
			assert.InDelta(t, 100*time.Millisecond, at[1], float64(50*time.Millisecond))
			assert.InDelta(t, 200*time.Millisecond, at[2]-at[1], float64(100*time.Millisecond))
		})
	})
}

// checkStatus returns CheckResponse's error for a bare response.
func checkStatus(t *testing.T, code int) error {
	err := fanout.CheckResponse(&http.Response{StatusCode: code, Header: http.Header{}})
	require.Error(t, err)
	return err
}

func TestCheckResponse(t *testing.T) {
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name      string
		code      int
		header    http.Header
		wantDelay time.Duration
		permanent bool
	}{
		{"ok", 200, nil, 0, false},
		{"seconds", 429, http.Header{"Retry-After": {"3"}}, 3 * time.Second, false},
		{"milliseconds win", 429, http.Header{"Retry-After": {"3"}, "Retry-After-Ms": {"1500"}}, 1500 * time.Millisecond, false},
		{"http date", 503, http.Header{"Retry-After": {date}}, 89 * time.Second, false},
		{"garbage", 503, http.Header{"Retry-After": {"soon"}}, 0, false},
		{"negative", 503, http.Header{"Retry-After": {"-5"}}, 0, false},
		{"not a number", 503, http.Header{"Retry-After": {"NaN"}}, 0, false},
		{"too long for a Duration", 429, http.Header{"Retry-After": {"99999999999"}}, math.MaxInt64, false},
		{"infinite", 429, http.Header{"Retry-After": {"inf"}}, math.MaxInt64, false},
		{"milliseconds too long", 429, http.Header{"Retry-After-Ms": {"1e300"}}, math.MaxInt64, false},
		{"not found", 404, nil, 0, true},
		{"overloaded", 529, http.Header{"Retry-After": {"2"}}, 2 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			err := fanout.CheckResponse(&http.Response{StatusCode: tt.code, Header: h})
			if tt.code < 400 {
				assert.NoError(t, err)
				return
			}
			var he *fanout.HTTPError
			require.ErrorAs(t, err, &he)
			assert.Equal(t, tt.code, he.StatusCode)
			assert.InDelta(t, tt.wantDelay, he.RetryAfter(), float64(time.Second))
			var perm *backoff.PermanentError
			assert.Equal(t, tt.permanent, errors.As(err, &perm))
		})
	}
}

// TestRetryAgainstHTTPServer runs against a real server on 127.0.0.1 that
// answers 429 with a short Retry-After twice before it answers 200.
func TestRetryAgainstHTTPServer(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) <= 2 {
			w.Header().Set("Retry-After-Ms", "20")
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		fmt.Fprint(w, "hello")
	}))
	defer srv.Close()

	var waits []time.Duration
	get := func(ctx context.Context) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		if err != nil {
			return "", err
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if err := fanout.CheckResponse(resp); err != nil {
			return "", err
		}
		return "ok", nil
	}
	rs, err := fanout.Run(context.Background(), []fanout.Task[string]{{Key: "api", Do: get}},
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 5}),
		fanout.WithObserver(&fanout.Observer{Retry: func(_ context.Context, r fanout.RetryInfo) { waits = append(waits, r.Wait) }}))
	require.NoError(t, err)
	assert.Equal(t, 3, rs.All()[0].Attempts)
	require.Len(t, waits, 2)
	for _, w := range waits {
		// What the server asked, plus a spread of up to a fifth of it.
		assert.GreaterOrEqual(t, w, 20*time.Millisecond)
		assert.Less(t, w, 24*time.Millisecond)
	}
	assert.Equal(t, int32(3), hits.Load())
}

// TestRetryWaitKeepsTheSlot: a task waiting to retry still counts under
// each concurrency bound, so the next task starts only once it has ended.
func TestRetryWaitKeepsTheSlot(t *testing.T) {
	bounds := map[string]func() []fanout.Option{
		"WithLimit":         func() []fanout.Option { return []fanout.Option{fanout.WithLimit(1)} },
		"WithSemaphore":     func() []fanout.Option { return []fanout.Option{fanout.WithSemaphore(fanout.NewSemaphore(1))} },
		"WithResourceLimit": func() []fanout.Option { return []fanout.Option{fanout.WithResourceLimit(1)} },
	}
	for name, opts := range bounds {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var tries int
				var bStarted time.Duration
				tasks := []fanout.Task[int]{
					{Key: "a", Resource: "api", Do: func(context.Context) (int, error) {
						if tries++; tries == 1 {
							return 0, errors.New("flaky")
						}
						return 1, nil
					}},
					{Key: "b", Resource: "api", Do: func(context.Context) (int, error) {
						bStarted = time.Since(start)
						return 2, nil
					}},
				}
				policy := fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Second, Jitter: -1}
				rs, err := fanout.Run(t.Context(), tasks, append(opts(), fanout.WithRetry(policy))...)
				require.NoError(t, err)
				a, _ := rs.Get("a")
				assert.Equal(t, 2, a.Attempts)
				assert.Equal(t, time.Second, bStarted, "b waited for a's retry")
			})
		})
	}
}
