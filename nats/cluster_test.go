package fanoutnats_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clusterOpts are the options of clients and workers on a cluster.
func clusterOpts() []fanoutnats.Option {
	return []fanoutnats.Option{fanoutnats.WithReplicas(3), fanoutnats.WithAckWait(2 * time.Second)}
}

// conn connects to node i first, and to the others if it is lost.
func (c *cluster) conn(i int) *nats.Conn {
	c.t.Helper()
	var urls []string
	for j := range c.nodes {
		if s := c.nodes[(i+j)%len(c.nodes)]; s != nil {
			urls = append(urls, s.URL())
		}
	}
	nc, err := fanoutnats.Connect(urls, nats.DontRandomize())
	require.NoError(c.t, err)
	c.t.Cleanup(nc.Close)
	return nc
}

// leader returns the index of the node leading the workers' consumer
// (consumer "") or stream, once there is one.
func (c *cluster) leader(stream, consumer string) int {
	c.t.Helper()
	idx := -1
	require.Eventually(c.t, func() bool {
		for i, s := range c.nodes {
			if s == nil {
				continue
			}
			srv := s.Server()
			if consumer == "" && srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) ||
				consumer != "" && srv.JetStreamIsConsumerLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream, consumer) {
				idx = i
				return true
			}
		}
		return false
	}, 30*time.Second, 5*time.Millisecond, "no leader for %s %s", stream, consumer)
	return idx
}

// settled waits until the streams and the consumer have leaders.
func (c *cluster) settled() {
	c.leader("FANOUT", "")
	c.leader("FANOUT_REPLIES", "")
	c.leader("FANOUT", "workers")
}

func TestEveryKeyOnceWhenTheConsumerLeaderCrashesMidRun(t *testing.T) {
	cl := newCluster(t)
	e := &env{t: t}
	var mu sync.Mutex
	var crashed bool
	done, after := 0, map[string]int{} // tasks finished; by worker after the crash
	crash := make(chan struct{})
	// After the crash, a task waits until every worker has taken one, so
	// that the two workers which keep their connection cannot finish the
	// run before the third has reconnected. A worker that stays idle, the
	// bug this test is for, shows as the wait running out.
	everyWorker := make(chan struct{})
	for i := range 3 {
		e.workerOn(cl.conn(i), func(w *fanoutnats.Worker) {
			fanoutnats.Handle(w, "job", func(ctx context.Context, n int) (int, error) {
				info, _ := fanoutnats.TaskFromContext(ctx)
				mu.Lock()
				wait := crashed
				if crashed {
					if after[info.Worker]++; len(after) == 3 && after[info.Worker] == 1 {
						close(everyWorker)
					}
				}
				if done++; done == 100 {
					close(crash)
				}
				mu.Unlock()
				if wait {
					select {
					case <-everyWorker:
					case <-time.After(20 * time.Second):
					case <-ctx.Done():
					}
				}
				return n * n, nil
			})
		}, append(clusterOpts(), fanoutnats.WithConcurrency(2), fanoutnats.WithName(fmt.Sprint("w", i)))...)
	}
	cl.settled()
	leader := cl.leader("FANOUT", "workers")
	other := (leader + 1) % 3
	c, err := fanoutnats.NewClient(context.Background(), cl.conn(other), clusterOpts()...)
	require.NoError(t, err)
	t.Cleanup(c.Close)

	const n = 600
	b := c.Batch()
	tasks := make([]fanout.Task[int], n)
	for i := range tasks {
		tasks[i] = fanoutnats.Remote[int, int](b, "job", fmt.Sprint("k", i), i)
	}
	go func() {
		<-crash
		cl.crash(leader)
		mu.Lock()
		crashed = true
		mu.Unlock()
	}()
	rs, err := fanout.Run(context.Background(), tasks, fanout.WithLimit(32), fanout.WithTimeout(60*time.Second))
	require.NoError(t, err)
	for i := range n {
		v, err := rs.Value(fmt.Sprint("k", i))
		require.NoError(t, err)
		require.Equal(t, i*i, v)
	}
	mu.Lock()
	assert.Len(t, after, 3, "every worker took tasks after the crash: %v", after)
	mu.Unlock()
	js, err := jetstream.New(cl.conn(other))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s, err := js.Stream(context.Background(), "FANOUT")
		return err == nil && s.CachedInfo().State.Msgs == 0
	}, 10*time.Second, 5*time.Millisecond, "nothing left in the stream")
}
