package fanoutnats_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/stretchr/testify/require"
)

// The remote benchmarks run an embedded nats-server (memory storage) and
// the client in this process, and the workers either here, each on its
// own connection ("conns"), or as separate worker processes ("procs"):
// this test binary started again with benchWorkerEnv set. Every worker
// has 8 handler slots. On a 2-core machine the server, the client and the
// workers share both cores either way.

const benchTasks = 100

// benchWorkerEnv, set to a server URL, makes the test binary a worker
// process serving "square" until its standard input closes.
const benchWorkerEnv = "FANOUTNATS_BENCH_WORKER"

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
// in-process fanout.Run against remote tasks through 1, 2 and 4 workers,
// in this process or in worker processes, and against the engine's own
// floor (see floor).
func BenchmarkThroughput(b *testing.B) {
	b.Run("inprocess", func(b *testing.B) {
		benchRuns(b, localTasks())
	})
	b.Run("floor/conns=1", func(b *testing.B) {
		floorRuns(b, newFloor(b), benchTasks)
	})
	for _, setup := range []struct {
		name  string
		start func(testing.TB, int) *fanoutnats.Client
	}{{"conns", benchConns}, {"procs", benchProcs}} {
		for _, workers := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("remote/%s=%d", setup.name, workers), func(b *testing.B) {
				benchRuns(b, remoteTasks(setup.start(b, workers)))
			})
		}
	}
}

// BenchmarkLatency runs one task per op, one after another: the round
// trip a single remote task adds.
func BenchmarkLatency(b *testing.B) {
	b.Run("inprocess", func(b *testing.B) {
		benchRuns(b, localTasks()[:1])
	})
	b.Run("floor/conns=1", func(b *testing.B) {
		floorRuns(b, newFloor(b), 1)
	})
	b.Run("remote/conns=1", func(b *testing.B) {
		benchRuns(b, remoteTasks(benchConns(b, 1))[:1])
	})
	b.Run("remote/procs=1", func(b *testing.B) {
		benchRuns(b, remoteTasks(benchProcs(b, 1))[:1])
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

// benchConns starts a server, a client, and workers in this process.
func benchConns(tb testing.TB, workers int) *fanoutnats.Client {
	e := newEnv(tb)
	c := e.client()
	for range workers {
		e.worker(func(w *fanoutnats.Worker) { fanoutnats.Handle(w, "square", square) })
	}
	return c
}

// benchProcs starts a server and a client in this process, and worker
// processes, and waits until every worker is serving.
func benchProcs(tb testing.TB, workers int) *fanoutnats.Client {
	e := newEnv(tb)
	c := e.client()
	nc := e.conn()
	ready, err := nc.SubscribeSync("bench.ready")
	require.NoError(tb, err)
	defer func() { _ = ready.Unsubscribe() }()
	for range workers {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), benchWorkerEnv+"="+e.srv.URL())
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		require.NoError(tb, err)
		require.NoError(tb, cmd.Start())
		tb.Cleanup(func() {
			_ = stdin.Close() // the worker stops when its input ends
			_ = cmd.Wait()
		})
	}
	for range workers {
		_, err := ready.NextMsg(30 * time.Second)
		require.NoError(tb, err, "worker processes did not start")
	}
	return c
}

// runBenchWorker is a worker process of benchProcs. It returns the exit
// code.
func runBenchWorker(url string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	nc, err := fanoutnats.Connect([]string{url})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	w, err := fanoutnats.NewWorker(ctx, nc, testOpts()...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fanoutnats.Handle(w, "square", square)
	if err := nc.Publish("bench.ready", nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := w.Serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// BenchmarkJournal runs 100 trivial in-process tasks per op, 64 at once,
// without a journal and with one: the core's MemoryJournal, and the
// JetStream key-value Journal (memory storage, the embedded server in
// this process). "record" starts a new run each op, so every key is
// looked up, missed, run and recorded; "replay" reruns a recorded run,
// so every key is looked up and replayed.
func BenchmarkJournal(b *testing.B) {
	b.Run("none", func(b *testing.B) {
		benchRuns(b, localTasks())
	})
	b.Run("memory/record", func(b *testing.B) {
		benchJournal(b, func() fanout.Journal { return fanout.NewMemoryJournal() })
	})
	b.Run("kv/record", func(b *testing.B) {
		e := newEnv(b)
		nc, n := e.conn(), 0
		benchJournal(b, func() fanout.Journal {
			n++
			j, err := fanoutnats.OpenJournal(context.Background(), nc, fmt.Sprint("run", n), testOpts()...)
			require.NoError(b, err)
			return j
		})
	})
	b.Run("kv/replay", func(b *testing.B) {
		e := newEnv(b)
		j, err := fanoutnats.OpenJournal(context.Background(), e.conn(), "run", testOpts()...)
		require.NoError(b, err)
		_, err = fanout.Run(context.Background(), localTasks(), fanout.WithJournal(j))
		require.NoError(b, err)
		benchJournal(b, func() fanout.Journal { return j })
	})
}

// benchJournal is benchRuns with the journal next returns, one per op.
func benchJournal(b *testing.B, next func() fanout.Journal) {
	b.ReportAllocs()
	ctx, tasks := context.Background(), localTasks()
	for b.Loop() {
		if _, err := fanout.Run(ctx, tasks, fanout.WithLimit(64), fanout.WithJournal(next())); err != nil {
			b.Fatal(err)
		}
	}
	n := float64(b.N * len(tasks))
	b.ReportMetric(n/b.Elapsed().Seconds(), "tasks/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/task")
}
