package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// TaskTimeout is the per-task deadline of the scenarios with timeouts. It
// never fires: the scenarios measure what arming and disarming it costs.
const TaskTimeout = 10 * time.Second

// A Body is the work of one task. Do returns i+1, so a missing result
// shows as a zero.
type Body struct {
	Name string
	Do   func(ctx context.Context, i int) (int, error)
}

// SpinRounds is how many xorshift rounds the cpu body runs: about 1 µs on
// the machine of BENCHMARKS.md (BenchmarkBody measures it).
const SpinRounds = 650

// Spin runs n xorshift rounds from seed: deterministic work the compiler
// cannot remove.
func Spin(seed uint64, n int) uint64 {
	x := seed | 1
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

// Bodies are the task bodies of the matrix: nothing, about 1 µs of CPU,
// and a 1 ms blocking sleep.
var Bodies = []Body{
	{Name: "trivial", Do: func(_ context.Context, i int) (int, error) { return i + 1, nil }},
	{Name: "cpu1us", Do: func(_ context.Context, i int) (int, error) {
		if Spin(uint64(i), SpinRounds) == 0 { // never: xorshift keeps a non-zero state
			return 0, fmt.Errorf("bench: spin reached zero")
		}
		return i + 1, nil
	}},
	{Name: "sleep1ms", Do: func(_ context.Context, i int) (int, error) {
		time.Sleep(time.Millisecond)
		return i + 1, nil
	}},
}

// Scenario is one cell of the matrix.
type Scenario struct {
	Body    Body
	N, L    int
	Timeout bool // arm a per-task deadline of TaskTimeout
}

// Name is the scenario's sub-benchmark name, laid out for benchstat:
// body=trivial/n=1000/l=8/timeout=false. L = N is written l=n.
func (s Scenario) Name() string {
	l := strconv.Itoa(s.L)
	if s.L == s.N {
		l = "n"
	}
	return fmt.Sprintf("body=%s/n=%d/l=%s/timeout=%t", s.Body.Name, s.N, l, s.Timeout)
}

// Full reports whether FANOUT_BENCH_FULL=1 asks for the slow cells too.
func Full() bool { return os.Getenv("FANOUT_BENCH_FULL") == "1" }

// Matrix returns the scenarios every implementation runs: each body at
// n = 10, 1 000 and 100 000, l = 8 and l = n, with and without per-task
// timeouts. The 1 ms body with n = 100 000 at l = 8 takes 12.5 s a run and
// is left out unless full is set.
func Matrix(full bool) []Scenario {
	var out []Scenario
	for _, body := range Bodies {
		for _, n := range []int{10, 1000, 100000} {
			for _, l := range []int{8, n} {
				if body.Name == "sleep1ms" && n == 100000 && l == 8 && !full {
					continue
				}
				for _, timeout := range []bool{false, true} {
					out = append(out, Scenario{Body: body, N: n, L: l, Timeout: timeout})
				}
			}
		}
	}
	return out
}

var (
	keysMu sync.Mutex
	keys   = map[int][]string{}
)

// Keys returns the keys "0" … "n-1", built once per n and shared by the
// keyed implementations so that none pays for making them.
func Keys(n int) []string {
	keysMu.Lock()
	defer keysMu.Unlock()
	if k, ok := keys[n]; ok {
		return k
	}
	k := make([]string, n)
	for i := range k {
		k[i] = strconv.Itoa(i)
	}
	keys[n] = k
	return k
}

// Indexes returns 0 … n-1, the input of the Map-shaped APIs.
func Indexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// task runs the body under a per-task deadline when s asks for one.
func (s Scenario) task(ctx context.Context, i int) (int, error) {
	if !s.Timeout {
		return s.Body.Do(ctx, i)
	}
	tctx, cancel := context.WithTimeout(ctx, TaskTimeout)
	defer cancel()
	return s.Body.Do(tctx, i)
}
