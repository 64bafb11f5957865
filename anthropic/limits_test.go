package fanoutanthropic_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// report is the headers of a response reporting one budget.
func report(name string, limit, remaining int, reset time.Time) http.Header {
	p := "Anthropic-Ratelimit-" + name
	return headers(p+"-Limit", strconv.Itoa(limit), p+"-Remaining", strconv.Itoa(remaining),
		p+"-Reset", reset.UTC().Format(time.RFC3339Nano))
}

// call is one request through l's middleware, in flight until answer is
// called with the headers of its response (nil headers: no response, a
// connection error).
type call struct {
	answer func(h http.Header)
	done   chan struct{}
}

func send(t *testing.T, l *fanoutanthropic.Limits) *call {
	t.Helper()
	c := &call{done: make(chan struct{})}
	reply := make(chan http.Header)
	c.answer = func(h http.Header) { reply <- h; <-c.done }
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://127.0.0.1/v1/messages", nil)
	require.NoError(t, err)
	go func() {
		defer close(c.done)
		l.Middleware()(req, func(*http.Request) (*http.Response, error) {
			h := <-reply
			if h == nil {
				return nil, http.ErrHandlerTimeout
			}
			return &http.Response{StatusCode: http.StatusOK, Header: h}, nil
		})
	}()
	synctest.Wait()
	return c
}

// respond is a request answered at once with h.
func respond(t *testing.T, l *fanoutanthropic.Limits, h http.Header) { send(t, l).answer(h) }

// waiter is a WaitN in its own goroutine.
type waiter struct {
	err  error
	at   time.Time
	done atomic.Bool
}

func wait(ctx context.Context, l fanout.Limiter, n int) *waiter {
	w := &waiter{}
	go func() {
		w.err = l.WaitN(ctx, n)
		w.at = time.Now()
		w.done.Store(true)
	}()
	synctest.Wait()
	return w
}

func TestLimits(t *testing.T) {
	t.Run("lets one call through until the first response", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits // the zero Limits works
			first := wait(t.Context(), &l, 500)
			second := wait(t.Context(), &l, 500)
			assert.True(t, first.done.Load())
			assert.False(t, second.done.Load(), "the second waits for the first's answer")

			c := send(t, &l)
			assert.False(t, second.done.Load(), "still in flight")
			c.answer(report("Tokens", 10_000, 9_500, time.Now().Add(time.Second)))
			synctest.Wait()
			assert.True(t, second.done.Load())
		})
	})

	t.Run("a probe that gets no answer lets the next one through", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			require.NoError(t, l.WaitN(t.Context(), 1))
			c := send(t, &l)
			second := wait(t.Context(), &l, 1)
			assert.False(t, second.done.Load())
			c.answer(nil) // a connection error: nothing learnt
			synctest.Wait()
			assert.True(t, second.done.Load())
		})
	})

	t.Run("a spent budget refills in a straight line to its reset", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			start := time.Now()
			respond(t, &l, report("Tokens", 1000, 0, start.Add(2*time.Second)))
			w := wait(t.Context(), &l, 100)
			assert.False(t, w.done.Load())
			time.Sleep(3 * time.Second)
			require.True(t, w.done.Load())
			assert.NoError(t, w.err)
			assert.WithinDuration(t, start.Add(200*time.Millisecond), w.at, time.Millisecond, "100 of 1000 refill in a tenth of 2 s")
		})
	})

	t.Run("a budget reported without its limit refills at its reset", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			start := time.Now()
			respond(t, &l, headers("Anthropic-Ratelimit-Tokens-Remaining", "0",
				"Anthropic-Ratelimit-Tokens-Reset", start.Add(2*time.Second).Format(time.RFC3339)))
			w := wait(t.Context(), &l, 100)
			time.Sleep(3 * time.Second)
			require.True(t, w.done.Load())
			assert.Equal(t, 2*time.Second, w.at.Sub(start))
		})
	})

	t.Run("counts the calls granted and in flight against the report", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			start := time.Now()
			respond(t, &l, report("Tokens", 1000, 600, start.Add(2*time.Second)))
			require.NoError(t, l.WaitN(t.Context(), 300))
			first := send(t, &l) // the first is sent, and stays in flight
			defer first.answer(nil)
			require.NoError(t, l.WaitN(t.Context(), 300))
			third := wait(t.Context(), &l, 300)
			assert.False(t, third.done.Load(), "600 of 600 are taken")

			time.Sleep(3 * time.Second)
			require.True(t, third.done.Load(), "once 300 more have refilled")
			assert.WithinDuration(t, start.Add(1500*time.Millisecond), third.at, time.Millisecond, "400 refill in 2 s")
			assert.False(t, wait(t.Context(), &l, 300).done.Load(), "but no more: 900 of 1000 are taken")
		})
	})

	t.Run("the requests budget counts one per call", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			respond(t, &l, report("Requests", 50, 2, time.Now().Add(time.Second)))
			require.NoError(t, l.WaitN(t.Context(), 10_000))
			require.NoError(t, l.WaitN(t.Context(), 10_000))
			assert.False(t, wait(t.Context(), &l, 1).done.Load())
		})
	})

	t.Run("every budget reported must have room", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			h := report("Input-Tokens", 1000, 1000, time.Now())
			for k, v := range report("Output-Tokens", 400, 0, time.Now().Add(time.Second)) {
				h[k] = v
			}
			respond(t, &l, h)
			assert.Equal(t, []string{"input-tokens", "output-tokens"}, budgetNames(l.Budgets()))
			w := wait(t.Context(), &l, 100)
			assert.False(t, w.done.Load(), "output tokens are spent")
			time.Sleep(time.Second)
			assert.True(t, w.done.Load())
		})
	})

	t.Run("the newest report is the one with the latest reset", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			now := time.Now()
			respond(t, &l, report("Tokens", 1000, 500, now.Add(2*time.Second)))
			respond(t, &l, report("Tokens", 1000, 900, now.Add(time.Second))) // admitted earlier, answered later
			assert.Equal(t, 500, l.Budgets()[0].Remaining)
			respond(t, &l, report("Tokens", 1000, 400, now.Add(2*time.Second))) // same reset, less left: later
			assert.Equal(t, 400, l.Budgets()[0].Remaining)
			respond(t, &l, report("Tokens", 1000, 700, now.Add(3*time.Second)))
			assert.Equal(t, fanoutanthropic.Budget{Name: "tokens", Limit: 1000, Remaining: 700, Reset: now.Add(3 * time.Second).UTC()},
				l.Budgets()[0])
		})
	})

	t.Run("a call larger than the budget waits for it to be full", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			start := time.Now()
			respond(t, &l, report("Tokens", 1000, 200, start.Add(time.Second)))
			w := wait(t.Context(), &l, 5000)
			time.Sleep(2 * time.Second)
			require.True(t, w.done.Load())
			assert.Equal(t, time.Second, w.at.Sub(start))
		})
	})

	t.Run("a grant whose wait's context ends is given back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			respond(t, &l, report("Tokens", 1000, 1000, time.Now().Add(time.Minute)))
			ctx, cancel := context.WithCancel(t.Context())
			require.NoError(t, l.WaitN(ctx, 1000))
			w := wait(t.Context(), &l, 1000)
			assert.False(t, w.done.Load())
			cancel() // the attempt gave up before sending its request
			synctest.Wait()
			assert.True(t, w.done.Load())
		})
	})

	t.Run("a grant never sent is given back after a minute", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			start := time.Now()
			respond(t, &l, report("Tokens", 1000, 1000, start))
			require.NoError(t, l.WaitN(t.Context(), 1000))
			w := wait(t.Context(), &l, 1000)
			time.Sleep(2 * time.Minute)
			require.True(t, w.done.Load())
			assert.Equal(t, time.Minute, w.at.Sub(start))
		})
	})

	t.Run("a response without rate-limit headers leaves calls unlimited", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			respond(t, &l, http.Header{})
			for range 10 {
				require.NoError(t, l.WaitN(t.Context(), 1_000_000))
			}
			assert.Empty(t, l.Budgets())
		})
	})

	t.Run("Pause holds every wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			respond(t, &l, http.Header{})
			start := time.Now()
			l.Pause(time.Second)
			w := wait(t.Context(), &l, 1)
			time.Sleep(2 * time.Second)
			require.True(t, w.done.Load())
			assert.GreaterOrEqual(t, w.at.Sub(start), time.Second)
			assert.LessOrEqual(t, w.at.Sub(start), 1200*time.Millisecond, "released within a fifth of the pause")
		})
	})

	t.Run("a wait ends with its context's cause", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			respond(t, &l, report("Tokens", 1000, 0, time.Now().Add(time.Hour)))
			ctx, cancel := context.WithTimeoutCause(t.Context(), time.Second, fanout.ErrRunTimeout)
			defer cancel()
			assert.ErrorIs(t, l.WaitN(ctx, 1), fanout.ErrRunTimeout)
		})
	})

	t.Run("a request seen twice by its middleware counts once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutanthropic.Limits
			respond(t, &l, report("Requests", 10, 2, time.Now().Add(time.Minute)))
			require.NoError(t, l.WaitN(t.Context(), 1))
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://127.0.0.1/v1/messages", nil)
			require.NoError(t, err)
			release := make(chan struct{})
			mw := l.Middleware()
			go mw(req, func(req *http.Request) (*http.Response, error) { // on the client, and again on the request
				return mw(req, func(*http.Request) (*http.Response, error) {
					<-release
					return nil, http.ErrHandlerTimeout
				})
			})
			synctest.Wait()
			assert.True(t, wait(t.Context(), &l, 1).done.Load(), "one request of two in flight")
			close(release)
		})
	})

	t.Run("wraps a *rate.Limiter of its own", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutanthropic.NewLimits(rate.NewLimiter(1000, 1000)) // 1 000 tokens a second
			respond(t, l, http.Header{})
			start := time.Now()
			require.NoError(t, l.WaitN(t.Context(), 1000))
			require.NoError(t, l.WaitN(t.Context(), 500))
			assert.Equal(t, 500*time.Millisecond, time.Since(start))
		})
	})

	t.Run("wraps a limiter of its own, and settles it", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			local := &ledger{}
			l := fanoutanthropic.NewLimits(local)
			require.NoError(t, l.WaitN(t.Context(), 300))
			l.Settle(300, 120)
			assert.Equal(t, 120, local.total())
		})
	})
}

func budgetNames(bs []fanoutanthropic.Budget) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Name)
	}
	return out
}

// TestLimitsKeepCallsWithinTheBudget runs a fan-out bigger than the
// fake's token budget through Limits, in real time: the calls wait for
// the budget instead of being refused, whether one run makes them or two
// runs at once share the Limits, as its doc asks of runs that spend one
// API key's budget.
func TestLimitsKeepCallsWithinTheBudget(t *testing.T) {
	for _, runs := range []int{1, 2} {
		t.Run(fmt.Sprint("runs=", runs), func(t *testing.T) {
			f := newFakeAPI()
			defer f.Close()
			f.tokens = newBucket(2_000, 500*time.Millisecond)
			f.latency = func(string, int) time.Duration { return 10 * time.Millisecond }
			client := f.client()
			limits := &fanoutanthropic.Limits{}

			tasks := make([][]fanout.Task[*anthropic.Message], runs)
			for i := range 24 {
				key := "k" + strconv.Itoa(i)
				tasks[i%runs] = append(tasks[i%runs], fanout.Task[*anthropic.Message]{Key: key, Tokens: 500,
					Do: fanoutanthropic.Message(client, ask(key, 480), fanoutanthropic.WithLimits(limits))})
			}
			start := time.Now()
			var wg sync.WaitGroup
			succeeded := make([]int, runs)
			for r := range runs {
				wg.Go(func() {
					rs, err := fanout.Run(t.Context(), tasks[r], fanout.WithRateLimit(limits),
						fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 4}))
					assert.NoError(t, err)
					succeeded[r] = rs.Succeeded()
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			hits, tooMany, _ := f.count()
			t.Logf("24 calls in %d runs, %v: %d hits, %d 429s", runs, elapsed, hits, tooMany)
			for r := range runs {
				assert.Equal(t, 24/runs, succeeded[r], "run %d", r)
			}
			assert.LessOrEqual(t, tooMany, 1)
			// 12 000 tokens through a bucket of 2 000 refilled at 4 000 a
			// second take 2.5 s at the least.
			assert.GreaterOrEqual(t, elapsed, 2500*time.Millisecond)
			assert.Less(t, elapsed, 5*time.Second)
		})
	}
}
