package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gofanout/fanout"
)

// These benchmarks guard the hot path. Each reports ns and allocs per
// task, and the baselines (a hand-written worker floor and the
// errgroup+map+timeout code users write today) run in the same process so
// that figures compare as ratios.

var sizes = []int{1000, 100_000}

const benchLimit = 8

func trivial(context.Context) (int, error) { return 1, nil }

func benchTasks(n int) []fanout.Task[int] {
	tasks := make([]fanout.Task[int], n)
	for i := range tasks {
		tasks[i] = fanout.Task[int]{Key: strconv.Itoa(i), Do: trivial}
	}
	return tasks
}

// eachSize runs op once per loop over benchTasks(n), as the sub-benchmark
// prefix+"n=N" for each of sizes, and reports the time per task.
func eachSize(b *testing.B, prefix string, op func(b *testing.B, tasks []fanout.Task[int])) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(prefix, "n=", n), func(b *testing.B) {
			tasks := benchTasks(n)
			b.ReportAllocs()
			for b.Loop() {
				op(b, tasks)
			}
			perTask(b, n)
		})
	}
}

func perTask(b *testing.B, n int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/task")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkFloor is the least a fan-out can cost: a fixed set of workers
// claiming indices with an atomic counter, results into a slice.
func BenchmarkFloor(b *testing.B) {
	eachSize(b, "", func(b *testing.B, tasks []fanout.Task[int]) {
		n := len(tasks)
		vals := make([]int, n)
		errs := make([]error, n)
		var next atomic.Int64
		var wg sync.WaitGroup
		for range benchLimit {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					vals[i], errs[i] = tasks[i].Do(context.Background())
				}
			})
		}
		wg.Wait()
	})
}

// BenchmarkFloorKeyed is the floor plus what Run gives on top of it: a
// key index checked for duplicates, and each task's elapsed time (one
// monotonic clock read per task).
func BenchmarkFloorKeyed(b *testing.B) {
	epoch := time.Now()
	eachSize(b, "", func(b *testing.B, tasks []fanout.Task[int]) {
		n := len(tasks)
		index := make(map[string]int, n)
		for i, t := range tasks {
			index[t.Key] = i
		}
		if len(index) != n {
			b.Fatal("duplicate key")
		}
		type result struct {
			key     string
			val     int
			err     error
			elapsed time.Duration
		}
		results := make([]result, n)
		var next atomic.Int64
		var wg sync.WaitGroup
		for range benchLimit {
			wg.Go(func() {
				now := time.Since(epoch)
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					r := &results[i]
					r.key = tasks[i].Key
					r.val, r.err = tasks[i].Do(context.Background())
					end := time.Since(epoch)
					r.elapsed, now = end-now, end
				}
			})
		}
		wg.Wait()
	})
}

func BenchmarkRun(b *testing.B) {
	eachSize(b, "", func(b *testing.B, tasks []fanout.Task[int]) {
		if _, err := fanout.Run(context.Background(), tasks, fanout.WithLimit(benchLimit)); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkRunObserver shows what an observer costs: nothing when unset,
// where a run takes its fast path, and the bookkeeping the hooks need when
// one is set, even with no hook in it.
func BenchmarkRunObserver(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []fanout.Option
	}{
		{"unset", nil},
		{"empty", []fanout.Option{fanout.WithObserver(&fanout.Observer{})}},
		{"every-hook", []fanout.Option{fanout.WithObserver(countingObserver())}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tasks := benchTasks(1000)
			ctx := context.Background()
			opts := append([]fanout.Option{fanout.WithLimit(benchLimit)}, bc.opts...)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := fanout.Run(ctx, tasks, opts...); err != nil {
					b.Fatal(err)
				}
			}
			perTask(b, 1000)
		})
	}
}

// countingObserver sets every hook of a run without retries, hedges or
// limiters, each doing as little as a metrics counter would.
func countingObserver() *fanout.Observer {
	var n atomic.Int64
	return &fanout.Observer{
		RunStart:     func(ctx context.Context, _ int) context.Context { n.Add(1); return ctx },
		TaskStart:    func(context.Context, string) { n.Add(1) },
		AttemptStart: func(ctx context.Context, _ fanout.AttemptInfo) context.Context { n.Add(1); return ctx },
		AttemptDone:  func(context.Context, fanout.AttemptInfo) { n.Add(1) },
		TaskDone:     func(context.Context, fanout.TaskInfo) { n.Add(1) },
		RunDone:      func(context.Context, fanout.RunSummary) { n.Add(1) },
	}
}

// BenchmarkHandRolled is what users write today for keyed results with
// per-task timeouts: errgroup, a mutex-guarded map, and a timeout each.
func BenchmarkHandRolled(b *testing.B) {
	eachSize(b, "", func(b *testing.B, tasks []fanout.Task[int]) {
		n := len(tasks)
		ctx := context.Background()
		var mu sync.Mutex
		vals := make(map[string]int, n)
		errs := make(map[string]error)
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(benchLimit)
		for _, t := range tasks {
			g.Go(func() error {
				tctx, cancel := context.WithTimeout(gctx, time.Minute)
				defer cancel()
				v, err := t.Do(tctx)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs[t.Key] = err
				} else {
					vals[t.Key] = v
				}
				return nil
			})
		}
		_ = g.Wait()
	})
}

func BenchmarkRunTaskTimeout(b *testing.B) {
	eachSize(b, "", func(b *testing.B, tasks []fanout.Task[int]) {
		rs, err := fanout.Run(context.Background(), tasks, fanout.WithLimit(benchLimit), fanout.WithTaskTimeout(time.Minute))
		if err != nil {
			b.Fatal(err)
		}
		_ = rs.Values()
	})
}

// errLoopTimeout is BenchmarkTimeoutLoop's cause, as ErrTaskTimeout is
// Run's.
var errLoopTimeout = errors.New("bench: task timeout")

// BenchmarkTimeoutLoop is the least a per-task timeout can cost: each task
// called under its own context.WithTimeoutCause, cancelled when it
// returns, and nothing else. It is the baseline RunTaskTimeout is held
// against. shape=pool is BenchmarkFloor's worker pool, the same
// concurrency as Run; shape=sequential is one goroutine and a for loop.
// The parent is the same context.Background() that RunTaskTimeout gets.
// shape=cancellable is the pool with each worker's tasks under a
// context.WithCancel of its own, as in any loop that can be stopped (and
// as in Run): each timeout context then joins its parent's children and
// leaves them when cancelled.
func BenchmarkTimeoutLoop(b *testing.B) {
	call := func(parent context.Context, t fanout.Task[int]) (int, error) {
		ctx, cancel := context.WithTimeoutCause(parent, time.Minute, errLoopTimeout)
		v, err := t.Do(ctx)
		cancel()
		return v, err
	}
	for _, shape := range []string{"pool", "cancellable", "sequential"} {
		eachSize(b, "shape="+shape+"/", func(b *testing.B, tasks []fanout.Task[int]) {
			n := len(tasks)
			ctx := context.Background()
			vals := make([]int, n)
			errs := make([]error, n)
			if shape == "sequential" {
				for i, t := range tasks {
					vals[i], errs[i] = call(ctx, t)
				}
				return
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			for range benchLimit {
				wg.Go(func() {
					ctx := ctx
					if shape == "cancellable" {
						var stop context.CancelFunc
						ctx, stop = context.WithCancel(ctx)
						defer stop()
					}
					for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
						vals[i], errs[i] = call(ctx, tasks[i])
					}
				})
			}
			wg.Wait()
		})
	}
}

func BenchmarkStream(b *testing.B) {
	tasks := benchTasks(1000)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		seq, err := fanout.Stream(ctx, tasks, fanout.WithLimit(benchLimit))
		if err != nil {
			b.Fatal(err)
		}
		for range seq {
		}
	}
	perTask(b, 1000)
}

func BenchmarkStreamSeq(b *testing.B) {
	ctx := context.Background()
	src := func(yield func(fanout.Task[int]) bool) {
		for i := range 1000 {
			if !yield(fanout.Task[int]{Key: "k", Do: trivial}) {
				return
			}
			_ = i
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		seq, err := fanout.StreamSeq(ctx, src, fanout.WithLimit(benchLimit))
		if err != nil {
			b.Fatal(err)
		}
		for range seq {
		}
	}
	perTask(b, 1000)
}

func BenchmarkVote(b *testing.B) {
	tasks := make([]fanout.Task[int], 1000)
	for i := range tasks {
		tasks[i] = fanout.Task[int]{Key: strconv.Itoa(i), Do: func(context.Context) (int, error) { return i % 3, nil }}
	}
	ctx := context.Background()
	pick := func(v int) int { return v }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fanout.Gather(ctx, tasks, fanout.Vote(pick), fanout.WithLimit(benchLimit)); err != nil {
			b.Fatal(err)
		}
	}
	perTask(b, 1000)
}

// BenchmarkResults is result collection: reading every key of a finished
// run by key, as maps and as the joined error, with one key in ten failed.
func BenchmarkResults(b *testing.B) {
	tasks := benchTasks(1000)
	errDown := errors.New("down")
	for i := range tasks {
		if i%10 == 0 {
			tasks[i].Do = func(context.Context) (int, error) { return 0, errDown }
		}
	}
	rs, _ := fanout.Run(context.Background(), tasks)
	b.Run("Get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, t := range tasks {
				if _, ok := rs.Get(t.Key); !ok {
					b.Fatal(t.Key)
				}
			}
		}
		perTask(b, len(tasks))
	})
	b.Run("Values+Errs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if len(rs.Values())+len(rs.Errs()) != len(tasks) {
				b.Fatal("a key is missing")
			}
		}
		perTask(b, len(tasks))
	})
	b.Run("Err", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if rs.Err() == nil {
				b.Fatal("no error")
			}
		}
		perTask(b, len(tasks))
	})
}

// BenchmarkMap is Run's homogeneous form, which builds the tasks and
// their keys on every call.
func BenchmarkMap(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint("n=", n), func(b *testing.B) {
			inputs := make([]int, n)
			ctx := context.Background()
			double := func(_ context.Context, i int) (int, error) { return 2 * i, nil }
			b.ReportAllocs()
			for b.Loop() {
				if _, err := fanout.Map(ctx, inputs, double, fanout.WithLimit(benchLimit)); err != nil {
					b.Fatal(err)
				}
			}
			perTask(b, n)
		})
	}
}
