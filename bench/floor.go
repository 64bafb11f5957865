package bench

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// prepareFloor is the least a fan-out can do: l workers, the caller among
// them, claim indices with one atomic add each and write into slices.
func prepareFloor(s Scenario) *Prepared {
	var vals []int
	return &Prepared{
		Run: func(ctx context.Context) error {
			vals = make([]int, s.N)
			errs := make([]error, s.N)
			var next atomic.Int64
			work := func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= s.N {
						return
					}
					vals[i], errs[i] = s.task(ctx, i)
				}
			}
			var wg sync.WaitGroup
			for range min(s.L, s.N) - 1 {
				wg.Go(work)
			}
			work()
			wg.Wait()
			return errors.Join(errs...)
		},
		Check: func() error { return checkOrdered(vals, s.N) },
	}
}
