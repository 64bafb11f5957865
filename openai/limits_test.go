package fanoutopenai_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutopenai "github.com/gofanout/fanout/openai"
)

// tokenHeaders are the x-ratelimit-* headers of a response: plenty of
// requests, and limit tokens of which left remain until reset.
func tokenHeaders(limit, left int, reset time.Duration) http.Header {
	h := http.Header{}
	h.Set("X-Ratelimit-Limit-Requests", "10000")
	h.Set("X-Ratelimit-Remaining-Requests", "9999")
	h.Set("X-Ratelimit-Reset-Requests", "6ms")
	h.Set("X-Ratelimit-Limit-Tokens", strconv.Itoa(limit))
	h.Set("X-Ratelimit-Remaining-Tokens", strconv.Itoa(left))
	h.Set("X-Ratelimit-Reset-Tokens", reset.String())
	return h
}

// waited is how long l.WaitN(ctx, n) took, in the bubble's time.
func waited(t *testing.T, l *fanoutopenai.Limits, n int) time.Duration {
	t.Helper()
	start := time.Now()
	require.NoError(t, l.WaitN(context.Background(), n))
	return time.Since(start)
}

func TestLimits(t *testing.T) {
	t.Run("until the server speaks every request goes through", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var l fanoutopenai.Limits // the zero value is ready
			for range 100 {
				assert.Zero(t, waited(t, &l, 1_000_000))
			}
		})
	})
	t.Run("requests sent before the server spoke, that it has not seen yet, are counted", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			for range 4 {
				assert.Zero(t, waited(t, l, 100))
			}
			h := tokenHeaders(1000, 800, time.Second) // two of the four have arrived
			h.Set("X-Ratelimit-Limit-Requests", "100")
			h.Set("X-Ratelimit-Remaining-Requests", "98")
			l.Observe(h)
			assert.Zero(t, waited(t, l, 600), "800 left, less the 200 on their way")
			assert.Equal(t, time.Second, waited(t, l, 1))
		})
	})
	t.Run("a spent budget makes every waiter wait for its reset", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 0, time.Second))
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() { assert.Equal(t, time.Second, waited(t, l, 300)) })
			}
			wg.Wait()
		})
	})
	t.Run("grants count against what the server said is left, until the reset", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 1000, time.Second))
			assert.Zero(t, waited(t, l, 400))
			assert.Zero(t, waited(t, l, 400))
			assert.Equal(t, time.Second, waited(t, l, 400), "800 of 1000 taken")
		})
	})
	t.Run("a spent request budget holds back the smallest request", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			h := tokenHeaders(1000, 1000, time.Second)
			h.Set("X-Ratelimit-Remaining-Requests", "0")
			h.Set("X-Ratelimit-Reset-Requests", "500ms")
			l.Observe(h)
			assert.Equal(t, 500*time.Millisecond, waited(t, l, 1))
		})
	})
	t.Run("the budget is whole again every window after the last reset", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 0, time.Second))
			assert.Equal(t, time.Second, waited(t, l, 1000))
			assert.Equal(t, time.Second, waited(t, l, 1000), "the next window, with no word from the server")
		})
	})
	t.Run("a response only lowers what is left within a window", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 1000, time.Second))
			assert.Zero(t, waited(t, l, 400))
			l.Observe(tokenHeaders(1000, 900, 900*time.Millisecond)) // sent before the 400 arrived
			assert.Zero(t, waited(t, l, 600))
			assert.Equal(t, time.Second, waited(t, l, 1))
			l.Observe(tokenHeaders(1000, 100, time.Second)) // someone else spends from the same key
			assert.Equal(t, time.Second, waited(t, l, 200))
		})
	})
	t.Run("a late response from a window that has passed is ignored", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 0, time.Second))
			assert.Equal(t, time.Second, waited(t, l, 400))
			l.Observe(tokenHeaders(1000, 0, 5*time.Millisecond)) // written just before the reset
			assert.Zero(t, waited(t, l, 600), "600 of the new window are left")
		})
	})
	t.Run("a pause holds every waiter", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Pause(2 * time.Second)
			l.Pause(time.Second) // a shorter pause does not cut the longer one
			assert.Equal(t, 2*time.Second, waited(t, l, 1))
		})
	})
	t.Run("a request larger than the whole budget is refused at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 1000, time.Second))
			assert.EqualError(t, l.WaitN(context.Background(), 1001),
				"openai: Limits.WaitN(n=1001): more than the server's whole budget of 1000 tokens")
		})
	})
	t.Run("a wait past the context's deadline is refused at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 0, time.Minute))
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			assert.ErrorContains(t, l.WaitN(ctx, 10), "past the context deadline")
			assert.Zero(t, time.Since(start))
		})
	})
	t.Run("a cancelled wait returns the context's cause", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 0, time.Minute))
			cause := errors.New("user left")
			ctx, cancel := context.WithCancelCause(context.Background())
			time.AfterFunc(time.Second, func() { cancel(cause) })
			assert.ErrorIs(t, l.WaitN(ctx, 10), cause)
		})
	})
	t.Run("Settle takes what a call used beyond its charge, and gives nothing back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := fanoutopenai.NewLimits()
			l.Observe(tokenHeaders(1000, 1000, time.Second))
			assert.Zero(t, waited(t, l, 300))
			l.Settle(300, 0)   // rejected: the server counted it all the same
			l.Settle(300, 100) // used less: same
			l.Settle(300, 500) // used more: 200 more are gone
			assert.Zero(t, waited(t, l, 500))
			assert.Equal(t, time.Second, waited(t, l, 1), "300 + 200 + 500 of 1000 taken")
		})
	})
}

// windowServer is an in-process model of the API's fixed-window token
// budget, for runs in a synctest bubble.
type windowServer struct {
	mu       sync.Mutex
	start    time.Time
	window   time.Duration
	limit    int
	index    int64
	used     int
	rejected int
}

// call serves a request of n tokens after service, and returns the
// headers of its answer and whether it was admitted.
func (s *windowServer) call(n int, service time.Duration) (http.Header, bool) {
	s.mu.Lock()
	s.roll()
	ok := s.used+n <= s.limit
	if ok {
		s.used += n
	} else {
		s.rejected++
	}
	s.mu.Unlock()
	time.Sleep(service)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roll()
	left := time.Until(s.start.Add(time.Duration(s.index+1) * s.window))
	return tokenHeaders(s.limit, s.limit-s.used, left), ok
}

func (s *windowServer) roll() {
	if i := int64(time.Since(s.start) / s.window); i != s.index {
		s.index, s.used = i, 0
	}
}

func TestLimitsInARun(t *testing.T) {
	t.Run("tasks wait for the resets the headers announce instead of meeting 429s", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv := &windowServer{start: time.Now(), window: time.Second, limit: 1000}
			l := fanoutopenai.NewLimits()
			tasks := make([]fanout.Task[int], 10)
			for i := range tasks {
				tasks[i] = fanout.Task[int]{Key: strconv.Itoa(i), Tokens: 300, Do: func(ctx context.Context) (int, error) {
					h, ok := srv.call(300, 10*time.Millisecond)
					l.Observe(h)
					if !ok {
						return 0, &fanout.HTTPError{StatusCode: 429, Status: "429 Too Many Requests"}
					}
					return 300, nil
				}}
			}
			start := time.Now()
			_, err := fanout.Run(context.Background(), tasks, fanout.WithLimit(3), fanout.WithRateLimit(l),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 4}))
			require.NoError(t, err)
			assert.Zero(t, srv.rejected)
			// three of 300 tokens fit in each window of 1000: four windows.
			assert.Equal(t, 3*time.Second+10*time.Millisecond, time.Since(start))
		})
	})
}

func TestLimitsMiddleware(t *testing.T) {
	api := newFakeAPI(t)
	api.setBudget(200, 100, time.Minute)
	l := fanoutopenai.NewLimits()
	client := api.client(option.WithMiddleware(l.Middleware()))
	_, err := client.Chat.Completions.New(context.Background(), params("a"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	assert.NoError(t, l.WaitN(ctx, 96), "104 of 200 spent")
	assert.ErrorContains(t, l.WaitN(ctx, 1), "past the context deadline", "the rest waits for the reset, a minute away")
}
