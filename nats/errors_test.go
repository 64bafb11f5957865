package fanoutnats_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v4"
	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/gofanout/fanout/nats/embedded"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type retryAfterError struct{ d time.Duration }

func (e retryAfterError) Error() string             { return "slow down" }
func (e retryAfterError) RetryAfter() time.Duration { return e.d }

func TestRemoteErrorsKeepTheirKindAcrossTheWire(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	var flaky atomic.Int32
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "fail", func(ctx context.Context, kind string) (string, error) {
			switch kind {
			case "permanent":
				return "", backoff.Permanent(errors.New("bad input"))
			case "flaky":
				if flaky.Add(1) < 3 {
					return "", errors.New("transient")
				}
				return "third time lucky", nil
			case "timeout":
				return "", fanout.ErrTaskTimeout
			case "panic":
				panic("handler exploded")
			case "retry-after":
				return "", retryAfterError{2 * time.Millisecond}
			}
			return "", errors.New("unknown kind")
		})
	})
	retry := fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond})
	tests := []struct {
		give         string
		name         string
		wantAttempts int
		check        func(t *testing.T, r fanout.Result[string])
	}{
		{give: "permanent", name: "fail", wantAttempts: 1, check: func(t *testing.T, r fanout.Result[string]) {
			var perm *backoff.PermanentError
			require.ErrorAs(t, r.Err, &perm)
			var re *fanoutnats.RemoteError
			require.ErrorAs(t, r.Err, &re)
			assert.Equal(t, fanoutnats.CodePermanent, re.Code)
			assert.Contains(t, re.Message, "bad input")
		}},
		{give: "flaky", name: "fail", wantAttempts: 3, check: func(t *testing.T, r fanout.Result[string]) {
			require.NoError(t, r.Err)
			assert.Equal(t, "third time lucky", r.Value)
		}},
		{give: "timeout", name: "fail", wantAttempts: 3, check: func(t *testing.T, r fanout.Result[string]) {
			assert.ErrorIs(t, r.Err, fanout.ErrTaskTimeout)
		}},
		{give: "panic", name: "fail", wantAttempts: 1, check: func(t *testing.T, r fanout.Result[string]) {
			var pe *fanout.PanicError
			require.ErrorAs(t, r.Err, &pe)
			assert.ErrorContains(t, pe, "handler exploded")
			assert.Contains(t, string(pe.Stack), "errors_test.go", "the worker's stack travels")
		}},
		{give: "retry-after", name: "fail", wantAttempts: 3, check: func(t *testing.T, r fanout.Result[string]) {
			var ra interface{ RetryAfter() time.Duration }
			require.ErrorAs(t, r.Err, &ra)
			assert.Equal(t, 2*time.Millisecond, ra.RetryAfter())
		}},
		{give: "anything", name: "no-such-handler", wantAttempts: 1, check: func(t *testing.T, r fanout.Result[string]) {
			var re *fanoutnats.RemoteError
			require.ErrorAs(t, r.Err, &re)
			assert.Equal(t, fanoutnats.CodeNoHandler, re.Code)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.give+" via "+tt.name, func(t *testing.T) {
			rs, _ := fanout.Run(context.Background(),
				[]fanout.Task[string]{fanoutnats.Remote[string, string](c, tt.name, "k", tt.give)}, retry)
			r, _ := rs.Get("k")
			assert.Equal(t, tt.wantAttempts, r.Attempts)
			tt.check(t, r)
		})
	}
}

func TestOversizedMessagesFailClearly(t *testing.T) {
	e := newEnv(t, embedded.WithMaxPayload(8<<10))
	c := e.client()
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "grow", func(_ context.Context, n int) (string, error) {
			return strings.Repeat("x", n), nil
		})
	})
	t.Run("a result over max_payload is the key's error", func(t *testing.T) {
		rs, err := fanout.Run(context.Background(), []fanout.Task[string]{
			fanoutnats.Remote[int, string](c, "grow", "big", 16<<10),
			fanoutnats.Remote[int, string](c, "grow", "small", 10),
		})
		require.Error(t, err)
		_, berr := rs.Value("big")
		assert.ErrorIs(t, berr, fanoutnats.ErrTooLarge)
		assert.ErrorContains(t, berr, "over the server's max_payload of 8192 bytes")
		assert.Regexp(t, `result of key "big" makes a \d+-byte reply`, berr.Error())
		var perm *backoff.PermanentError
		assert.ErrorAs(t, berr, &perm, "retrying cannot shrink it")
		v, serr := rs.Value("small")
		require.NoError(t, serr)
		assert.Len(t, v, 10)
	})
	t.Run("arguments over max_payload fail before sending", func(t *testing.T) {
		sent := c.Stats().Sent
		_, err := fanout.Run(context.Background(), []fanout.Task[string]{
			fanoutnats.Remote[string, string](c, "grow", "huge-args", strings.Repeat("y", 9<<10)),
		})
		assert.ErrorIs(t, err, fanoutnats.ErrTooLarge)
		assert.ErrorContains(t, err, `arguments of key "huge-args" make a`)
		assert.Equal(t, sent, c.Stats().Sent, "nothing was sent")
	})
}

func TestErrorRepliesAreCutToFitMaxPayload(t *testing.T) {
	e := newEnv(t, embedded.WithMaxPayload(8<<10))
	c := e.client()
	w := e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "fail-big", func(_ context.Context, kind string) (string, error) {
			switch kind {
			case "ascii":
				return "", backoff.Permanent(errors.New("bad: " + strings.Repeat("e", 20<<10)))
			case "multibyte":
				return "", errors.New("schlecht: " + strings.Repeat("é", 10<<10))
			case "escaped":
				return "", errors.New("quotes: " + strings.Repeat(`"<\`, 7<<10))
			default:
				panic("panicked: " + strings.Repeat("p", 20<<10))
			}
		})
	})
	tests := []struct {
		give       string
		wantPrefix string
		wantCode   fanoutnats.Code
	}{
		{give: "ascii", wantPrefix: "bad: eee", wantCode: fanoutnats.CodePermanent},
		{give: "multibyte", wantPrefix: "schlecht: ééé", wantCode: fanoutnats.CodeError},
		{give: "escaped", wantPrefix: `quotes: "<\"<\`, wantCode: fanoutnats.CodeError},
		{give: "panic", wantPrefix: "panicked: ppp", wantCode: fanoutnats.CodePanic},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			// Without cutting, the reply would never arrive and the key
			// would end at its deadline instead.
			rs, _ := fanout.Run(context.Background(),
				[]fanout.Task[string]{fanoutnats.Remote[string, string](c, "fail-big", "k", tt.give)},
				fanout.WithTaskTimeout(5*time.Second))
			_, err := rs.Value("k")
			require.Error(t, err)
			require.NotErrorIs(t, err, fanout.ErrTaskTimeout)
			var re *fanoutnats.RemoteError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, tt.wantCode, re.Code)
			assert.True(t, strings.HasPrefix(re.Message, tt.wantPrefix), re.Message[:40])
			assert.Regexp(t, `\[\d+ more bytes cut to fit max_payload\]$`, re.Message)
			assert.True(t, utf8.ValidString(re.Message))
			assert.Greater(t, len(re.Message), 2<<10, "cut no more than needed")
		})
	}
	assert.Zero(t, w.Stats().ReplyFailures)
}

func TestBindUsesProvisionedStreamOrFailsClearly(t *testing.T) {
	e := newEnv(t)
	nc := e.conn()
	_, err := fanoutnats.NewClient(context.Background(), nc, fanoutnats.WithBind())
	require.ErrorContains(t, err, `fanoutnats: WithBind: stream "FANOUT" does not exist`)
	_, err = fanoutnats.NewWorker(context.Background(), nc, fanoutnats.WithBind())
	require.ErrorContains(t, err, `stream "FANOUT" does not exist`)

	// An operator provisions the streams only: workers still need the
	// consumer.
	js, err := newJetStream(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(context.Background(), workQueueStream())
	require.NoError(t, err)
	_, err = fanoutnats.NewClient(context.Background(), nc, fanoutnats.WithBind())
	require.ErrorContains(t, err, `fanoutnats: WithBind: stream "FANOUT_REPLIES" does not exist`)
	_, err = js.CreateStream(context.Background(), repliesStream())
	require.NoError(t, err)
	c, err := fanoutnats.NewClient(context.Background(), nc, fanoutnats.WithBind())
	require.NoError(t, err)
	c.Close()
	_, err = fanoutnats.NewWorker(context.Background(), nc, fanoutnats.WithBind())
	require.ErrorContains(t, err, `consumer "workers" of stream "FANOUT" does not exist`)

	// Creating is idempotent: twice with the same options is fine.
	for range 2 {
		_, err = fanoutnats.NewWorker(context.Background(), nc, append(testOpts(), fanoutnats.WithReplicas(1))...)
		require.NoError(t, err)
	}
	_, err = fanoutnats.NewWorker(context.Background(), nc, fanoutnats.WithBind())
	require.NoError(t, err)
}

func TestInvalidOptionsAreReported(t *testing.T) {
	e := newEnv(t)
	nc := e.conn()
	for _, opt := range []fanoutnats.Option{
		fanoutnats.WithPrefix("a.b"), fanoutnats.WithStream("x y"), fanoutnats.WithReplicas(0),
		fanoutnats.WithAckWait(time.Millisecond), fanoutnats.WithMaxDeliver(0), fanoutnats.WithConcurrency(0),
		fanoutnats.WithCodec(nil), nil,
	} {
		_, err := fanoutnats.NewClient(context.Background(), nc, opt)
		require.Error(t, err)
		assert.True(t, strings.HasPrefix(err.Error(), "fanoutnats: "), err.Error())
	}
	assert.PanicsWithValue(t, `fanoutnats: Handle: name "a.b" must be letters, digits, '-' or '_'`, func() {
		w, err := fanoutnats.NewWorker(context.Background(), nc)
		require.NoError(t, err)
		fanoutnats.Handle(w, "a.b", func(context.Context, int) (int, error) { return 0, nil })
	})
}

func TestResultTimeoutIsTheClientsBackstop(t *testing.T) {
	e := newEnv(t)
	c := e.client(fanoutnats.WithResultTimeout(300 * time.Millisecond))
	stopped := make(chan error, 1)
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "silent", func(ctx context.Context, _ struct{}) (string, error) {
			<-ctx.Done()
			stopped <- context.Cause(ctx)
			return "", context.Cause(ctx)
		})
	})
	_, err := fanout.Run(context.Background(),
		[]fanout.Task[string]{fanoutnats.Remote[struct{}, string](c, "silent", "k", struct{}{})})
	require.ErrorIs(t, err, fanoutnats.ErrNoReply)
	assert.ErrorIs(t, <-stopped, fanoutnats.ErrCancelledForTest, "the worker is told to give up too")
}

func TestConnectPassesCredentialOptionsThrough(t *testing.T) {
	e := newEnv(t, embedded.WithUserPassword("fanout", "s3cret"))
	_, err := fanoutnats.Connect([]string{e.srv.URL()})
	require.ErrorContains(t, err, "fanoutnats: connect to")
	require.ErrorContains(t, err, "Authorization Violation")

	nc, err := fanoutnats.Connect([]string{"nats://127.0.0.1:1", e.srv.URL()}, nats.UserInfo("fanout", "s3cret"))
	require.NoError(t, err, "any reachable server in the list will do")
	defer nc.Close()
	_, err = fanoutnats.NewClient(context.Background(), nc, testOpts()...)
	require.NoError(t, err)

	_, err = fanoutnats.Connect(nil)
	require.ErrorContains(t, err, "fanoutnats: Connect needs at least one server URL")
}
