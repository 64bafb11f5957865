package bench_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/gofanout/fanout/bench"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// ants starts a default pool, with its purging goroutines, when
		// the package is loaded; it is not ours to release.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	)
}

// TestEveryImplementationComputesEveryResult guards the benchmarks: an
// implementation that dropped or misplaced a result would look fast.
func TestEveryImplementationComputesEveryResult(t *testing.T) {
	for _, impl := range bench.Impls {
		for _, body := range bench.Bodies[:2] {
			for _, n := range []int{1, 10, 257} {
				for _, l := range []int{1, 8, n} {
					for _, timeout := range []bool{false, true} {
						s := bench.Scenario{Body: body, N: n, L: l, Timeout: timeout}
						t.Run(impl.Name+"/"+s.Name(), func(t *testing.T) {
							p := impl.Prepare(s)
							if p.Close != nil {
								defer p.Close()
							}
							for range 2 {
								if err := p.Run(context.Background()); err != nil {
									t.Fatal(err)
								}
								if err := p.Check(); err != nil {
									t.Fatal(err)
								}
							}
						})
					}
				}
			}
		}
	}
}
