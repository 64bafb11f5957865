package fanoutnats_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fleet's promises under attack: reports from any connection allowed
// to publish on PREFIX.status.* and PREFIX.running.>, and the faults and
// races a real fleet meets.

// statusReport is a worker's status report as the wire carries it.
type statusReport struct {
	ID       string        `json:"id"`
	Name     string        `json:"name"`
	Seq      uint64        `json:"seq"`
	Interval time.Duration `json:"interval"`
	Slots    int           `json:"slots"`
	InUse    int           `json:"in_use"`
	Gone     bool          `json:"gone,omitempty"`
}

// runningReport is a worker's running report as the wire carries it.
type runningReport struct {
	ID      string         `json:"id"`
	Seq     uint64         `json:"seq"`
	Batches map[string]int `json:"batches"`
}

// forger publishes whatever it likes on the fleet's subjects, in order,
// on one connection: the client hears its reports on each subject in the
// order it sent them.
type forger struct {
	t  *testing.T
	nc *nats.Conn
}

func (f forger) publish(subject string, v any) {
	f.t.Helper()
	data, ok := v.([]byte)
	if !ok {
		var err error
		data, err = json.Marshal(v)
		require.NoError(f.t, err)
	}
	require.NoError(f.t, f.nc.Publish(subject, data))
}

func (f forger) status(r statusReport) { f.publish("fanout.status."+r.ID, r) }

func (f forger) running(tenant string, r runningReport) {
	f.publish("fanout.running."+tenant+"."+r.ID, r)
}

// join makes c hear of a fake worker id, reporting hourly, and waits for
// it, so that its running reports count from then on.
func (f forger) join(c *fanoutnats.Client, id string) {
	f.t.Helper()
	f.status(statusReport{ID: id, Name: id, Seq: 1, Interval: time.Hour, Slots: 8})
	heard(f.t, c, id)
}

// heard waits until c's fleet shows a worker named name, and returns it.
func heard(t *testing.T, c *fanoutnats.Client, name string) fanoutnats.FleetWorker {
	t.Helper()
	var w fanoutnats.FleetWorker
	require.Eventually(t, func() bool {
		var ok bool
		w, ok = worker(c.Fleet(), name)
		return ok
	}, 10*time.Second, 5*time.Millisecond, "no worker %q heard", name)
	return w
}

// batchOf returns batch id as f shows it; zero if it has nothing waiting.
func batchOf(f fanoutnats.Fleet, id string) fanoutnats.FleetBatch {
	for _, b := range f.Batches {
		if b.ID == id {
			return b
		}
	}
	return fanoutnats.FleetBatch{}
}

// queue sends n "block" tasks in a new batch of c, which wait in the
// queue until the test ends (no worker takes them), and waits until the
// fleet shows them.
func queue(t *testing.T, c *fanoutnats.Client, n int) *fanoutnats.Batch {
	t.Helper()
	b := c.Batch()
	var tasks []fanout.Task[string]
	for i := range n {
		k := fmt.Sprint("q", i)
		tasks = append(tasks, fanoutnats.Remote[string, string](b, "block", k, k))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = fanout.Run(ctx, tasks)
	}()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool {
		return batchOf(c.Fleet(), b.ID()) == fanoutnats.FleetBatch{ID: b.ID(), Queued: n}
	}, 10*time.Second, 5*time.Millisecond)
	return b
}

// assertSane checks what every FleetBatch must hold, whatever workers
// report: counts never negative, running never more than waiting.
func assertSane(t assert.TestingT, f fanoutnats.Fleet, waiting map[string]int) {
	for _, b := range f.Batches {
		assert.GreaterOrEqual(t, b.Queued, 0, "%+v", b)
		assert.GreaterOrEqual(t, b.Running, 0, "%+v", b)
		if n, ok := waiting[b.ID]; ok {
			assert.Equal(t, n, b.Queued+b.Running, "%+v", b)
		}
	}
}

func TestFleetIgnoresMalformedReports(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	c.Fleet()
	b := queue(t, c, 3)
	f := forger{t, e.conn()}
	f.join(c, "w")
	f.running("default", runningReport{ID: "w", Seq: 1, Batches: map[string]int{b.ID(): 1}})
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		assert.Equal(ct, fanoutnats.FleetBatch{ID: b.ID(), Queued: 2, Running: 1}, batchOf(c.Fleet(), b.ID()))
	}, 10*time.Second, 5*time.Millisecond)

	// Each would change what the fleet shows of w, were it believed.
	for _, garbage := range []string{
		``, `{`, `null`, `"w"`, `[1,2]`, `{"id":7}`,
		`{"id":"","name":"anonymous","seq":2}`,
		`{"id":"w","name":"garbled","seq":-1}`,
		`{"id":"w","name":"garbled","seq":2,"slots":"many"}`,
		`{"id":"w","name":"garbled","seq":2,"interval":"soon"}`,
		`{"id":"w","name":"garbled","seq":2,"gone":"yes"}`,
	} {
		f.publish("fanout.status.w", []byte(garbage))
	}
	for _, garbage := range []string{
		``, `{`, `null`, `"w"`, `[1,2]`, `{"id":7}`,
		`{"id":"w","seq":-1,"batches":{}}`,
		`{"id":"w","seq":1,"batches":{"` + b.ID() + `":"two"}}`,
		`{"id":"w","seq":1,"batches":{"` + b.ID() + `":2.5}}`,
		`{"id":"w","seq":1,"batches":[1]}`,
	} {
		f.publish("fanout.running.default.w", []byte(garbage))
	}
	// Read after the garbage on each subscription: once these count, the
	// garbage was read, and dropped.
	f.join(c, "marker")
	f.running("default", runningReport{ID: "marker", Seq: 1, Batches: map[string]int{b.ID(): 1}})
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		fl := c.Fleet()
		assert.Equal(ct, []string{"marker", "w"}, names(fl))
		got, _ := worker(fl, "w")
		assert.Equal(ct, 8, got.Slots)
		assert.Equal(ct, fanoutnats.FleetBatch{ID: b.ID(), Queued: 1, Running: 2}, batchOf(fl, b.ID()))
	}, 10*time.Second, 5*time.Millisecond)
}

func TestFleetKeepsRunningWithinWaitingWhateverWorkersClaim(t *testing.T) {
	const waiting = 3
	tests := []struct {
		name string
		give []int // each fake worker's count of the batch
		want int   // running
	}{
		{name: "a negative count is no task", give: []int{-5, 2}, want: 2},
		{name: "the lowest int is no task", give: []int{math.MinInt, 1}, want: 1},
		{name: "more than waiting is capped at waiting", give: []int{100}, want: waiting},
		{name: "huge counts do not wrap around", give: []int{math.MaxInt, math.MaxInt, 1}, want: waiting},
	}
	e := newEnv(t)
	c := e.client()
	c.Fleet()
	f := forger{t, e.conn()}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := queue(t, c, waiting)
			for j, n := range tt.give {
				id := fmt.Sprint("liar", i, "-", j)
				f.join(c, id)
				f.running("default", runningReport{ID: id, Seq: 1, Batches: map[string]int{b.ID(): n}})
			}
			require.EventuallyWithT(t, func(ct *assert.CollectT) {
				fl := c.Fleet()
				assertSane(ct, fl, map[string]int{b.ID(): waiting})
				assert.Equal(ct, fanoutnats.FleetBatch{ID: b.ID(), Queued: waiting - tt.want, Running: tt.want},
					batchOf(fl, b.ID()))
			}, 10*time.Second, 5*time.Millisecond)
		})
	}
}

func TestFleetRunningReportFromTheFutureDoesNotStick(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	c.Fleet()
	b := queue(t, c, 3)
	f := forger{t, e.conn()}
	f.join(c, "w") // seq 1
	f.running("default", runningReport{ID: "w", Seq: math.MaxUint64, Batches: map[string]int{b.ID(): 2}})
	f.status(statusReport{ID: "w", Name: "w", Seq: 2, Interval: time.Hour})
	f.running("default", runningReport{ID: "w", Seq: 3, Batches: map[string]int{b.ID(): 1}})
	f.status(statusReport{ID: "w", Name: "w", Seq: 3, Interval: time.Hour})
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		assert.Equal(ct, fanoutnats.FleetBatch{ID: b.ID(), Queued: 2, Running: 1}, batchOf(c.Fleet(), b.ID()),
			"the worker's report with its status of seq 3 counts")
	}, 10*time.Second, 5*time.Millisecond)
	f.status(statusReport{ID: "w", Name: "w", Seq: 4, Interval: time.Hour})
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		assert.Equal(ct, fanoutnats.FleetBatch{ID: b.ID(), Queued: 3}, batchOf(c.Fleet(), b.ID()),
			"no running report with seq 4: nothing runs")
	}, 10*time.Second, 5*time.Millisecond)
}

func TestFleetStatusFromTheFutureDoesNotSilenceTheRealWorker(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	c.Fleet()
	e.worker(func(*fanoutnats.Worker) {}, fanoutnats.WithName("real"), fanoutnats.WithConcurrency(2),
		fanoutnats.WithStatusInterval(fastStatus))
	real := heard(t, c, "real")
	f := forger{t, e.conn()}
	f.status(statusReport{ID: real.ID, Name: "impostor", Seq: math.MaxUint64, Interval: time.Hour, Slots: 99})
	f.status(statusReport{ID: "marker", Name: "marker", Seq: 1, Interval: time.Hour})
	heard(t, c, "marker") // the impostor's report was read before
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		fl := c.Fleet()
		assert.Equal(ct, []string{"marker", "real"}, names(fl), "the worker's own reports win again")
		got, _ := worker(fl, "real")
		assert.Equal(ct, real.ID, got.ID)
		assert.Equal(ct, 2, got.Slots)
	}, 10*time.Second, 5*time.Millisecond)
}

func TestFleetTakesAWorkersIDFromItsSubject(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	c.Fleet()
	b := queue(t, c, 2)
	// Reports so rare that only its first can tell: a forged report
	// would stay. It holds the batch's tasks without reporting them.
	e.worker(newGate().register, fanoutnats.WithName("real"), fanoutnats.WithStatusInterval(time.Hour))
	real := heard(t, c, "real")
	f := forger{t, e.conn()}
	f.publish("fanout.status.elsewhere", statusReport{ID: real.ID, Name: "real", Seq: 2, Gone: true})
	f.publish("fanout.status.elsewhere", statusReport{ID: real.ID, Name: "impostor", Seq: 3, Interval: time.Hour})
	f.publish("fanout.running.default.elsewhere", runningReport{ID: real.ID, Seq: 3, Batches: map[string]int{b.ID(): 2}})
	f.join(c, "marker")
	f.running("default", runningReport{ID: "marker", Seq: 1, Batches: map[string]int{b.ID(): 1}})
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		assert.Equal(ct, fanoutnats.FleetBatch{ID: b.ID(), Queued: 1, Running: 1}, batchOf(c.Fleet(), b.ID()))
	}, 10*time.Second, 5*time.Millisecond, "the marker's running report, sent after the forged one, counts")
	fl := c.Fleet()
	assert.Equal(t, []string{"marker", "real"}, names(fl), "neither goodbye nor report in another's name")
	got, _ := worker(fl, "real")
	assert.Equal(t, real.ID, got.ID)
}

func TestFleetFloodOfFakeWorkers(t *testing.T) {
	t.Run("neither evicts the workers heard nor grows past 1 000", func(t *testing.T) {
		e := newEnv(t)
		c := e.client()
		c.Fleet()
		e.worker(func(*fanoutnats.Worker) {}, fanoutnats.WithName("real"), fanoutnats.WithStatusInterval(fastStatus))
		heard(t, c, "real")
		f := forger{t, e.conn()}
		const flood = 1500
		for i := range flood {
			id := fmt.Sprintf("fake%04d", i)
			f.status(statusReport{ID: id, Name: id, Seq: 1, Interval: time.Hour})
		}
		// One fake leaves: room for one more, the marker, which is read
		// after the whole flood.
		f.status(statusReport{ID: "fake0000", Seq: 2, Gone: true})
		f.status(statusReport{ID: "marker", Name: "marker", Seq: 1, Interval: time.Hour})
		heard(t, c, "marker")
		fl := c.Fleet()
		assert.Len(t, fl.Workers, 1000)
		_, ok := worker(fl, "real")
		assert.True(t, ok, "the real worker stays")
		_, ok = worker(fl, "fake0999")
		assert.False(t, ok, "past the cap, the flood is ignored")
	})

	t.Run("that stop reporting make room for real ones", func(t *testing.T) {
		e := newEnv(t)
		c := e.client()
		c.Fleet()
		f := forger{t, e.conn()}
		for i := range 1000 {
			id := fmt.Sprintf("fake%04d", i)
			f.status(statusReport{ID: id, Name: id, Seq: 1, Interval: fastStatus})
		}
		heard(t, c, "fake0999")
		e.worker(func(*fanoutnats.Worker) {}, fanoutnats.WithName("real"), fanoutnats.WithStatusInterval(fastStatus))
		heard(t, c, "real")
		require.Eventually(t, func() bool { return len(c.Fleet().Workers) == 1 }, 10*time.Second, 5*time.Millisecond)
	})
}

func TestFleetCostDoesNotGrowWithBatchesItDoesNotWaitFor(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	c.Fleet()
	b := queue(t, c, 2)
	f := forger{t, e.conn()}
	f.join(c, "w")
	batches := map[string]int{b.ID(): 1}
	for i := range 10_000 {
		batches[fmt.Sprintf("someone-elses-%05d", i)] = 1
	}
	f.running("default", runningReport{ID: "w", Seq: 1, Batches: batches})
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		assert.Equal(ct, []fanoutnats.FleetBatch{{ID: b.ID(), Queued: 1, Running: 1}}, c.Fleet().Batches)
	}, 10*time.Second, 5*time.Millisecond)

	const calls = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range calls {
		c.Fleet()
	}
	runtime.ReadMemStats(&after)
	perCall := (after.TotalAlloc - before.TotalAlloc) / calls
	assert.Less(t, perCall, uint64(32<<10), "bytes allocated by one Fleet with 10 000 foreign batches reported")
}

func TestFleetCountsEachAttempt(t *testing.T) {
	t.Run("a hedge runs beside its original", func(t *testing.T) {
		e := newEnv(t)
		c := e.client()
		c.Fleet()
		g := newGate()
		e.worker(g.register, fanoutnats.WithConcurrency(2), fanoutnats.WithStatusInterval(fastStatus))
		b := c.Batch()
		done := make(chan error, 1)
		go func() {
			_, err := fanout.Run(context.Background(),
				[]fanout.Task[string]{fanoutnats.Remote[string, string](b, "block", "k", "k")},
				fanout.WithTimeout(30*time.Second),
				fanout.WithHedge(fanout.HedgePolicy{Delay: 50 * time.Millisecond, MaxExtra: 1}))
			done <- err
		}()
		g.started.wait(t)
		g.started.wait(t)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			assert.Equal(ct, []fanoutnats.FleetBatch{{ID: b.ID(), Running: 2}}, c.Fleet().Batches)
		}, 10*time.Second, 5*time.Millisecond)
		close(g.open)
		require.NoError(t, <-done)
		require.Eventually(t, func() bool { return len(c.Fleet().Batches) == 0 }, 10*time.Second, 5*time.Millisecond)
	})

	t.Run("a failed attempt stops counting when its retry starts", func(t *testing.T) {
		e := newEnv(t)
		c := e.client()
		c.Fleet()
		g := newGate()
		var mu sync.Mutex
		tries := 0
		e.worker(func(w *fanoutnats.Worker) {
			fanoutnats.Handle(w, "flaky", func(ctx context.Context, k string) (string, error) {
				mu.Lock()
				tries++
				first := tries == 1
				mu.Unlock()
				if first {
					return "", fmt.Errorf("first try of %s fails", k)
				}
				g.started.send(k)
				select {
				case <-g.open:
					return k, nil
				case <-ctx.Done():
					return "", context.Cause(ctx)
				}
			})
		}, fanoutnats.WithStatusInterval(fastStatus))
		b := c.Batch()
		done := make(chan error, 1)
		go func() {
			_, err := fanout.Run(context.Background(),
				[]fanout.Task[string]{fanoutnats.Remote[string, string](b, "flaky", "k", "k")},
				fanout.WithTimeout(30*time.Second),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Millisecond,
					RetryIf: func(error) bool { return true }}))
			done <- err
		}()
		g.started.wait(t)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			assert.Equal(ct, []fanoutnats.FleetBatch{{ID: b.ID(), Running: 1}}, c.Fleet().Batches)
		}, 10*time.Second, 5*time.Millisecond)
		close(g.open)
		require.NoError(t, <-done)
		require.Eventually(t, func() bool { return len(c.Fleet().Batches) == 0 }, 10*time.Second, 5*time.Millisecond)
	})

	t.Run("a crashed worker's task counts once, where it is redelivered", func(t *testing.T) {
		e := newEnv(t)
		c := e.client()
		c.Fleet()
		g := newGate()
		crashing := e.worker(g.register, fanoutnats.WithName("crashing"), fanoutnats.WithStatusInterval(fastStatus))
		b := c.Batch()
		wait := g.run(t, b, 1)
		g.started.wait(t)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			assert.Equal(ct, []fanoutnats.FleetBatch{{ID: b.ID(), Running: 1}}, c.Fleet().Batches)
		}, 10*time.Second, 5*time.Millisecond)
		e.worker(g.register, fanoutnats.WithName("taking-over"), fanoutnats.WithStatusInterval(fastStatus))
		crashing.kill(t)
		g.started.wait(t) // redelivered after AckWait
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			fl := c.Fleet()
			assert.Equal(ct, []string{"taking-over"}, names(fl))
			assert.Equal(ct, []fanoutnats.FleetBatch{{ID: b.ID(), Running: 1}}, fl.Batches)
		}, 10*time.Second, 5*time.Millisecond)
		close(g.open)
		require.Equal(t, 1, wait().Succeeded())
		require.Eventually(t, func() bool { return len(c.Fleet().Batches) == 0 }, 10*time.Second, 5*time.Millisecond)
		assert.Equal(t, int64(1), c.Stats().Redelivered)
	})
}

// fleetSubscriptions lists the subscriptions to workers' reports that
// the server holds, from any connection.
func fleetSubscriptions(t *testing.T, e *env) []string {
	t.Helper()
	cz, err := e.srv.Server().Connz(&server.ConnzOptions{Subscriptions: true})
	require.NoError(t, err)
	var subs []string
	for _, conn := range cz.Conns {
		for _, s := range conn.Subs {
			if strings.HasPrefix(s, "fanout.status.") || strings.HasPrefix(s, "fanout.running.") {
				subs = append(subs, s)
			}
		}
	}
	return subs
}

func TestFleetRacesRunsAndClose(t *testing.T) {
	e := newEnv(t)
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "echo", func(_ context.Context, s string) (string, error) { return s, nil })
	}, fanoutnats.WithStatusInterval(10*time.Millisecond))
	nc := e.conn()
	c, err := fanoutnats.NewClient(context.Background(), nc, testOpts()...)
	require.NoError(t, err)

	stop := make(chan struct{})
	var lookers sync.WaitGroup
	for range 4 {
		lookers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				assertSane(t, c.Fleet(), nil)
			}
		})
	}
	var runs sync.WaitGroup
	for r := range 3 {
		runs.Go(func() {
			var keys []string
			for i := range 30 {
				keys = append(keys, fmt.Sprint("r", r, "k", i))
			}
			_, err := fanout.Run(context.Background(), echoTasks(c.Batch(), keys...), fanout.WithTimeout(20*time.Second))
			assert.NoError(t, err)
		})
	}
	runs.Wait()
	require.Eventually(t, func() bool { return len(c.Fleet().Workers) == 1 }, 10*time.Second, 5*time.Millisecond)
	c.Close() // while the lookers go on
	close(stop)
	lookers.Wait()

	assert.Empty(t, c.Fleet().Workers)
	assert.Empty(t, c.Fleet().Batches)
	require.NoError(t, nc.Flush())
	assert.Empty(t, fleetSubscriptions(t, e), "closed: the client listens no more, and Fleet does not listen again")
}

func TestFleetForgetsAWorkerRestartedUnderTheSameName(t *testing.T) {
	for _, how := range []string{"crash", "stop"} {
		t.Run("after a "+how, func(t *testing.T) {
			e := newEnv(t)
			c := e.client()
			c.Fleet()
			opts := []fanoutnats.Option{fanoutnats.WithName("phoenix"), fanoutnats.WithStatusInterval(fastStatus)}
			old := e.worker(func(*fanoutnats.Worker) {}, opts...)
			first := heard(t, c, "phoenix")
			if how == "crash" {
				old.kill(t)
			} else {
				old.shutdown()
			}
			e.worker(func(*fanoutnats.Worker) {}, opts...)
			require.EventuallyWithT(t, func(ct *assert.CollectT) {
				fl := c.Fleet()
				if assert.Equal(ct, []string{"phoenix"}, names(fl)) {
					assert.NotEqual(ct, first.ID, fl.Workers[0].ID, "the new worker, not the old")
				}
			}, 10*time.Second, 5*time.Millisecond)
		})
	}
}

func TestStatusIntervalEdges(t *testing.T) {
	e := newEnv(t)
	_, err := fanoutnats.NewWorker(context.Background(), e.conn(),
		fanoutnats.WithStatusInterval(10*time.Millisecond-time.Nanosecond))
	require.Error(t, err, "just under the minimum")

	t.Run("the minimum reports that often", func(t *testing.T) {
		c := e.client()
		c.Fleet()
		e.worker(func(*fanoutnats.Worker) {}, fanoutnats.WithName("min"), fanoutnats.WithStatusInterval(10*time.Millisecond))
		first := heard(t, c, "min").Seen
		require.Eventually(t, func() bool {
			w, ok := worker(c.Fleet(), "min")
			return ok && w.Seen.After(first)
		}, 10*time.Second, 5*time.Millisecond)
	})

	for _, d := range []time.Duration{1 << 62, math.MaxInt64} {
		t.Run(fmt.Sprintf("a worker reporting every %v is remembered", d), func(t *testing.T) {
			c := e.client()
			c.Fleet()
			name := fmt.Sprint("rare", int64(d))
			e.worker(func(*fanoutnats.Worker) {}, fanoutnats.WithName(name), fanoutnats.WithStatusInterval(d))
			heard(t, c, name)
			_, ok := worker(c.Fleet(), name)
			assert.True(t, ok, "still there a moment later")
		})
	}
}

func TestFleetHearsAWorkerAgainAfterItsConnectionComesBack(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	c.Fleet()
	p := newProxy(t, strings.TrimPrefix(e.srv.URL(), "nats://"))
	wnc, err := fanoutnats.Connect([]string{p.url()}, nats.IgnoreDiscoveredServers())
	require.NoError(t, err)
	t.Cleanup(wnc.Close)
	w := e.workerOn(wnc, func(*fanoutnats.Worker) {}, fanoutnats.WithName("flaky"), fanoutnats.WithStatusInterval(fastStatus))
	before := heard(t, c, "flaky")

	p.setCut(true)
	require.Eventually(t, func() bool { return len(c.Fleet().Workers) == 0 }, 10*time.Second, 5*time.Millisecond,
		"three reports missed: forgotten")
	p.setCut(false)
	after := heard(t, c, "flaky")
	assert.Equal(t, before.ID, after.ID, "the same worker, back")
	select {
	case err := <-w.done:
		t.Fatalf("Serve returned while the connection was away: %v", err)
	default:
	}
}

func TestTenantsNeverHearAnotherTenantsBatches(t *testing.T) {
	e := tenantsServer(t)
	g := newGate()
	shared := e.workerOn(e.login("worker", nil), g.register, fanoutnats.WithBind(), fanoutnats.WithName("shared"),
		fanoutnats.WithStatusInterval(fastStatus))
	spy := make(violations, 100)
	acme, globex := e.tenant("acme", nil), e.tenant("globex", spy)
	acme.Fleet()
	globex.Fleet()
	nc := e.login("globex", spy)
	heardByGlobex, err := nc.SubscribeSync("fanout.status.*")
	require.NoError(t, err)
	ownRunning, err := nc.SubscribeSync("fanout.running.globex.*")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	b := acme.Batch()
	wait := g.run(t, b, 2)
	g.started.wait(t)
	g.started.wait(t)
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		assert.Equal(ct, []fanoutnats.FleetBatch{{ID: b.ID(), Running: 2}}, acme.Fleet().Batches)
		f := globex.Fleet()
		assert.Empty(ct, f.Batches)
		if w, ok := worker(f, "shared"); assert.True(ct, ok) {
			assert.Equal(ct, 2, w.InUse, "the shared worker's load is known to all")
		}
	}, 10*time.Second, 5*time.Millisecond)
	close(g.open)
	wait()
	shared.shutdown() // and its goodbye

	t.Run("nothing globex hears names acme or its batch", func(t *testing.T) {
		got := 0
		for _, sub := range []*nats.Subscription{heardByGlobex, ownRunning} {
			for m, err := sub.NextMsg(0); err == nil; m, err = sub.NextMsg(0) {
				got++
				assert.NotContains(t, string(m.Data), b.ID(), m.Subject)
				assert.NotContains(t, m.Subject+".", ".acme.", m.Subject)
				assert.NotContains(t, string(m.Data), `"acme"`, m.Subject)
			}
		}
		assert.NotZero(t, got, "globex heard the shared worker's reports")
	})
	t.Run("globex may not forge reports", func(t *testing.T) {
		for _, subject := range []string{"fanout.status.forged", "fanout.running.acme.forged", "fanout.running.globex.forged"} {
			require.NoError(t, nc.Publish(subject, []byte(`{"id":"forged","seq":1}`)))
			spy.wait(t, subject)
		}
	})
}

// TestFleetKeepsAWorkersNameShort: a report with a 512 KiB name costs
// the client 256 bytes of it, cut between characters, so that a thousand
// forged workers hold kilobytes each, not half a gigabyte.
func TestFleetKeepsAWorkersNameShort(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	c.Fleet()
	f := forger{t, e.conn()}
	long := "w" + strings.Repeat("é", 1<<18) // 512 KiB, two bytes a character
	f.status(statusReport{ID: "long", Name: long, Seq: 1, Interval: time.Hour, Slots: 1})
	f.status(statusReport{ID: "toolongid" + strings.Repeat("x", 64), Name: "ghost", Seq: 1, Interval: time.Hour})
	f.join(c, "marker") // read after both
	fl := c.Fleet()
	require.Len(t, fl.Workers, 2, "the report with a 73-byte ID is no worker's")
	var got fanoutnats.FleetWorker
	for _, w := range fl.Workers {
		if w.ID == "long" {
			got = w
		}
	}
	assert.Equal(t, 255, len(got.Name), "256 bytes would cut an é in two")
	assert.True(t, utf8.ValidString(got.Name))
	assert.True(t, strings.HasPrefix(long, got.Name))
}
