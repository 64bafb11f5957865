package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
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

// keyedResult is what FloorKeyed keeps per task: the part of a
// fanout.Result that Run's features need.
type keyedResult struct {
	key     string
	val     int
	err     error
	elapsed time.Duration
}

// prepareFloorKeyed is the floor plus what Run gives beyond it: an index
// of the keys checked for duplicates, and each task's key, value, error
// and elapsed time (one monotonic clock read per task, each task starting
// when the last one ended). The gap between it and Fanout is what Run
// adds; the gap between it and Floor is what its features cost.
func prepareFloorKeyed(s Scenario) *Prepared {
	keys := Keys(s.N)
	epoch := time.Now()
	var last []keyedResult
	var lastIndex map[string]int
	return &Prepared{
		Run: func(ctx context.Context) error {
			index := make(map[string]int, len(keys))
			for i, k := range keys {
				if _, dup := index[k]; dup {
					return fmt.Errorf("bench: duplicate key %q", k)
				}
				index[k] = i
			}
			results := make([]keyedResult, len(keys))
			var mu sync.Mutex
			var errs []error
			next := new(counter)
			task := s.task
			work := func() {
				now := time.Since(epoch)
				for {
					i := int(next.n.Add(1) - 1)
					if i >= len(results) {
						return
					}
					r := &results[i]
					r.key = keys[i]
					r.val, r.err = task(ctx, i)
					end := time.Since(epoch)
					r.elapsed, now = end-now, end
					if r.err != nil {
						mu.Lock()
						errs = append(errs, r.err)
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
			last, lastIndex = results, index
			return errors.Join(errs...)
		},
		Check: func() error {
			vals := make([]int, len(last))
			for i, r := range last {
				if lastIndex[r.key] != i {
					return fmt.Errorf("bench: key %q indexed at %d, want %d", r.key, lastIndex[r.key], i)
				}
				vals[i] = r.val
			}
			return checkOrdered(vals, s.N)
		},
	}
}
