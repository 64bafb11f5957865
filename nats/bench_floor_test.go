package fanoutnats_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// floor is the engine's own floor, written by hand against nats.go: the
// same JetStream steps as a remote task, and nothing else. The client
// publishes the task to the work-queue stream and waits for its PubAck;
// a worker on its own connection, with 8 slots like fanoutnats's,
// pulls it, publishes the reply to the replies stream (the same stream
// configuration, subject transform included) and waits for its PubAck,
// then acknowledges the task; the client receives the reply on its
// subscription. No deadlines, no cancels, no retries, no run.
type floor struct {
	js      jetstream.JetStream
	mu      sync.Mutex
	waiting map[string]chan []byte
	next    atomic.Int64
	stop    func()
}

func newFloor(tb testing.TB) *floor {
	e := newEnv(tb)
	ctx := context.Background()
	// The streams and consumer as fanoutnats creates them.
	w := e.worker(func(*fanoutnats.Worker) {})
	w.shutdown()

	cnc, wnc := e.conn(), e.conn()
	f := &floor{waiting: map[string]chan []byte{}}
	var err error
	f.js, err = jetstream.New(cnc)
	require.NoError(tb, err)
	wjs, err := jetstream.New(wnc)
	require.NoError(tb, err)
	cons, err := wjs.Consumer(ctx, "FANOUT", "workers")
	require.NoError(tb, err)

	slots := make(chan struct{}, 8)
	var running sync.WaitGroup
	cc, err := cons.Consume(func(m jetstream.Msg) {
		slots <- struct{}{}
		running.Go(func() {
			defer func() { <-slots }()
			var n int
			_ = json.Unmarshal(m.Data(), &n)
			out, _ := json.Marshal(n * n)
			r := nats.NewMsg(m.Headers().Get("Fanout-Reply"))
			r.Header.Set("Fanout-Task", m.Headers().Get("Fanout-Task"))
			r.Data = out
			if _, err := wjs.PublishMsg(ctx, r); err == nil {
				_ = m.Ack()
			}
		})
	}, jetstream.PullMaxMessages(8))
	require.NoError(tb, err)
	sub, err := cnc.Subscribe("fanout.reply.default.floor.>", func(m *nats.Msg) {
		f.mu.Lock()
		ch := f.waiting[m.Header.Get("Fanout-Task")]
		f.mu.Unlock()
		ch <- m.Data
	})
	require.NoError(tb, err)
	f.stop = func() {
		_ = sub.Unsubscribe()
		cc.Stop()
		<-cc.Closed()
		running.Wait()
	}
	tb.Cleanup(f.stop)
	return f
}

// call runs one task n through the floor and returns its result.
func (f *floor) call(ctx context.Context, n int) (int, error) {
	id := strconv.FormatInt(f.next.Add(1), 10)
	ch := make(chan []byte, 1)
	f.mu.Lock()
	f.waiting[id] = ch
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.waiting, id)
		f.mu.Unlock()
	}()
	body, _ := json.Marshal(n)
	m := nats.NewMsg("fanout.task.default.square.floor.k" + id)
	m.Header.Set("Fanout-Task", id)
	m.Header.Set("Fanout-Reply", "fanout.reply.default.floor.b.k"+id)
	m.Data = body
	if _, err := f.js.PublishMsg(ctx, m); err != nil {
		return 0, err
	}
	var v int
	err := json.Unmarshal(<-ch, &v)
	return v, err
}

// floorRuns runs tasks tasks per op through the floor, at most 64 at
// once, as benchRuns runs fanout.Run WithLimit(64).
func floorRuns(b *testing.B, f *floor, tasks int) {
	b.ReportAllocs()
	ctx := context.Background()
	for b.Loop() {
		var wg sync.WaitGroup
		limit := make(chan struct{}, 64)
		for i := range tasks {
			limit <- struct{}{}
			wg.Go(func() {
				defer func() { <-limit }()
				if _, err := f.call(ctx, i); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
	n := float64(b.N * tasks)
	b.ReportMetric(n/b.Elapsed().Seconds(), "tasks/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/task")
}
