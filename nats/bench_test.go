package fanoutnats_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
)

// The remote benchmarks run everything in this process: an embedded
// nats-server (memory storage), the client, and 1, 2 or 4 workers, each on
// its own connection with 8 handler slots. Worker processes would measure
// the same protocol but add process start-up to the setup; on a 2-core
// machine the server, client and workers share both cores either way.

const benchTasks = 100

func square(_ context.Context, n int) (int, error) { return n * n, nil }

func localTasks() []fanout.Task[int] {
	tasks := make([]fanout.Task[int], benchTasks)
	for i := range tasks {
		tasks[i] = fanout.Task[int]{Key: fmt.Sprint("k", i), Do: func(ctx context.Context) (int, error) {
			return square(ctx, i)
		}}
	}
	return tasks
}

func remoteTasks(c *fanoutnats.Client) []fanout.Task[int] {
	b := c.Batch()
	tasks := make([]fanout.Task[int], benchTasks)
	for i := range tasks {
		tasks[i] = fanoutnats.Remote[int, int](b, "square", fmt.Sprint("k", i), i)
	}
	return tasks
}

// BenchmarkThroughput runs 100 trivial tasks per op, 64 in flight:
// in-process fanout.Run against remote tasks through 1, 2 and 4 workers.
func BenchmarkThroughput(b *testing.B) {
	b.Run("inprocess", func(b *testing.B) {
		tasks := localTasks()
		benchRuns(b, tasks)
	})
	for _, workers := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("remote/workers=%d", workers), func(b *testing.B) {
			c := benchCluster(b, workers)
			benchRuns(b, remoteTasks(c))
		})
	}
}

// BenchmarkLatency runs one task per op, one after another: the round
// trip a single remote task adds.
func BenchmarkLatency(b *testing.B) {
	b.Run("inprocess", func(b *testing.B) {
		benchRuns(b, localTasks()[:1])
	})
	b.Run("remote/workers=1", func(b *testing.B) {
		c := benchCluster(b, 1)
		benchRuns(b, remoteTasks(c)[:1])
	})
}

func benchRuns(b *testing.B, tasks []fanout.Task[int]) {
	b.ReportAllocs()
	ctx := context.Background()
	for b.Loop() {
		if _, err := fanout.Run(ctx, tasks, fanout.WithLimit(64)); err != nil {
			b.Fatal(err)
		}
	}
	n := float64(b.N * len(tasks))
	b.ReportMetric(n/b.Elapsed().Seconds(), "tasks/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/task")
}

func benchCluster(b *testing.B, workers int) *fanoutnats.Client {
	e := newEnv(b)
	c := e.client()
	for range workers {
		e.worker(func(w *fanoutnats.Worker) { fanoutnats.Handle(w, "square", square) })
	}
	return c
}
