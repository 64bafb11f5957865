package bench

import (
	"context"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/timeout"
	"golang.org/x/sync/errgroup"
)

// prepareFailsafe runs each task through a failsafe-go executor, built
// once, with a timeout policy when the scenario has per-task timeouts
// and no policy otherwise; failsafe-go does not fan out, so errgroup with
// SetLimit does, as a user would combine them.
func prepareFailsafe(s Scenario) *Prepared {
	var exec failsafe.Executor[int]
	if s.Timeout {
		exec = failsafe.With(timeout.New[int](TaskTimeout))
	} else {
		exec = failsafe.With[int]()
	}
	var vals []int
	return &Prepared{
		Run: func(ctx context.Context) error {
			vals = make([]int, s.N)
			ex := exec.WithContext(ctx)
			var g errgroup.Group
			g.SetLimit(s.L)
			for i := range s.N {
				g.Go(func() error {
					v, err := ex.GetWithExecution(func(e failsafe.Execution[int]) (int, error) {
						return s.Body.Do(e.Context(), i)
					})
					vals[i] = v
					return err
				})
			}
			return g.Wait()
		},
		Check: func() error { return checkOrdered(vals, s.N) },
	}
}
