package fanoutnats_test

import (
	"context"
	"os"
	"testing"
	"time"

	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/gofanout/fanout/nats/embedded"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(benchWorkerEnv); url != "" {
		os.Exit(runBenchWorker(url))
	}
	if spec := os.Getenv(crashChildEnv); spec != "" {
		os.Exit(runCrashChild(spec))
	}
	goleak.VerifyTestMain(m)
}

// fastAck keeps redelivery quick in tests; workers beat every third of it.
const fastAck = 400 * time.Millisecond

// env is one embedded server with helpers to connect to it.
type env struct {
	t   testing.TB
	srv *embedded.Server
	js  jetstream.JetStream // for looking into the streams; see inspect
}

func newEnv(t testing.TB, opts ...embedded.Option) *env {
	t.Helper()
	srv, err := embedded.Start(t.TempDir(), opts...)
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv}
}

func (e *env) conn() *nats.Conn {
	e.t.Helper()
	nc, err := fanoutnats.Connect([]string{e.srv.URL()})
	require.NoError(e.t, err)
	e.t.Cleanup(nc.Close)
	return nc
}

func (e *env) client(opts ...fanoutnats.Option) *fanoutnats.Client {
	e.t.Helper()
	c, err := fanoutnats.NewClient(context.Background(), e.conn(), append(testOpts(), opts...)...)
	require.NoError(e.t, err)
	e.t.Cleanup(c.Close)
	return c
}

func testOpts() []fanoutnats.Option {
	return []fanoutnats.Option{fanoutnats.WithAckWait(fastAck), fanoutnats.WithMemoryStorage()}
}

// runningWorker is a worker serving in the background on its own
// connection, so a test can kill that connection.
type runningWorker struct {
	*fanoutnats.Worker
	nc   *nats.Conn
	stop context.CancelFunc
	done chan error
}

// worker starts a worker with the handlers register adds, serving until
// the test ends (or its connection is killed).
func (e *env) worker(register func(*fanoutnats.Worker), opts ...fanoutnats.Option) *runningWorker {
	e.t.Helper()
	return e.workerOn(e.conn(), register, opts...)
}

// workerOn starts a worker as worker does, on nc.
func (e *env) workerOn(nc *nats.Conn, register func(*fanoutnats.Worker), opts ...fanoutnats.Option) *runningWorker {
	e.t.Helper()
	// Creating a replicated consumer on a busy machine can take a while.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := fanoutnats.NewWorker(ctx, nc, append(testOpts(), opts...)...)
	require.NoError(e.t, err)
	register(w)
	ctx, stop := context.WithCancel(context.Background())
	rw := &runningWorker{Worker: w, nc: nc, stop: stop, done: make(chan error, 1)}
	go func() { rw.done <- w.Serve(ctx) }()
	e.t.Cleanup(rw.shutdown)
	return rw
}

// kill closes the worker's connection, as a crash would, and waits for
// Serve to return.
func (rw *runningWorker) kill(t *testing.T) {
	rw.nc.Close()
	select {
	case err := <-rw.done:
		require.Error(t, err)
		rw.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not stop after its connection closed")
	}
}

// shutdown stops the worker gracefully and waits for Serve to return; it
// may be called more than once.
func (rw *runningWorker) shutdown() {
	rw.stop()
	err := <-rw.done
	rw.done <- err
}

// inspect returns a JetStream handle on a connection of its own.
func (e *env) inspect() jetstream.JetStream {
	e.t.Helper()
	if e.js == nil {
		js, err := jetstream.New(e.conn())
		require.NoError(e.t, err)
		e.js = js
	}
	return e.js
}

func (e *env) stream(c *fanoutnats.Client) jetstream.Stream {
	e.t.Helper()
	s, err := e.inspect().Stream(context.Background(), "FANOUT")
	require.NoError(e.t, err)
	return s
}

func (e *env) queued() uint64 {
	e.t.Helper()
	info, err := e.stream(nil).Info(context.Background())
	require.NoError(e.t, err)
	return info.State.Msgs
}

// storedReplies counts the replies stream's messages.
func (e *env) storedReplies() uint64 {
	e.t.Helper()
	s, err := e.inspect().Stream(context.Background(), "FANOUT_REPLIES")
	require.NoError(e.t, err)
	return s.CachedInfo().State.Msgs
}

// signals collects names sent by handlers, for tests to wait on.
type signals struct {
	ch chan string
}

func newSignals() *signals { return &signals{ch: make(chan string, 100)} }

func (s *signals) send(v string) { s.ch <- v }

func (s *signals) wait(t *testing.T) string {
	t.Helper()
	select {
	case v := <-s.ch:
		return v
	case <-time.After(15 * time.Second):
		t.Fatal("timed out waiting for a handler signal")
		return ""
	}
}

func newJetStream(nc *nats.Conn) (jetstream.JetStream, error) { return jetstream.New(nc) }

func workQueueStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:      "FANOUT",
		Subjects:  []string{"fanout.task.>"},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.MemoryStorage,
	}
}

// repliesStream is the replies stream as an operator would provision it.
func repliesStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:      "FANOUT_REPLIES",
		Subjects:  []string{"fanout.reply.*.*.*.*"},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.MemoryStorage,
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source: "fanout.reply.*.*.*.*", Destination: "fanout.reply.{{wildcard(1)}}.{{wildcard(3)}}.{{wildcard(4)}}",
		},
		AllowDirect: true,
		MaxAge:      time.Hour,
	}
}
