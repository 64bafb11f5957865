package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/alitto/pond/v2"
	"github.com/panjf2000/ants/v2"
)

// preparePond keeps one pond result pool of l workers for the whole
// benchmark, as pond intends, and submits each run's tasks to a new
// result group, whose Wait returns the values in input order.
func preparePond(s Scenario) *Prepared {
	p := pond.NewResultPool[int](s.L)
	var vals []int
	return &Prepared{
		Run: func(ctx context.Context) error {
			g := p.NewGroup()
			for i := range s.N {
				g.SubmitErr(func() (int, error) { return s.task(ctx, i) })
			}
			var err error
			vals, err = g.Wait()
			return err
		},
		Check: func() error { return checkOrdered(vals, s.N) },
		Close: p.StopAndWait,
	}
}

// prepareAnts keeps one ants pool of l workers for the whole benchmark,
// as ants intends; each run submits closures that write their slot and
// waits on a WaitGroup.
func prepareAnts(s Scenario) *Prepared {
	p, err := ants.NewPool(s.L)
	if err != nil {
		panic(fmt.Sprintf("bench: ants.NewPool(%d): %v", s.L, err))
	}
	var vals []int
	return &Prepared{
		Run: func(ctx context.Context) error {
			vals = make([]int, s.N)
			errs := make([]error, s.N)
			var wg sync.WaitGroup
			wg.Add(s.N)
			for i := range s.N {
				err := p.Submit(func() {
					defer wg.Done()
					vals[i], errs[i] = s.task(ctx, i)
				})
				if err != nil {
					wg.Done()
					errs[i] = err
				}
			}
			wg.Wait()
			return errors.Join(errs...)
		},
		Check: func() error { return checkOrdered(vals, s.N) },
		Close: func() { _ = p.ReleaseTimeout(5 * time.Second) },
	}
}
