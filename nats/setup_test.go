package fanoutnats_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClientsAndWorkersStartingTogetherNeverUpdateTheStream(t *testing.T) {
	e := newEnv(t)
	watcher := e.conn()
	// Every JetStream API request shows up as an audit advisory naming its
	// subject, such as $JS.API.STREAM.UPDATE.FANOUT.
	requests := make(chan string, 100)
	sub, err := watcher.Subscribe("$JS.EVENT.ADVISORY.API", func(m *nats.Msg) {
		var audit struct {
			Subject string `json:"subject"`
		}
		if json.Unmarshal(m.Data, &audit) == nil {
			requests <- audit.Subject
		}
	})
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	require.NoError(t, watcher.Flush())

	// Updating the stream while consumers are created on it races inside
	// nats-server (fileStore.UpdateConfig against ConsumerStore), so
	// starting many at once must only look the stream up, or create it.
	opts := []fanoutnats.Option{fanoutnats.WithAckWait(fastAck)} // file storage, as by default
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		nc := e.conn()
		wg.Go(func() {
			var err error
			if i%2 == 0 {
				var c *fanoutnats.Client
				if c, err = fanoutnats.NewClient(context.Background(), nc, opts...); err == nil {
					c.Close()
				}
			} else {
				_, err = fanoutnats.NewWorker(context.Background(), nc, opts...)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	// The server sends audits in the order it answers: once the marker
	// stream's arrives, the others have too.
	js, err := jetstream.New(watcher)
	require.NoError(t, err)
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "MARKER", Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	count := map[string]int{}
	for subj := ""; subj != "$JS.API.STREAM.CREATE.MARKER"; {
		select {
		case subj = <-requests:
			count[subj]++
		case <-time.After(10 * time.Second):
			t.Fatalf("no audit of the marker stream's creation; got %v", count)
		}
	}
	assert.Zero(t, count["$JS.API.STREAM.UPDATE.FANOUT"], "no stream updates: %v", count)
	for subj, n := range count {
		assert.NotContains(t, subj, "UPDATE", "%d requests", n)
	}
	assert.Equal(t, 8, count["$JS.API.STREAM.INFO.FANOUT"], "each looked the stream up: %v", count)
}

func TestDefaultClientUsesAnOperatorProvisionedStreamAsItIs(t *testing.T) {
	e := newEnv(t)
	js, err := jetstream.New(e.conn())
	require.NoError(t, err)
	provisioned := jetstream.StreamConfig{
		Name:        "FANOUT",
		Description: "provisioned by ops",
		Subjects:    []string{"fanout.task.>", "jobs.>"}, // more than the tasks: fine
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage, // the tests' options ask for memory
		MaxAge:      time.Hour,
	}
	_, err = js.CreateStream(context.Background(), provisioned)
	require.NoError(t, err)
	ops := jetstream.ConsumerConfig{
		Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 2 * time.Second, MaxDeliver: 3, FilterSubject: "fanout.task.>",
	}
	_, err = js.CreateConsumer(context.Background(), "FANOUT", ops)
	require.NoError(t, err)

	c := e.client() // WithMemoryStorage, WithAckWait(fastAck), no WithBind
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "echo", func(_ context.Context, s string) (string, error) { return s, nil })
	}, fanoutnats.WithMaxDeliver(9))
	rs, err := fanout.Run(context.Background(),
		[]fanout.Task[string]{fanoutnats.Remote[string, string](c, "echo", "k", "hello")})
	require.NoError(t, err)
	v, _ := rs.Value("k")
	assert.Equal(t, "hello", v)

	s, err := js.Stream(context.Background(), "FANOUT")
	require.NoError(t, err)
	got := s.CachedInfo().Config
	assert.Equal(t, jetstream.FileStorage, got.Storage)
	assert.Equal(t, time.Hour, got.MaxAge)
	assert.Equal(t, "provisioned by ops", got.Description)
	assert.Equal(t, []string{"fanout.task.>", "jobs.>"}, got.Subjects)
	cons, err := js.Consumer(context.Background(), "FANOUT", "workers")
	require.NoError(t, err)
	assert.Equal(t, 2*time.Second, cons.CachedInfo().Config.AckWait)
	assert.Equal(t, 3, cons.CachedInfo().Config.MaxDeliver)
}

func TestAnUnusableExistingStreamIsReportedNotChanged(t *testing.T) {
	base := workQueueStream()
	tests := []struct {
		name  string
		give  func(*jetstream.StreamConfig)
		wants []string
	}{
		{
			name:  "limits retention",
			give:  func(sc *jetstream.StreamConfig) { sc.Retention = jetstream.LimitsPolicy },
			wants: []string{"retention is Limits, want WorkQueue"},
		},
		{
			name:  "subjects that miss the tasks",
			give:  func(sc *jetstream.StreamConfig) { sc.Subjects = []string{"fanout.task.other.>", "jobs.>"} },
			wants: []string{`subjects ["fanout.task.other.>" "jobs.>"] do not cover "fanout.task.>"`},
		},
		{
			name:  "subjects that capture the replies too",
			give:  func(sc *jetstream.StreamConfig) { sc.Subjects = []string{"fanout.>"} },
			wants: []string{`subjects ["fanout.>"] capture the replies "fanout.reply.*.*.*.*" too`},
		},
		{
			name: "purges and deletes denied",
			give: func(sc *jetstream.StreamConfig) { sc.DenyPurge, sc.DenyDelete = true, true },
			wants: []string{"it is deny_delete (cancelled tasks are deleted)",
				"it is deny_purge (a cancelled run purges its tasks)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			nc := e.conn()
			js, err := jetstream.New(nc)
			require.NoError(t, err)
			sc := base
			tt.give(&sc)
			_, err = js.CreateStream(context.Background(), sc)
			require.NoError(t, err)

			for _, bind := range []bool{false, true} {
				opts := testOpts()
				if bind {
					opts = append(opts, fanoutnats.WithBind())
				}
				_, err = fanoutnats.NewClient(context.Background(), nc, opts...)
				require.Error(t, err)
				assert.ErrorContains(t, err, `fanoutnats: stream "FANOUT" is not usable as it is`)
				for _, want := range tt.wants {
					assert.ErrorContains(t, err, want)
				}
				_, err = fanoutnats.NewWorker(context.Background(), nc, opts...)
				assert.ErrorContains(t, err, tt.wants[0])
			}
			s, err := js.Stream(context.Background(), "FANOUT")
			require.NoError(t, err)
			assert.Equal(t, sc.Retention, s.CachedInfo().Config.Retention)
			assert.Equal(t, sc.Subjects, s.CachedInfo().Config.Subjects)
		})
	}
}

func TestAnUnusableExistingConsumerIsReportedNotChanged(t *testing.T) {
	e := newEnv(t)
	nc := e.conn()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(context.Background(), workQueueStream())
	require.NoError(t, err)
	_, err = js.CreateConsumer(context.Background(), "FANOUT", jetstream.ConsumerConfig{
		Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "fanout.task.score.>",
	})
	require.NoError(t, err)

	_, err = fanoutnats.NewWorker(context.Background(), nc, testOpts()...)
	require.ErrorContains(t, err, `fanoutnats: consumer "workers" of stream "FANOUT" is not usable as it is`)
	assert.ErrorContains(t, err, `filter subjects ["fanout.task.score.>"] do not cover "fanout.task.>"`)
	cons, err := js.Consumer(context.Background(), "FANOUT", "workers")
	require.NoError(t, err)
	assert.Equal(t, "fanout.task.score.>", cons.CachedInfo().Config.FilterSubject)
}

func TestAnUnusableRepliesStreamIsReportedNotChanged(t *testing.T) {
	tests := []struct {
		name  string
		give  func(*jetstream.StreamConfig)
		wants []string
	}{
		{
			name:  "no subject transform",
			give:  func(sc *jetstream.StreamConfig) { sc.SubjectTransform = nil },
			wants: []string{`subject transform is <nil>, want "fanout.reply.*.*.*.*" to "fanout.reply.{{wildcard(1)}}.{{wildcard(3)}}.{{wildcard(4)}}"`},
		},
		{
			name:  "no direct gets",
			give:  func(sc *jetstream.StreamConfig) { sc.AllowDirect = false },
			wants: []string{"allow_direct is off"},
		},
		{
			name:  "interest retention",
			give:  func(sc *jetstream.StreamConfig) { sc.Retention = jetstream.InterestPolicy },
			wants: []string{"retention is Interest, want Limits"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			nc := e.conn()
			js, err := jetstream.New(nc)
			require.NoError(t, err)
			_, err = js.CreateStream(context.Background(), workQueueStream())
			require.NoError(t, err)
			sc := repliesStream()
			tt.give(&sc)
			_, err = js.CreateStream(context.Background(), sc)
			require.NoError(t, err)
			_, err = fanoutnats.NewClient(context.Background(), nc, testOpts()...)
			require.ErrorContains(t, err, `fanoutnats: stream "FANOUT_REPLIES" is not usable as it is`)
			for _, want := range tt.wants {
				assert.ErrorContains(t, err, want)
			}
		})
	}
}
