package bench

import (
	"context"
	"sync"

	"golang.org/x/sync/errgroup"
)

// prepareErrgroup is errgroup with SetLimit, each task writing its slot
// of a slice. It stops at nothing: the group's context is not used, so
// like the others it runs every task.
func prepareErrgroup(s Scenario) *Prepared {
	var vals []int
	return &Prepared{
		Run: func(ctx context.Context) error {
			vals = make([]int, s.N)
			var g errgroup.Group
			g.SetLimit(s.L)
			for i := range s.N {
				g.Go(func() error {
					v, err := s.task(ctx, i)
					vals[i] = v
					return err
				})
			}
			return g.Wait()
		},
		Check: func() error { return checkOrdered(vals, s.N) },
	}
}

// prepareHandrolled is the code users write today for what fanout.Run
// does: errgroup with SetLimit, values and errors in maps by key behind a
// mutex, and a context.WithTimeout per task.
func prepareHandrolled(s Scenario) *Prepared {
	keys := Keys(s.N)
	var vals map[string]int
	var errs map[string]error
	return &Prepared{
		Run: func(ctx context.Context) error {
			vals = make(map[string]int, s.N)
			errs = make(map[string]error)
			var mu sync.Mutex
			var g errgroup.Group
			g.SetLimit(s.L)
			for i, key := range keys {
				g.Go(func() error {
					v, err := s.task(ctx, i)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs[key] = err
						return nil
					}
					vals[key] = v
					return nil
				})
			}
			return g.Wait()
		},
		Check: func() error { return checkKeyed(vals, errs, s.N) },
	}
}
