package fanout_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
)

// starts records when each call of a task began, relative to the test's
// start.
type starts struct {
	mu    sync.Mutex
	begin time.Time
	at    map[string][]time.Duration
}

func newStarts() *starts { return &starts{begin: time.Now(), at: map[string][]time.Duration{}} }

func (s *starts) task(key string, tokens int, do func(n int) error) fanout.Task[int] {
	return fanout.Task[int]{Key: key, Tokens: tokens, Do: func(context.Context) (int, error) {
		s.mu.Lock()
		s.at[key] = append(s.at[key], time.Since(s.begin))
		n := len(s.at[key])
		s.mu.Unlock()
		return n, do(n)
	}}
}

func (s *starts) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []time.Duration
	for _, at := range s.at {
		all = append(all, at...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return all
}

func ok(int) error { return nil }

func TestRateLimit(t *testing.T) {
	t.Run("a rate never admits more than the bucket allows", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const r, burst = 10, 5
			s := newStarts()
			tasks := make([]fanout.Task[int], 100)
			for i := range tasks {
				tasks[i] = s.task(fmt.Sprint(i), 0, ok)
			}
			_, err := fanout.Run(context.Background(), tasks, fanout.WithRateLimit(rate.NewLimiter(r, burst)))
			require.NoError(t, err)
			all := s.all()
			require.Len(t, all, 100)
			// In any window of length w, at most burst + r*w starts.
			for i := range all {
				for j := i; j < len(all); j++ {
					w := (all[j] - all[i]).Seconds()
					assert.LessOrEqual(t, float64(j-i+1), burst+r*w+1e-6, "starts %d..%d in %.2fs", i, j, w)
				}
			}
			assert.Equal(t, 9500*time.Millisecond, all[99], "95 tokens beyond the burst at 10/s")
		})
	})
	t.Run("charges Task.Tokens, and WithRequestLimit charges 1", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newStarts()
			tasks := []fanout.Task[int]{s.task("a", 50, ok), s.task("b", 50, ok), s.task("c", 50, ok), s.task("d", 50, ok)}
			tpm := rate.NewLimiter(100, 100) // tokens per second
			rpm := rate.NewLimiter(2, 1)     // requests per second
			var seen time.Duration
			obs := &fanout.Observer{AttemptStart: func(ctx context.Context, a fanout.AttemptInfo) context.Context {
				seen += a.LimiterWait
				return ctx
			}}
			rs, err := fanout.Run(context.Background(), tasks, fanout.WithRateLimit(tpm), fanout.WithRequestLimit(rpm),
				fanout.WithLimit(1), fanout.WithObserver(obs))
			require.NoError(t, err)
			// Requests allow one each 500ms; tokens allow 50 each 500ms
			// once the first 100 are spent.
			assert.Equal(t, []time.Duration{0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond}, s.all())
			var waited time.Duration
			for _, r := range rs.All() {
				waited += r.LimiterWait
			}
			assert.Equal(t, 1500*time.Millisecond, waited)
			assert.Equal(t, waited, seen, "each attempt tells its observer how long it waited")
		})
	})
	t.Run("more tokens than the burst are refused before any task starts", func(t *testing.T) {
		s := newStarts()
		rs, err := fanout.Run(context.Background(), []fanout.Task[int]{s.task("small", 1, ok), s.task("big", 10, ok)},
			fanout.WithRateLimit(rate.NewLimiter(1, 5)))
		assert.EqualError(t, err, `fanout: task "big": charge of 10 exceeds the burst 5 of the limiter of WithRateLimit`)
		assert.Nil(t, rs)
		assert.Empty(t, s.at, "no task may start")
	})
	t.Run("a lazy source's task with more tokens than the burst fails alone", func(t *testing.T) {
		s := newStarts()
		seq, err := fanout.StreamSeq(context.Background(), slices.Values([]fanout.Task[int]{s.task("big", 10, ok), s.task("small", 1, ok)}),
			fanout.WithLimit(1), fanout.WithRateLimit(rate.NewLimiter(1, 5)))
		require.NoError(t, err)
		got := map[string]error{}
		for r := range seq {
			got[r.Key] = r.Err
		}
		assert.EqualError(t, got["big"], `fanout: task "big": charge of 10 exceeds the burst 5 of the limiter of WithRateLimit`)
		assert.NoError(t, got["small"])
		assert.Empty(t, s.at["big"])
	})
	t.Run("a limiter wait ends with the run", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newStarts()
			lim := rate.NewLimiter(rate.Every(time.Hour), 1)
			rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{s.task("a", 0, ok), s.task("b", 0, ok)},
				fanout.WithRateLimit(lim), fanout.WithTimeout(time.Second))
			var failed int
			for _, r := range rs.All() {
				if r.Err != nil {
					failed++
					assert.EqualError(t, r.Err, "fanout: run timed out: rate limiter: rate: Wait(n=1) would exceed context deadline")
					assert.ErrorIs(t, r.Err, fanout.ErrRunTimeout, "the limiter refused a wait past the run's deadline")
				}
			}
			assert.Equal(t, 1, failed)
		})
	})
	t.Run("a refusal for the caller's deadline is DeadlineExceeded", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newStarts()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			lim := fanout.NewThrottle(rate.NewLimiter(rate.Every(time.Hour), 1))
			rs, _ := fanout.Run(ctx, []fanout.Task[int]{s.task("a", 0, ok), s.task("b", 0, ok)},
				fanout.WithRateLimit(lim), fanout.WithLimit(1), fanout.WithTimeout(time.Hour))
			b, _ := rs.Get("b")
			assert.ErrorIs(t, b.Err, context.DeadlineExceeded)
			assert.NotErrorIs(t, b.Err, fanout.ErrRunTimeout, "the caller's deadline came first")
		})
	})
}

func TestCooldown(t *testing.T) {
	busy := &fanout.HTTPError{StatusCode: 429, Status: "429 Too Many Requests", Delay: 5 * time.Second}
	t.Run("a server-directed delay pauses every new start on the limiter", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newStarts()
			hit := s.task("hit", 0, func(n int) error {
				if n == 1 {
					time.Sleep(100 * time.Millisecond) // slow has started by now
					return busy
				}
				return nil
			})
			slow := s.task("slow", 0, func(int) error { time.Sleep(time.Second); return nil })
			next := s.task("next", 0, ok)
			rs, err := fanout.Run(context.Background(), []fanout.Task[int]{hit, slow, next},
				fanout.WithRateLimit(fanout.NewThrottle(rate.NewLimiter(rate.Inf, 1))), fanout.WithRetry(exact(3)), fanout.WithLimit(2))
			require.NoError(t, err)
			// The cooldown ends at 5.1s and releases its waiters over the
			// next fifth of the pause.
			require.Len(t, s.at["hit"], 2)
			assertReleased(t, s.at["hit"][1], 5100*time.Millisecond, time.Second)
			require.Len(t, s.at["next"], 1, "next got slow's slot at 1s, then waited out the cooldown")
			assertReleased(t, s.at["next"][0], 5100*time.Millisecond, time.Second)
			r, _ := rs.Get("next")
			assert.Equal(t, s.at["next"][0]-time.Second, r.LimiterWait)
		})
	})
	t.Run("a shared Throttle pauses other runs", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			shared := fanout.NewThrottle(rate.NewLimiter(rate.Inf, 1))
			s := newStarts()
			var wg sync.WaitGroup
			wg.Go(func() {
				hit := s.task("hit", 0, func(n int) error {
					if n == 1 {
						return busy
					}
					return nil
				})
				_, err := fanout.Run(context.Background(), []fanout.Task[int]{hit}, fanout.WithRateLimit(shared), fanout.WithRetry(exact(2)))
				assert.NoError(t, err)
			})
			wg.Go(func() {
				time.Sleep(2 * time.Second)
				_, err := fanout.Run(context.Background(), []fanout.Task[int]{s.task("other", 0, ok)}, fanout.WithRateLimit(shared))
				assert.NoError(t, err)
			})
			wg.Wait()
			require.Len(t, s.at["other"], 1)
			assertReleased(t, s.at["other"][0], 5*time.Second, time.Second)
		})
	})
	t.Run("a plain limiter has no cooldown", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newStarts()
			hit := s.task("hit", 0, func(n int) error {
				if n == 1 {
					return busy
				}
				return nil
			})
			other := s.task("other", 0, func(int) error { return nil })
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{hit, other},
				fanout.WithRateLimit(rate.NewLimiter(rate.Inf, 1)), fanout.WithRetry(exact(3)), fanout.WithLimit(1))
			require.NoError(t, err)
			assert.Equal(t, []time.Duration{5 * time.Second}, s.at["other"], "other waited for hit's retry, not for a cooldown")
			assert.Equal(t, []time.Duration{0, 5 * time.Second}, s.at["hit"])
		})
	})
	t.Run("a delay longer than MaxWait gives up without pausing anyone", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			th := fanout.NewThrottle(nil)
			long := &fanout.HTTPError{StatusCode: 429, Status: "429 Too Many Requests", Delay: time.Hour}
			s := newStarts()
			quota := s.task("quota", 0, func(int) error { return long })
			next := s.task("next", 0, ok)
			rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{quota, next}, fanout.WithRateLimit(th),
				fanout.WithRetry(exact(3)), fanout.WithLimit(1))
			r, _ := rs.Get("quota")
			assert.Equal(t, 1, r.Attempts)
			assert.Equal(t, []time.Duration{0}, s.at["next"])
		})
	})
	t.Run("without WithRetry a server-directed delay still pauses the Throttle", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			th := fanout.NewThrottle(nil)
			s := newStarts()
			hit := s.task("hit", 0, func(int) error { return busy })
			next := s.task("next", 0, ok)
			_, _ = fanout.Run(context.Background(), []fanout.Task[int]{hit, next}, fanout.WithRateLimit(th), fanout.WithLimit(1))
			require.Len(t, s.at["next"], 1)
			assertReleased(t, s.at["next"][0], 5*time.Second, time.Second)
		})
	})
	t.Run("a Throttle with no limiter is a cooldown alone", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			th := fanout.NewThrottle(nil)
			start := time.Now()
			require.NoError(t, th.WaitN(context.Background(), 1))
			th.Pause(3 * time.Second)
			th.Pause(time.Second) // an earlier end does not shorten it
			require.NoError(t, th.WaitN(context.Background(), 1))
			assertReleased(t, time.Since(start), 3*time.Second, 600*time.Millisecond)
		})
	})
}

// assertReleased checks that a waiter of a cooldown ending at end was
// released within the window after it.
func assertReleased(t *testing.T, at, end, window time.Duration) {
	t.Helper()
	assert.GreaterOrEqual(t, at, end, "released before the cooldown ended")
	assert.Less(t, at, end+window, "released after the release window")
}
