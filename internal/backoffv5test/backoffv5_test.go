package backoffv5test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gofanout/fanout"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errFlaky = errors.New("flaky")

// failing returns a task that fails with errs[i] on its i-th call and
// succeeds once errs runs out, and counts its calls.
func failing(errs ...error) (fanout.Task[string], *atomic.Int32) {
	var calls atomic.Int32
	return fanout.Task[string]{Key: "k", Do: func(context.Context) (string, error) {
		if n := int(calls.Add(1)) - 1; n < len(errs) {
			return "", errs[n]
		}
		return "done", nil
	}}, &calls
}

func TestV5PermanentIsTriedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		task, calls := failing(backoff.Permanent(errFlaky))
		_, err := fanout.Run(context.Background(), []fanout.Task[string]{task},
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 5}))
		assert.ErrorIs(t, err, errFlaky)
		assert.Equal(t, int32(1), calls.Load())
		assert.False(t, fanout.Retryable(backoff.Permanent(errFlaky)))
	})
}

func TestV5RetryAfterSetsTheWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		task, calls := failing(&backoff.RetryAfterError{Duration: 2 * time.Second})
		var retries []fanout.RetryInfo
		start := time.Now()
		rs, err := fanout.Run(context.Background(), []fanout.Task[string]{task},
			fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, Jitter: -1}),
			fanout.WithObserver(&fanout.Observer{Retry: func(_ context.Context, r fanout.RetryInfo) { retries = append(retries, r) }}))
		require.NoError(t, err)
		assert.Equal(t, 2*time.Second, time.Since(start))
		assert.Equal(t, "done", rs.All()[0].Value)
		assert.Equal(t, int32(2), calls.Load())
		require.Len(t, retries, 1)
		assert.True(t, retries[0].ServerDirected)
	})
}

func TestV5ExponentialBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		task, calls := failing(errFlaky, errFlaky)
		p := fanout.RetryPolicy{MaxAttempts: 3, NewBackOff: func() fanout.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval, b.Multiplier, b.RandomizationFactor = time.Second, 3, 0
			return b
		}}
		start := time.Now()
		_, err := fanout.Run(context.Background(), []fanout.Task[string]{task}, fanout.WithRetry(p))
		require.NoError(t, err)
		assert.Equal(t, 4*time.Second, time.Since(start), "a wait of 1s, then 3s")
		assert.Equal(t, int32(3), calls.Load())
	})
}

func TestV5StopBackOffEndsTheRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		task, calls := failing(errFlaky)
		p := fanout.RetryPolicy{MaxAttempts: 3, NewBackOff: func() fanout.BackOff { return &backoff.StopBackOff{} }}
		_, err := fanout.Run(context.Background(), []fanout.Task[string]{task}, fanout.WithRetry(p))
		assert.ErrorIs(t, err, errFlaky)
		assert.Equal(t, int32(1), calls.Load())
	})
}
