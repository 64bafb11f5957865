package bench

import (
	"context"
	"fmt"
)

// Impl is one way to run a [Scenario].
type Impl struct {
	Name    string // the benchmark's name: Floor, Fanout, ...
	Prepare func(s Scenario) *Prepared
}

// Prepared is an implementation set up for one scenario. What a user
// would build once and reuse (a task list, a long-lived pool) is built
// by Prepare; what a user would build per call is built by Run.
type Prepared struct {
	Run   func(ctx context.Context) error // runs the scenario's tasks once
	Check func() error                    // verifies the last Run's results
	Close func()                          // releases a pool; may be nil
}

// Impls lists the implementations, the floor first so that benchstat's
// columns compare each with it.
var Impls = []Impl{
	{"Floor", prepareFloor},
	{"FloorKeyed", prepareFloorKeyed},
	{"Fanout", prepareFanout},
	{"FanoutMap", prepareFanoutMap},
	{"Errgroup", prepareErrgroup},
	{"Handrolled", prepareHandrolled},
	{"ConcPool", prepareConcPool},
	{"ConcIter", prepareConcIter},
	{"Pond", preparePond},
	{"Ants", prepareAnts},
	{"Failsafe", prepareFailsafe},
}

// checkOrdered verifies that vals[i] is i+1 for each of n tasks.
func checkOrdered(vals []int, n int) error {
	if len(vals) != n {
		return fmt.Errorf("bench: %d results, want %d", len(vals), n)
	}
	for i, v := range vals {
		if v != i+1 {
			return fmt.Errorf("bench: result %d is %d, want %d", i, v, i+1)
		}
	}
	return nil
}

// checkUnordered verifies that vals holds 1 … n in any order.
func checkUnordered(vals []int, n int) error {
	if len(vals) != n {
		return fmt.Errorf("bench: %d results, want %d", len(vals), n)
	}
	seen := make([]bool, n)
	for _, v := range vals {
		if v < 1 || v > n || seen[v-1] {
			return fmt.Errorf("bench: unexpected or repeated result %d", v)
		}
		seen[v-1] = true
	}
	return nil
}

// checkKeyed verifies that vals maps key i to i+1 and errs is empty.
func checkKeyed(vals map[string]int, errs map[string]error, n int) error {
	if len(errs) > 0 {
		return fmt.Errorf("bench: %d errors", len(errs))
	}
	if len(vals) != n {
		return fmt.Errorf("bench: %d results, want %d", len(vals), n)
	}
	for i, k := range Keys(n) {
		if vals[k] != i+1 {
			return fmt.Errorf("bench: key %s is %d, want %d", k, vals[k], i+1)
		}
	}
	return nil
}
