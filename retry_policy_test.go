package fanout_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"

	"github.com/gofanout/fanout"
)

// schedule is a BackOff of its own: it returns its waits in turn, then the
// last one forever.
type schedule struct {
	waits []time.Duration
	next  int
}

func (s *schedule) NextBackOff() time.Duration {
	d := s.waits[min(s.next, len(s.waits)-1)]
	s.next++
	return d
}

func (s *schedule) Reset() { s.next = 0 }

func TestRetryPolicyNewBackOff(t *testing.T) {
	tests := []struct {
		name string
		give func() fanout.BackOff
		want []time.Duration
	}{
		{
			name: "a backoff v4 exponential schedule",
			give: func() fanout.BackOff {
				return backoff.NewExponentialBackOff(backoff.WithInitialInterval(time.Second),
					backoff.WithMultiplier(3), backoff.WithRandomizationFactor(0), backoff.WithMaxElapsedTime(0))
			},
			want: []time.Duration{0, time.Second, 4 * time.Second, 13 * time.Second},
		},
		{
			name: "a schedule of its own",
			give: func() fanout.BackOff { return &schedule{waits: []time.Duration{2 * time.Second, time.Second}} },
			want: []time.Duration{0, 2 * time.Second, 3 * time.Second, 4 * time.Second},
		},
		{
			name: "backoff.Stop ends the retries",
			give: func() fanout.BackOff { return &schedule{waits: []time.Duration{time.Second, backoff.Stop}} },
			want: []time.Duration{0, time.Second},
		},
		{
			name: "any negative wait ends the retries",
			give: func() fanout.BackOff { return &schedule{waits: []time.Duration{-time.Second}} },
			want: []time.Duration{0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				task, log := flaky("k", 1, errFlaky, errFlaky, errFlaky, errFlaky)
				p := fanout.RetryPolicy{MaxAttempts: 4, NewBackOff: tt.give}
				_, err := fanout.Run(context.Background(), []fanout.Task[int]{task}, fanout.WithRetry(p))
				assert.ErrorIs(t, err, errFlaky)
				assert.Equal(t, tt.want, log.times())
			})
		})
	}
}

// verdict is an error that says itself whether to retry it.
type verdict struct{ retry bool }

func (v verdict) Error() string   { return "sdk: verdict" }
func (v verdict) Retryable() bool { return v.retry }
func (v verdict) StatusCode() int { return 400 }

func TestRetryableAsksTheErrorFirst(t *testing.T) {
	assert.True(t, fanout.Retryable(fmt.Errorf("call: %w", verdict{retry: true})), "x-should-retry: true over a 400")
	assert.False(t, fanout.Retryable(verdict{retry: false}))
	assert.False(t, fanout.Retryable(fmt.Errorf("x: %w", backoff.Permanent(verdict{retry: true}))), "a permanent error stays permanent")
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	h := http.Header{}
	assert.Zero(t, fanout.ParseRetryAfter(h, now))
	h.Set("Retry-After", "3")
	assert.Equal(t, 3*time.Second, fanout.ParseRetryAfter(h, now))
	h.Set("Retry-After-Ms", "250")
	assert.Equal(t, 250*time.Millisecond, fanout.ParseRetryAfter(h, now), "the finer header first")
	h = http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}
	assert.Equal(t, 90*time.Second, fanout.ParseRetryAfter(h, now))
}
