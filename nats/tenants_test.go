package fanoutnats_test

import (
	"context"
	"strings"
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

// violations collects a connection's asynchronous errors, where the
// server reports permission violations.
type violations chan error

func (v violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	select {
	case v <- err:
	default:
	}
}

// wait returns the next violation naming subject.
func (v violations) wait(t *testing.T, subject string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-v:
			if strings.Contains(err.Error(), "Permissions Violation") && strings.Contains(err.Error(), subject) {
				return
			}
		case <-deadline:
			t.Fatalf("no permissions violation for %q", subject)
		}
	}
}

// tenantsServer starts a server with deploy/tenants.conf, the README's
// configuration, and provisions the streams and consumer as its admin.
func tenantsServer(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, func(o *server.Options) {
		require.NoError(t, o.ProcessConfigFile("deploy/tenants.conf"))
		o.Host, o.Port, o.NoLog = "127.0.0.1", server.RANDOM_PORT, true
	})
	admin := e.login("admin", nil)
	_, err := fanoutnats.NewWorker(context.Background(), admin, testOpts()...)
	require.NoError(t, err)
	return e
}

// login connects as user, with the user's inbox prefix.
func (e *env) login(user string, v violations, opts ...nats.Option) *nats.Conn {
	e.t.Helper()
	opts = append(opts, nats.UserInfo(user, user+"-secret"), nats.CustomInboxPrefix("_INBOX_"+user))
	if v != nil {
		opts = append(opts, nats.ErrorHandler(v.handler))
	}
	nc, err := fanoutnats.Connect([]string{e.srv.URL()}, opts...)
	require.NoError(e.t, err)
	e.t.Cleanup(nc.Close)
	return nc
}

func (e *env) tenant(name string, v violations) *fanoutnats.Client {
	e.t.Helper()
	c, err := fanoutnats.NewClient(context.Background(), e.login(name, v),
		append(testOpts(), fanoutnats.WithTenant(name), fanoutnats.WithBind())...)
	require.NoError(e.t, err)
	e.t.Cleanup(c.Close)
	return c
}

func echoTasks(s fanoutnats.Scope, keys ...string) []fanout.Task[string] {
	var tasks []fanout.Task[string]
	for _, k := range keys {
		tasks = append(tasks, fanoutnats.Remote[string, string](s, "echo", k, k))
	}
	return tasks
}

func TestTenantsWithTheDocumentedPermissionsWorkAndStayApart(t *testing.T) {
	e := tenantsServer(t)
	w := e.workerOn(e.login("worker", nil), func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "echo", func(_ context.Context, s string) (string, error) { return s, nil })
	}, fanoutnats.WithBind())
	spy := make(violations, 100)
	acme, globex := e.tenant("acme", nil), e.tenant("globex", spy)

	// Both tenants run, and resume, under their permissions.
	b := acme.Batch()
	_, err := fanout.Run(context.Background(), echoTasks(b, "a1", "a2"))
	require.NoError(t, err)
	_, err = fanout.Run(context.Background(), echoTasks(globex, "g1"))
	require.NoError(t, err)
	again, err := acme.ResumeBatch(b.ID())
	require.NoError(t, err)
	rs, err := fanout.Run(context.Background(), echoTasks(again, "a1", "a2"))
	require.NoError(t, err)
	assert.Equal(t, 2, rs.Succeeded())
	assert.Equal(t, int64(2), acme.Stats().Resumed, "read back with the tenant's own direct gets")

	nc := e.login("globex", spy)
	t.Run("a tenant cannot subscribe to another's replies", func(t *testing.T) {
		_, err := nc.Subscribe("fanout.reply.acme.>", func(*nats.Msg) {})
		require.NoError(t, err) // refused asynchronously
		spy.wait(t, "fanout.reply.acme.>")
	})
	t.Run("nor read another's stored replies", func(t *testing.T) {
		subject := "$JS.API.DIRECT.GET.FANOUT_REPLIES.fanout.reply.acme." + b.ID() + ".a1"
		_, err := nc.Request(subject, nil, time.Second)
		require.Error(t, err)
		spy.wait(t, subject)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = js.CreateConsumer(ctx, "FANOUT_REPLIES", jetstream.ConsumerConfig{FilterSubject: "fanout.reply.acme.>"})
		require.Error(t, err)
	})
	t.Run("nor send tasks in another's name", func(t *testing.T) {
		require.NoError(t, nc.Publish("fanout.task.acme.echo.x.k", nil))
		spy.wait(t, "fanout.task.acme.echo.x.k")
	})
	t.Run("and a worker refuses to reply outside the task's own subject", func(t *testing.T) {
		refused := w.Stats().Refused
		before := acme.Stats()
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		for _, reply := range []string{
			"fanout.reply.acme.spy." + b.ID() + ".a1", // another tenant's key
			"$JS.API.STREAM.DELETE.FANOUT",            // anything else
		} {
			m := nats.NewMsg("fanout.task.globex.echo." + b.ID() + ".a1")
			m.Header.Set("Fanout-Task", "forged")
			m.Header.Set("Fanout-Reply", reply)
			m.Data = []byte(`"forged"`)
			_, err := js.PublishMsg(context.Background(), m)
			require.NoError(t, err, "the tenant may queue tasks in its own name")
		}
		require.Eventually(t, func() bool { return w.Stats().Refused == refused+2 }, 10*time.Second, 5*time.Millisecond)
		assert.Equal(t, before, acme.Stats(), "nothing reached acme")
	})
}

func TestWorkerRefusesTasksWhoseReplySubjectIsNotTheirOwn(t *testing.T) {
	e := newEnv(t)
	e.client()
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "echo", func(_ context.Context, s string) (string, error) { return s, nil })
	})
	nc := e.conn()
	anything, err := nc.SubscribeSync(">")
	require.NoError(t, err)
	js := e.inspect()
	const task = "fanout.task.acme.echo.B1.k"
	tests := []struct {
		name  string
		reply string // "" leaves the header out
	}{
		{name: "another tenant's", reply: "fanout.reply.globex.C.B1.k"},
		{name: "another batch's", reply: "fanout.reply.acme.C.B2.k"},
		{name: "another key's", reply: "fanout.reply.acme.C.B1.other"},
		{name: "a JetStream API subject", reply: "$JS.API.STREAM.DELETE.FANOUT"},
		{name: "a wildcard", reply: "fanout.reply.acme.*.B1.k"},
		{name: "none"},
	}
	for _, tt := range tests {
		m := nats.NewMsg(task)
		m.Header.Set("Fanout-Task", "forged-"+tt.name)
		if tt.reply != "" {
			m.Header.Set("Fanout-Reply", tt.reply)
		}
		m.Data = []byte(`"forged"`)
		_, err := js.PublishMsg(context.Background(), m)
		require.NoError(t, err, tt.name)
	}
	require.Eventually(t, func() bool { return w.Stats().Refused == int64(len(tests)) }, 10*time.Second, 5*time.Millisecond)
	assert.Zero(t, w.Stats().Started, "no handler ran")
	assert.Zero(t, e.storedReplies(), "no reply was stored")
	require.NoError(t, nc.Flush())
	for {
		m, err := anything.NextMsg(10 * time.Millisecond)
		if err != nil {
			break
		}
		assert.False(t, strings.HasPrefix(m.Subject, "fanout.reply."), "reply published on %s", m.Subject)
	}
}
