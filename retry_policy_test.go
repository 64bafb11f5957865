package fanout_test

import (
	"context"
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
