package bench_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gofanout/fanout"
	"github.com/gofanout/fanout/bench"
)

// The implementations, floor first: with `benchstat -col .name` each
// column is then compared with the floor measured in the same run.

func BenchmarkFloor(b *testing.B)      { benchImpl(b, "Floor") }
func BenchmarkFloorKeyed(b *testing.B) { benchImpl(b, "FloorKeyed") }
func BenchmarkFanout(b *testing.B)     { benchImpl(b, "Fanout") }
func BenchmarkFanoutMap(b *testing.B)  { benchImpl(b, "FanoutMap") }
func BenchmarkErrgroup(b *testing.B)   { benchImpl(b, "Errgroup") }
func BenchmarkHandrolled(b *testing.B) { benchImpl(b, "Handrolled") }
func BenchmarkConcPool(b *testing.B)   { benchImpl(b, "ConcPool") }
func BenchmarkConcIter(b *testing.B)   { benchImpl(b, "ConcIter") }
func BenchmarkPond(b *testing.B)       { benchImpl(b, "Pond") }
func BenchmarkAnts(b *testing.B)       { benchImpl(b, "Ants") }
func BenchmarkFailsafe(b *testing.B)   { benchImpl(b, "Failsafe") }

// benchImpl runs every scenario of the matrix with the named
// implementation, reporting ns/task and allocs/task beside the per-run
// figures.
func benchImpl(b *testing.B, name string) {
	impl := implNamed(b, name)
	for _, s := range bench.Matrix(bench.Full()) {
		b.Run(s.Name(), func(b *testing.B) {
			p := impl.Prepare(s)
			if p.Close != nil {
				defer p.Close()
			}
			ctx := context.Background()
			// Start each cell from a collected heap, so that it does not
			// pay for the garbage of the cell before it.
			runtime.GC()
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				if err := p.Run(ctx); err != nil {
					b.Fatal(err)
				}
			}
			runtime.ReadMemStats(&after)
			tasks := float64(b.N) * float64(s.N)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/tasks, "ns/task")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/tasks, "allocs/task")
		})
	}
}

func implNamed(tb testing.TB, name string) bench.Impl {
	for _, impl := range bench.Impls {
		if impl.Name == name {
			return impl
		}
	}
	tb.Fatalf("no implementation %q", name)
	return bench.Impl{}
}

// BenchmarkBody measures each body alone, on one goroutine: the work the
// matrix fans out.
func BenchmarkBody(b *testing.B) {
	ctx := context.Background()
	for _, body := range bench.Bodies {
		b.Run("body="+body.Name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				if _, err := body.Do(ctx, i); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkSleepTarget checks that fanning out 1 000 sleeps of 1 ms, 100
// at a time, costs about what ten sleeps of 1 ms in a row cost: the
// dispatch adds nothing to a blocking workload. The floor is there for
// scale.
func BenchmarkSleepTarget(b *testing.B) {
	sleep := func(context.Context) (struct{}, error) {
		time.Sleep(time.Millisecond)
		return struct{}{}, nil
	}
	b.Run("impl=sequential/n=10/l=1", func(b *testing.B) {
		for b.Loop() {
			for range 10 {
				_, _ = sleep(context.Background())
			}
		}
	})
	keys := bench.Keys(1000)
	tasks := make([]fanout.Task[struct{}], len(keys))
	for i, k := range keys {
		tasks[i] = fanout.Task[struct{}]{Key: k, Do: sleep}
	}
	b.Run("impl=fanout/n=1000/l=100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := fanout.Run(context.Background(), tasks, fanout.WithLimit(100)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=floor/n=1000/l=100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var wg sync.WaitGroup
			for range 100 {
				wg.Go(func() {
					for range 10 {
						_, _ = sleep(context.Background())
					}
				})
			}
			wg.Wait()
		}
	})
}
