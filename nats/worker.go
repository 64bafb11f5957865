package fanoutnats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gofanout/fanout"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// errCancelled is the cause of a handler whose client cancelled it.
var errCancelled = errors.New("fanoutnats: task cancelled by its client")

// Worker serves remote tasks: it pulls them from the shared work-queue
// consumer, runs the handler registered under the task's name, and
// replies to the client. Any number of workers, in any number of
// processes, share the work.
//
// Register handlers with [Handle] before calling Serve. Workers sharing a
// consumer should all serve the same names: a task whose name a worker
// lacks fails at once with [CodeNoHandler] rather than waiting for another
// worker. Pools serving different names use different prefixes and
// streams ([WithPrefix], [WithStream]). While a handler
// runs, the worker sends JetStream in-progress heartbeats every third of
// the consumer's AckWait, so a long task is not redelivered; if the worker
// dies, the heartbeats stop and the task goes to another worker after
// AckWait. A handler's context ends at the task's deadline (cause
// [fanout.ErrTaskTimeout]), when its client cancels it, or when Serve's
// context ends.
type Worker struct {
	cfg       *config
	nc        *nats.Conn
	cons      jetstream.Consumer
	name      string
	heartbeat time.Duration

	mu        sync.Mutex
	handlers  map[string]handlerFunc
	running   map[*runningTask]struct{} // deliveries being handled
	cancelled recentSet                 // batch and attempt ids cancelled
	handBack  []jetstream.Msg           // stopped by Serve's end, nak'ed once no slot pulls

	stats workerStats
}

type handlerFunc func(ctx context.Context, args []byte) ([]byte, error)

type runningTask struct {
	id     string // attempt id, shared by its redeliveries
	batch  string
	cancel context.CancelCauseFunc
}

// NewWorker prepares a worker on nc: it opens the task stream, as
// [NewClient] does, and the workers' durable consumer, which it likewise
// looks up first and creates only if it does not exist ([WithBind]: fails
// instead). An existing consumer is never changed: its AckWait (which
// paces the worker's heartbeats) and MaxDeliver apply, not the options'.
// NewWorker fails, naming each difference, if the consumer cannot serve
// (acks not explicit, filter subjects that miss PREFIX.task.>, a push
// consumer). The caller keeps owning nc.
func NewWorker(ctx context.Context, nc *nats.Conn, opts ...Option) (*Worker, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: jetstream: %w", err)
	}
	s, err := openStream(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	cons, err := openConsumer(ctx, s, cfg)
	if err != nil {
		return nil, err
	}
	w := &Worker{
		cfg: cfg, nc: nc, cons: cons, name: cfg.name,
		handlers:  make(map[string]handlerFunc),
		running:   make(map[*runningTask]struct{}),
		cancelled: newRecentSet(1 << 14),
	}
	if w.name == "" {
		w.name = nuid.Next()
	}
	w.heartbeat = cons.CachedInfo().Config.AckWait / 3
	if cfg.heartbeat != 0 {
		w.heartbeat = cfg.heartbeat
	}
	return w, nil
}

// Name returns the worker's name, as replies and remote errors show it.
func (w *Worker) Name() string { return w.name }

// Handle registers fn as the handler of the tasks named name on w. Its
// arguments and result travel through the codec (JSON by default). An
// error fn returns reaches the client with its kind kept: see
// [RemoteError]. Handle panics if name is not letters, digits, '-' and
// '_', or is already registered.
func Handle[A, T any](w *Worker, name string, fn func(ctx context.Context, args A) (T, error)) {
	if !validToken(name) {
		panic(fmt.Sprintf("fanoutnats: Handle: name %q must be letters, digits, '-' or '_'", name))
	}
	codec := w.cfg.codec
	h := func(ctx context.Context, data []byte) ([]byte, error) {
		var a A
		if err := codec.Unmarshal(data, &a); err != nil {
			return nil, &codedError{CodeBadArgs, fmt.Errorf("fanoutnats: decode arguments of %q: %w", name, err)}
		}
		v, err := fn(ctx, a)
		if err != nil {
			return nil, err
		}
		out, err := codec.Marshal(v)
		if err != nil {
			return nil, &codedError{CodePermanent, fmt.Errorf("fanoutnats: encode result of %q: %w", name, err)}
		}
		return out, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, dup := w.handlers[name]; dup {
		panic(fmt.Sprintf("fanoutnats: Handle: %q registered twice", name))
	}
	w.handlers[name] = h
}

// codedError gives an error the worker itself raises its wire code.
type codedError struct {
	code Code
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// Serve runs tasks until ctx ends, with up to the configured concurrency
// at once, and returns nil. Handlers still running then are cancelled and
// their tasks handed back to the queue for other workers. If the
// connection closes, Serve returns an error. Serve may be called once.
func (w *Worker) Serve(ctx context.Context) error {
	sub, err := w.nc.Subscribe(w.cfg.prefix+".cancel.>", w.onCancel)
	if err != nil {
		return fmt.Errorf("fanoutnats: subscribe to cancels: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	sctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	errs := make(chan error, w.cfg.concurrency+1)
	var wg sync.WaitGroup
	// A closed connection stops every slot at once, even those waiting
	// in a pull request.
	closed := w.nc.StatusChanged(nats.CLOSED)
	defer w.nc.RemoveStatusListener(closed)
	wg.Go(func() {
		select {
		case <-closed:
			err := fmt.Errorf("fanoutnats: worker %s: connection closed", w.name)
			errs <- err
			stop(err)
		case <-sctx.Done():
		}
	})
	if w.nc.IsClosed() {
		stop(fmt.Errorf("fanoutnats: worker %s: connection closed", w.name))
		errs <- context.Cause(sctx)
	}
	for range w.cfg.concurrency {
		wg.Go(func() {
			if err := w.pull(sctx); err != nil {
				errs <- err
				stop(err)
			}
		})
	}
	wg.Wait()
	w.handBackTasks()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// pollWait bounds each pull request, so that a worker notices a closed
// connection or a changed consumer in reasonable time.
const pollWait = 5 * time.Second

// pull is one slot: it fetches one task at a time and runs it.
func (w *Worker) pull(ctx context.Context) error {
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, pollWait)
		msg, err := w.cons.Next(jetstream.FetchContext(pctx))
		cancel()
		switch {
		case err == nil:
			w.handle(ctx, msg)
		case ctx.Err() != nil:
		case w.nc.IsClosed() || errors.Is(err, nats.ErrConnectionClosed):
			return fmt.Errorf("fanoutnats: worker %s: connection closed", w.name)
		case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		default:
			// Disconnected, consumer being recreated, ...: pause briefly
			// rather than spin, then pull again.
			t := time.NewTimer(250 * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
	}
	return nil
}

// TaskInfo describes the remote task a handler is running.
type TaskInfo struct {
	Key      string
	Name     string
	Worker   string
	Delivery int       // 1 for the first delivery, 2 after a redelivery, ...
	Deadline time.Time // zero if the task has none
}

type taskInfoKey struct{}

// TaskFromContext returns the task a handler's context belongs to.
func TaskFromContext(ctx context.Context) (TaskInfo, bool) {
	t, ok := ctx.Value(taskInfoKey{}).(TaskInfo)
	return t, ok
}

func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) {
	h := msg.Headers()
	id, batch := h.Get(hdrTask), h.Get(hdrBatch)
	info := TaskInfo{
		Key:    keyFromHeader(h.Get(hdrKey), h.Get(hdrKeyQuote) == "quoted"),
		Name:   h.Get(hdrName),
		Worker: w.name,
	}
	if meta, err := msg.Metadata(); err == nil {
		info.Delivery = int(meta.NumDelivered)
	}
	deadline, hasDeadline := parseDeadline(h.Get(hdrDeadline))
	info.Deadline = deadline
	if hasDeadline && !time.Now().Before(deadline) {
		w.stats.expired.Add(1)
		w.replyErr(msg, info, wireError{Code: CodeTimeout,
			Message: fmt.Sprintf("fanoutnats: deadline of key %q passed while queued", info.Key)})
		_ = msg.Term()
		return
	}
	w.mu.Lock()
	fn := w.handlers[info.Name]
	w.mu.Unlock()
	if fn == nil {
		w.replyErr(msg, info, wireError{Code: CodeNoHandler,
			Message: fmt.Sprintf("fanoutnats: worker %s has no handler %q", w.name, info.Name)})
		_ = msg.Term()
		return
	}

	hctx, cancel := context.WithCancelCause(context.WithValue(ctx, taskInfoKey{}, info))
	defer cancel(nil)
	if hasDeadline {
		var stop context.CancelFunc
		hctx, stop = context.WithDeadlineCause(hctx, deadline, fanout.ErrTaskTimeout)
		defer stop()
	}
	rt := &runningTask{id: id, batch: batch, cancel: cancel}
	if !w.start(rt) {
		w.stats.cancelled.Add(1)
		_ = msg.Term()
		return
	}
	defer w.finish(rt)
	w.stats.started.Add(1)
	if info.Delivery > 1 {
		w.stats.redelivered.Add(1)
	}

	stopBeat := w.beat(msg)
	out, err := callHandler(hctx, fn, msg.Data())
	stopBeat()

	switch cause := context.Cause(hctx); {
	case errors.Is(cause, errCancelled):
		w.stats.cancelled.Add(1)
		_ = msg.Term()
		return
	case ctx.Err() != nil && err != nil:
		// The worker is stopping: let another one have it, once this
		// worker's pull requests are gone (see handBackTasks).
		w.mu.Lock()
		w.handBack = append(w.handBack, msg)
		w.mu.Unlock()
		return
	}
	var replied bool
	if err != nil {
		w.stats.failed.Add(1)
		replied = w.replyErr(msg, info, toWire(hctx, err))
	} else {
		w.stats.succeeded.Add(1)
		replied = w.replyOK(msg, info, out)
	}
	if replied {
		_ = msg.Ack()
	} else {
		// The client heard nothing: let the task run again rather than
		// leave its key waiting for a reply that will never come.
		_ = msg.Nak()
	}
}

// handBackTasks naks the tasks that Serve's end stopped, after every slot
// has returned from its pull request, so that another worker runs them at
// once rather than after AckWait. The nak asks for a short delay: a
// slot's request ends with an unsubscribe that the client library sends
// a moment after the slot returns, and until the server has read it, a
// task redelivered at once could go to that request, where nobody reads
// it, and wait out AckWait all the same.
func (w *Worker) handBackTasks() {
	w.mu.Lock()
	msgs := w.handBack
	w.handBack = nil
	w.mu.Unlock()
	for _, msg := range msgs {
		_ = msg.NakWithDelay(handBackDelay)
	}
	if len(msgs) > 0 {
		_ = w.nc.Flush()
	}
}

// handBackDelay is how long a handed-back task waits before redelivery.
const handBackDelay = 50 * time.Millisecond

// start records a running attempt, unless its batch or itself was
// cancelled already.
func (w *Worker) start(rt *runningTask) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancelled.has(rt.batch) || w.cancelled.has(rt.id) {
		return false
	}
	w.running[rt] = struct{}{}
	return true
}

func (w *Worker) finish(rt *runningTask) {
	w.mu.Lock()
	delete(w.running, rt)
	w.mu.Unlock()
}

// onCancel handles PREFIX.cancel.BATCH and PREFIX.cancel.BATCH.ATTEMPT.
func (w *Worker) onCancel(m *nats.Msg) {
	rest := strings.TrimPrefix(m.Subject, w.cfg.prefix+".cancel.")
	batch, id, _ := strings.Cut(rest, ".")
	w.mu.Lock()
	defer w.mu.Unlock()
	if id == "" {
		w.cancelled.add(batch)
	} else {
		w.cancelled.add(id)
	}
	for r := range w.running {
		if r.batch == batch && (id == "" || id == r.id) {
			r.cancel(errCancelled)
		}
	}
}

// beat sends in-progress heartbeats for msg until the returned func is
// called.
func (w *Worker) beat(msg jetstream.Msg) (stop func()) {
	if w.heartbeat <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(w.heartbeat)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = msg.InProgress()
			case <-done:
				return
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// callHandler runs fn, turning a panic into a *fanout.PanicError.
func callHandler(ctx context.Context, fn handlerFunc, args []byte) (out []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = newPanicError(p)
		}
	}()
	return fn(ctx, args)
}

func (w *Worker) replyMsg(msg jetstream.Msg, info TaskInfo, status string, data []byte) *nats.Msg {
	h := msg.Headers()
	r := nats.NewMsg(h.Get(hdrReply))
	r.Data = data
	r.Header.Set(hdrTask, h.Get(hdrTask))
	r.Header.Set(hdrStatus, status)
	r.Header.Set(hdrWorker, w.name)
	r.Header.Set(hdrDeliver, strconv.Itoa(info.Delivery))
	return r
}

// replyOK sends a handler's result or, if that cannot be published, an
// error reply saying why. It reports whether either reply was published.
func (w *Worker) replyOK(msg jetstream.Msg, info TaskInfo, out []byte) bool {
	if msg.Headers().Get(hdrReply) == "" {
		return true // nobody to tell
	}
	r := w.replyMsg(msg, info, "ok", out)
	size, limit := msgSize(r), w.nc.MaxPayload()
	var err error
	if size <= limit {
		if err = w.nc.PublishMsg(r); err == nil {
			return true
		}
		w.stats.replyFailures.Add(1)
	}
	if size > limit || errors.Is(err, nats.ErrMaxPayload) {
		return w.replyErr(msg, info, wireError{Code: CodeTooLarge, Message: fmt.Sprintf(
			"fanoutnats: result of key %q makes a %d-byte reply, over the server's max_payload of %d bytes",
			info.Key, size, limit)})
	}
	return w.replyErr(msg, info, wireError{Code: CodeError, Message: fmt.Sprintf(
		"fanoutnats: worker %s could not publish the result of key %q: %v", w.name, info.Key, err)})
}

// replyErr sends e as an error reply, cut down to fit the server's
// max_payload, and reports whether it was published.
func (w *Worker) replyErr(msg jetstream.Msg, info TaskInfo, e wireError) bool {
	if msg.Headers().Get(hdrReply) == "" {
		return true // nobody to tell
	}
	r := w.replyMsg(msg, info, "error", nil)
	r.Data = fitWireError(e, int(w.nc.MaxPayload()-msgSize(r)))
	if err := w.nc.PublishMsg(r); err != nil {
		w.stats.replyFailures.Add(1)
		return false
	}
	return true
}

// fitWireError encodes e in at most room bytes if it can: it drops the
// stack first, then cuts the message (on a character boundary) and says
// how much it cut.
func fitWireError(e wireError, room int) []byte {
	data, _ := json.Marshal(e)
	if len(data) <= room {
		return data
	}
	e.Stack = ""
	if data, _ = json.Marshal(e); len(data) <= room {
		return data
	}
	full := e.Message
	cut := func(n int) []byte {
		for n > 0 && n < len(full) && !utf8.RuneStart(full[n]) {
			n--
		}
		e.Message = full[:n] + fmt.Sprintf(" [%d more bytes cut to fit max_payload]", len(full)-n)
		data, _ := json.Marshal(e)
		return data
	}
	// The longest prefix that fits: escaping makes the size grow with n,
	// not in proportion to it.
	n := sort.Search(len(full), func(n int) bool { return len(cut(n+1)) > room })
	return cut(n)
}

// WorkerStats counts what a worker has done.
type WorkerStats struct {
	Started     int64 // handlers started
	Succeeded   int64
	Failed      int64
	Redelivered int64 // handlers started on a redelivered task
	Expired     int64 // tasks whose deadline passed while queued: not started
	Cancelled   int64 // tasks cancelled by their client, running or not yet
	// ReplyFailures counts replies the connection refused to publish
	// (closed, or over max_payload after all). A result that cannot be
	// sent is replaced by an error reply saying why; a task none of whose
	// replies could be sent is handed back to the queue to run again.
	ReplyFailures int64
}

type workerStats struct {
	started, succeeded, failed, redelivered, expired, cancelled, replyFailures atomic.Int64
}

// Stats returns the worker's counters so far.
func (w *Worker) Stats() WorkerStats {
	s := &w.stats
	return WorkerStats{
		Started: s.started.Load(), Succeeded: s.succeeded.Load(), Failed: s.failed.Load(),
		Redelivered: s.redelivered.Load(), Expired: s.expired.Load(), Cancelled: s.cancelled.Load(),
		ReplyFailures: s.replyFailures.Load(),
	}
}
