package bench

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// counter is an atomic index on a cache line of its own, so that the
// workers' claims do not slow their reads of anything next to it.
type counter struct {
	_ [64]byte
	n atomic.Int64
	_ [64]byte
}

// prepareFloor is the least a fan-out can do: l workers, the caller among
// them, claim indices with one atomic add each and write the values into
// a slice; the rare errors go to a list behind a mutex.
func prepareFloor(s Scenario) *Prepared {
	var last []int
	return &Prepared{
		Run: func(ctx context.Context) error {
			vals := make([]int, s.N)
			var mu sync.Mutex
			var errs []error
			next := new(counter)
			task := s.task
			work := func() {
				for {
					i := int(next.n.Add(1) - 1)
					if i >= len(vals) {
						return
					}
					v, err := task(ctx, i)
					vals[i] = v
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}
			}
			var wg sync.WaitGroup
			for range min(s.L, s.N) - 1 {
				wg.Go(work)
			}
			work()
			wg.Wait()
			last = vals
			return errors.Join(errs...)
		},
		Check: func() error { return checkOrdered(last, s.N) },
	}
}
