package bench

import (
	"context"

	"github.com/sourcegraph/conc/iter"
	"github.com/sourcegraph/conc/pool"
)

// prepareConcPool is conc's result pool with errors and a goroutine cap.
// Its results come back in completion order, without keys.
func prepareConcPool(s Scenario) *Prepared {
	var vals []int
	return &Prepared{
		Run: func(ctx context.Context) error {
			p := pool.NewWithResults[int]().WithErrors().WithMaxGoroutines(s.L)
			for i := range s.N {
				p.Go(func() (int, error) { return s.task(ctx, i) })
			}
			var err error
			vals, err = p.Wait()
			return err
		},
		Check: func() error { return checkUnordered(vals, s.N) },
	}
}

// prepareConcIter is conc's iter.Map, in its MapErr form so that errors
// are collected as by the others; results come back in input order.
func prepareConcIter(s Scenario) *Prepared {
	inputs := Indexes(s.N)
	mapper := iter.Mapper[int, int]{MaxGoroutines: s.L}
	var vals []int
	return &Prepared{
		Run: func(ctx context.Context) error {
			var err error
			vals, err = mapper.MapErr(inputs, func(i *int) (int, error) { return s.task(ctx, *i) })
			return err
		},
		Check: func() error { return checkOrdered(vals, s.N) },
	}
}
