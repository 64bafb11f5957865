package fanoutnats_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fastStatus makes workers report often enough for tests to wait on.
const fastStatus = 50 * time.Millisecond

// gate holds the handlers of "block" until it is opened, and tells which
// keys have started.
type gate struct {
	open    chan struct{}
	started *signals
}

func newGate() *gate { return &gate{open: make(chan struct{}), started: newSignals()} }

func (g *gate) register(w *fanoutnats.Worker) {
	fanoutnats.Handle(w, "block", func(ctx context.Context, k string) (string, error) {
		g.started.send(k)
		select {
		case <-g.open:
			return k, nil
		case <-ctx.Done():
			return "", context.Cause(ctx)
		}
	})
}

// run runs n "block" tasks in b in the background; the returned function
// waits for the run's end.
func (g *gate) run(t *testing.T, b *fanoutnats.Batch, n int) (wait func() *fanout.Results[string]) {
	var tasks []fanout.Task[string]
	for i := range n {
		k := fmt.Sprint("k", i)
		tasks = append(tasks, fanoutnats.Remote[string, string](b, "block", k, k))
	}
	done := make(chan *fanout.Results[string], 1)
	go func() {
		rs, err := fanout.Run(context.Background(), tasks, fanout.WithTimeout(30*time.Second))
		assert.NoError(t, err)
		done <- rs
	}()
	return func() *fanout.Results[string] { return <-done }
}

// worker returns the worker named name in f, if it is there.
func worker(f fanoutnats.Fleet, name string) (fanoutnats.FleetWorker, bool) {
	for _, w := range f.Workers {
		if w.Name == name {
			return w, true
		}
	}
	return fanoutnats.FleetWorker{}, false
}

func names(f fanoutnats.Fleet) []string {
	var ns []string
	for _, w := range f.Workers {
		ns = append(ns, w.Name)
	}
	return ns
}

func TestFleetShowsEachWorkersSlotsInUseAndTheBatchRunningAndQueued(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	c.Fleet() // listen from now on
	g := newGate()
	two := e.worker(g.register, fanoutnats.WithName("two"), fanoutnats.WithConcurrency(2),
		fanoutnats.WithStatusInterval(fastStatus))
	three := e.worker(g.register, fanoutnats.WithName("three"), fanoutnats.WithConcurrency(3),
		fanoutnats.WithStatusInterval(fastStatus))
	b := c.Batch()
	wait := g.run(t, b, 8)
	for range 5 {
		g.started.wait(t)
	}

	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		f := c.Fleet()
		assert.Equal(ct, []string{"three", "two"}, names(f), "by name")
		for _, want := range []fanoutnats.FleetWorker{{Name: "two", Slots: 2, InUse: 2}, {Name: "three", Slots: 3, InUse: 3}} {
			got, _ := worker(f, want.Name)
			assert.Equal(ct, want.Slots, got.Slots, want.Name)
			assert.Equal(ct, want.InUse, got.InUse, want.Name)
		}
		assert.Equal(ct, []fanoutnats.FleetBatch{{ID: b.ID(), Queued: 3, Running: 5}}, f.Batches)
	}, 10*time.Second, 10*time.Millisecond)

	close(g.open)
	rs := wait()
	require.Equal(t, 8, rs.Succeeded())
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		f := c.Fleet()
		assert.Empty(ct, f.Batches, "nothing waits")
		for _, w := range []*runningWorker{two, three} {
			got, ok := worker(f, w.Name())
			assert.True(ct, ok, w.Name())
			assert.Zero(ct, got.InUse, w.Name())
			assert.Equal(ct, w.Stats(), got.Stats, "%s's counters as its own process has them", w.Name())
		}
	}, 10*time.Second, 10*time.Millisecond)
	f := c.Fleet()
	twoSeen, _ := worker(f, "two")
	threeSeen, _ := worker(f, "three")
	assert.Equal(t, int64(8), twoSeen.Stats.Succeeded+threeSeen.Stats.Succeeded)
	assert.Equal(t, c.Stats(), f.Stats)
	assert.Equal(t, int64(8), f.Stats.Replies)
	assert.WithinDuration(t, time.Now(), twoSeen.Seen, time.Second)
}

func TestFleetDropsAWorkerThatSaysGoodbye(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	c.Fleet()
	// Reports so rare that only its first and its goodbye can tell.
	w := e.worker(func(*fanoutnats.Worker) {}, fanoutnats.WithName("leaving"), fanoutnats.WithStatusInterval(time.Hour))
	require.Eventually(t, func() bool { return len(c.Fleet().Workers) == 1 }, 10*time.Second, 5*time.Millisecond,
		"the report it sends as Serve starts")
	w.shutdown()
	require.Eventually(t, func() bool { return len(c.Fleet().Workers) == 0 }, 10*time.Second, 5*time.Millisecond,
		"its goodbye as Serve ends")
}

func TestFleetForgetsAWorkerThatStopsReporting(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	c.Fleet()
	crashing := e.worker(func(*fanoutnats.Worker) {}, fanoutnats.WithName("crashing"), fanoutnats.WithStatusInterval(fastStatus))
	e.worker(func(*fanoutnats.Worker) {}, fanoutnats.WithName("staying"), fanoutnats.WithStatusInterval(fastStatus))
	require.Eventually(t, func() bool { return len(c.Fleet().Workers) == 2 }, 10*time.Second, 5*time.Millisecond)
	crashing.kill(t) // no goodbye: its connection is gone
	require.Eventually(t, func() bool {
		ns := names(c.Fleet())
		return len(ns) == 1 && ns[0] == "staying"
	}, 10*time.Second, 5*time.Millisecond)
}

func TestFleetAfterCloseListensNoMore(t *testing.T) {
	e := newEnv(t)
	c, err := fanoutnats.NewClient(context.Background(), e.conn(), testOpts()...)
	require.NoError(t, err)
	c.Fleet()
	e.worker(func(*fanoutnats.Worker) {}, fanoutnats.WithStatusInterval(fastStatus))
	require.Eventually(t, func() bool { return len(c.Fleet().Workers) == 1 }, 10*time.Second, 5*time.Millisecond)
	c.Close()
	assert.Empty(t, c.Fleet().Workers, "closed: the workers it heard of are dropped, and Fleet does not listen again")
}

func TestTenantsHearOnlyOfTheirOwnFleet(t *testing.T) {
	t.Run("with prefixes of their own, a tenant sees only its own workers", func(t *testing.T) {
		e := newEnv(t)
		own := func(name string) []fanoutnats.Option {
			return []fanoutnats.Option{fanoutnats.WithPrefix(name), fanoutnats.WithStream(strings.ToUpper(name)),
				fanoutnats.WithTenant(name)}
		}
		acme, globex := e.client(own("acme")...), e.client(own("globex")...)
		acme.Fleet()
		globex.Fleet()
		for _, name := range []string{"acme", "globex"} {
			e.worker(func(*fanoutnats.Worker) {}, append(own(name), fanoutnats.WithName(name+"-worker"),
				fanoutnats.WithStatusInterval(fastStatus))...)
		}
		require.Eventually(t, func() bool { return len(acme.Fleet().Workers) == 1 }, 10*time.Second, 5*time.Millisecond)
		require.Eventually(t, func() bool { return len(globex.Fleet().Workers) == 1 }, 10*time.Second, 5*time.Millisecond)
		// Some more reports of each, which the other tenant never hears.
		seen := globex.Fleet().Workers[0].Seen
		require.Eventually(t, func() bool { return globex.Fleet().Workers[0].Seen.After(seen) }, 10*time.Second, 5*time.Millisecond)
		assert.Equal(t, []string{"acme-worker"}, names(acme.Fleet()))
		assert.Equal(t, []string{"globex-worker"}, names(globex.Fleet()))
	})

	t.Run("sharing workers, a tenant hears only of its own batches", func(t *testing.T) {
		e := tenantsServer(t)
		g := newGate()
		e.workerOn(e.login("worker", nil), g.register, fanoutnats.WithBind(), fanoutnats.WithName("shared"),
			fanoutnats.WithStatusInterval(fastStatus))
		spy := make(violations, 100)
		acme, globex := e.tenant("acme", nil), e.tenant("globex", spy)
		acme.Fleet()
		globex.Fleet()
		reports, err := e.login("admin", nil).SubscribeSync("fanout.running.>")
		require.NoError(t, err)

		b := acme.Batch()
		wait := g.run(t, b, 1)
		g.started.wait(t)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			f := acme.Fleet()
			assert.Equal(ct, []string{"shared"}, names(f))
			assert.Equal(ct, []fanoutnats.FleetBatch{{ID: b.ID(), Running: 1}}, f.Batches)
		}, 10*time.Second, 5*time.Millisecond, "acme's tasks are reported to acme, through its permissions")
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			f := globex.Fleet()
			if assert.Equal(ct, []string{"shared"}, names(f), "the workers serve every tenant") {
				assert.Equal(ct, 1, f.Workers[0].InUse, "their load is the workers' own")
			}
			assert.Empty(ct, f.Batches)
		}, 10*time.Second, 5*time.Millisecond)
		close(g.open)
		wait()

		m, err := reports.NextMsg(10 * time.Second)
		require.NoError(t, err)
		for ; err == nil; m, err = reports.NextMsg(0) {
			assert.True(t, strings.HasPrefix(m.Subject, "fanout.running.acme."), "acme's batch reported on %s", m.Subject)
		}
		nc := e.login("globex", spy)
		_, err = nc.Subscribe("fanout.running.acme.*", func(*nats.Msg) {})
		require.NoError(t, err) // refused asynchronously
		spy.wait(t, "fanout.running.acme.*")
	})
}

func TestStatusIntervalOptions(t *testing.T) {
	e := newEnv(t)
	nc := e.conn()
	for _, d := range []time.Duration{-time.Second, time.Millisecond} {
		_, err := fanoutnats.NewWorker(context.Background(), nc, fanoutnats.WithStatusInterval(d))
		require.EqualError(t, err, fmt.Sprintf("fanoutnats: WithStatusInterval(%v): must be 0 (no reports) or at least 10ms", d))
		_, err = fanoutnats.NewClient(context.Background(), nc, fanoutnats.WithStatusInterval(d))
		require.Error(t, err, "a client checks its options too")
	}

	t.Run("0 turns a worker's reports off", func(t *testing.T) {
		published, err := nc.SubscribeSync("fanout.*.>")
		require.NoError(t, err)
		require.NoError(t, nc.Flush())
		c := e.client()
		e.worker(func(w *fanoutnats.Worker) {
			fanoutnats.Handle(w, "echo", func(_ context.Context, s string) (string, error) { return s, nil })
		}, fanoutnats.WithStatusInterval(0))
		// A worker reports before it pulls its first task.
		_, err = fanout.Run(context.Background(), echoTasks(c, "k"))
		require.NoError(t, err)
		require.NoError(t, nc.Flush())
		for m, err := published.NextMsg(0); err == nil; m, err = published.NextMsg(0) {
			assert.NotRegexp(t, `^fanout\.(status|running)\.`, m.Subject)
		}
		assert.Empty(t, c.Fleet().Workers)
	})
}
