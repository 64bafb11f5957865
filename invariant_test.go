package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

type behaviour int

const (
	succeed behaviour = iota
	fail
	panics
	hangUntilCancelled
	slow
	behaviours
)

func (b behaviour) task(key string, d time.Duration) fanout.Task[string] {
	return fanout.Task[string]{Key: key, Do: func(ctx context.Context) (string, error) {
		switch b {
		case fail:
			time.Sleep(d)
			return "", errors.New("failed " + key)
		case panics:
			time.Sleep(d)
			panic("panicked " + key)
		case hangUntilCancelled:
			<-ctx.Done()
			return "", ctx.Err()
		case slow:
			select {
			case <-time.After(10 * d):
				return key, nil
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		time.Sleep(d)
		return key, nil
	}}
}

// TestInvariants runs random mixes of task behaviours under random options
// and checks what must always hold: one Result per key, in input order;
// successes carry their value; every failure is explained; nothing leaks
// (goleak checks at exit, synctest at the end of each bubble).
func TestInvariants(t *testing.T) {
	for seed := range uint64(60) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			n := 1 + rng.IntN(40)
			tasks := make([]fanout.Task[string], n)
			kinds := make([]behaviour, n)
			for i := range tasks {
				kinds[i] = behaviour(rng.IntN(int(behaviours)))
				tasks[i] = kinds[i].task(fmt.Sprint("k", i), time.Duration(rng.IntN(1000))*time.Millisecond)
				tasks[i].Priority = rng.IntN(3)
			}
			var opts []fanout.Option
			if rng.IntN(2) == 0 {
				opts = append(opts, fanout.WithLimit(1+rng.IntN(8)))
			}
			if rng.IntN(2) == 0 {
				opts = append(opts, fanout.WithTaskTimeout(time.Duration(1+rng.IntN(3))*time.Second))
			}
			// Without a timeout, a task that hangs until cancelled needs
			// something to cancel it.
			opts = append(opts, fanout.WithTimeout(time.Duration(2+rng.IntN(20))*time.Second))
			if rng.IntN(3) == 0 {
				opts = append(opts, fanout.WithFailFast())
			}
			if rng.IntN(3) == 0 {
				opts = append(opts, fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2}))
			}
			if rng.IntN(4) == 0 {
				opts = append(opts, fanout.WithHedge(fanout.HedgePolicy{Delay: 500 * time.Millisecond}))
			}
			viaStream := rng.IntN(2) == 0

			synctest.Test(t, func(t *testing.T) {
				var all []fanout.Result[string]
				if viaStream {
					seq, err := fanout.Stream(context.Background(), tasks, opts...)
					require.NoError(t, err)
					seen := make([]bool, n)
					all = make([]fanout.Result[string], n)
					for r := range seq {
						require.False(t, seen[r.Index], "key %s yielded twice", r.Key)
						seen[r.Index] = true
						all[r.Index] = r
					}
					assert.NotContains(t, seen, false, "every key is yielded")
				} else {
					rs, err := fanout.Run(context.Background(), tasks, opts...)
					require.NotNil(t, rs)
					all = rs.All()
					assert.Equal(t, rs.Succeeded() == n, err == nil)
				}
				require.Len(t, all, n)
				for i, r := range all {
					assert.Equal(t, tasks[i].Key, r.Key)
					assert.Equal(t, i, r.Index)
					switch {
					case r.Err == nil:
						assert.Equal(t, r.Key, r.Value)
						assert.Contains(t, []behaviour{succeed, slow}, kinds[i])
					case errors.Is(r.Err, fanout.ErrSkipped):
						assert.Zero(t, r.Attempts)
					default:
						assert.Positive(t, r.Attempts)
						var pe *fanout.PanicError
						explained := errors.As(r.Err, &pe) || errors.Is(r.Err, fanout.ErrTaskTimeout) ||
							errors.Is(r.Err, fanout.ErrRunTimeout) || errors.Is(r.Err, context.Canceled) ||
							r.Err.Error() == "failed "+r.Key
						assert.True(t, explained, "unexplained error for %s: %v", r.Key, r.Err)
						assert.NotEqual(t, context.Canceled, r.Err, "a bare context.Canceled hides the cause")
					}
				}
			})
		})
	}
}
