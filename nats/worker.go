package fanoutnats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofanout/fanout"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// errCancelled is the cause of a handler whose client cancelled it.
var errCancelled = errors.New("fanoutnats: task cancelled by its client")

// Worker serves remote tasks: it pulls them from the shared work-queue
// consumer, runs the handler registered under the task's name, stores the
// reply in the replies stream and acknowledges the task. Any number of
// workers, in any number of processes, share the work.
//
// Register handlers with [Handle] before calling Serve. Workers sharing a
// consumer should all serve the same names: a task whose name a worker
// lacks fails at once with [CodeNoHandler] rather than waiting for another
// worker. Pools serving different names use different prefixes and
// streams ([WithPrefix], [WithStream]). While a handler runs, the worker
// sends JetStream in-progress heartbeats every third of the consumer's
// AckWait, so a long task is not redelivered; if the worker dies, the
// heartbeats stop and the task goes to another worker after AckWait. A
// handler's context ends at the task's deadline (cause
// [fanout.ErrTaskTimeout]), when its client cancels it, or when Serve's
// context ends.
//
// A worker replies to a task only on the reply subject its task's subject
// allows (PREFIX.reply.TENANT.CLIENT.BATCH.KEY, with the task's tenant,
// batch and key): a task naming any other is refused unrun (see
// [WorkerStats.Refused]), so a tenant cannot have a worker write into
// another tenant's replies.
type Worker struct {
	cfg       *config
	nc        *nats.Conn
	js        jetstream.JetStream
	name      string
	id        string // this worker's token in status subjects
	heartbeat time.Duration
	strms     atomic.Pointer[streams]

	mu        sync.Mutex
	handlers  map[string]handlerFunc
	running   map[*runningTask]struct{} // deliveries being handled
	cancelled recentSet                 // batch and attempt ids cancelled
	handBack  []*nats.Msg               // stopped by Serve's end, nak'ed once no pull is pending

	stats workerStats
}

type handlerFunc func(ctx context.Context, args []byte) ([]byte, error)

type runningTask struct {
	id       string // attempt id, shared by its redeliveries
	batch    string // TENANT.BATCH
	cancel   context.CancelCauseFunc
	returned atomic.Bool // its handler returned: its slot is free
}

// NewWorker prepares a worker on nc: it opens the task and replies
// streams, as [NewClient] does, and the workers' durable consumer, which
// it likewise looks up first and creates only if it does not exist
// ([WithBind]: fails instead). An existing consumer is never changed: its
// AckWait (which paces the worker's heartbeats) and MaxDeliver apply, not
// the options'. NewWorker fails, naming each difference, if the consumer
// cannot serve (acks not explicit, filter subjects that miss
// PREFIX.task.>, a push consumer). The caller keeps owning nc.
func NewWorker(ctx context.Context, nc *nats.Conn, opts ...Option) (*Worker, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errNilConn
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: jetstream: %w", err)
	}
	w := &Worker{
		cfg: cfg, nc: nc, js: js, name: cfg.name, id: nuid.Next(),
		handlers:  make(map[string]handlerFunc),
		running:   make(map[*runningTask]struct{}),
		cancelled: newRecentSet(1 << 14),
	}
	if w.name == "" {
		w.name = nuid.Next()
	}
	cons, err := w.open(ctx)
	if err != nil {
		return nil, err
	}
	w.heartbeat = cons.CachedInfo().Config.AckWait / 3
	if cfg.heartbeat != 0 {
		w.heartbeat = cfg.heartbeat
	}
	return w, nil
}

// open opens the streams and the consumer, creating what is missing
// unless [WithBind] forbids it.
func (w *Worker) open(ctx context.Context) (jetstream.Consumer, error) {
	tasks, err := openStream(ctx, w.js, w.cfg)
	if err != nil {
		return nil, err
	}
	replies, err := openReplies(ctx, w.js, w.cfg)
	if err != nil {
		return nil, err
	}
	cons, err := openConsumer(ctx, tasks, w.cfg)
	if err != nil {
		return nil, err
	}
	w.strms.Store(&streams{tasks: tasks, replies: replies})
	return cons, nil
}

// Name returns the worker's name, as replies and remote errors show it.
func (w *Worker) Name() string { return w.name }

// Handle registers fn as the handler of the tasks named name on w. Its
// arguments and result travel through the codec (JSON by default). An
// error fn returns reaches the client with its kind kept: see
// [RemoteError]. Handle panics if w or fn is nil, if name is not
// letters, digits, '-' and '_', or if it is already registered.
func Handle[A, T any](w *Worker, name string, fn func(ctx context.Context, args A) (T, error)) {
	if w == nil || fn == nil {
		panic(fmt.Sprintf("fanoutnats: Handle(%q): nil Worker or handler", name))
	}
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
// their tasks handed back to the queue for other workers, unless a
// handler returns a result all the same: that is stored and sent (one
// try of up to 2 s), not run again. If the
// connection closes, or the stream or consumer disappears and cannot be
// created again ([WithBind]), Serve returns an error. A server that lost
// them (memory storage) has them created again. While it runs, the worker
// reports its status every [WithStatusInterval], and says goodbye as
// Serve returns (see [Client.Fleet]). Serve may be called once.
func (w *Worker) Serve(ctx context.Context) error {
	sub, err := w.nc.Subscribe(w.cfg.prefix+".cancel.>", w.onCancel)
	if err != nil {
		return fmt.Errorf("fanoutnats: subscribe to cancels: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	p, err := w.newPuller()
	if err != nil {
		return err
	}
	stopReports := w.startReports()
	defer stopReports() // says goodbye once the tasks are handed back
	// A closed connection stops every handler too.
	sctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var handlers sync.WaitGroup
	if err = p.run(sctx, &handlers); err != nil {
		stop(err)
	}
	handlers.Wait()
	p.close()
	w.handBackTasks()
	return err
}

// TaskInfo describes the remote task a handler is running.
type TaskInfo struct {
	Key      string
	Name     string
	Worker   string
	Delivery int       // 1 for the first delivery, 2 after a redelivery, ...
	Deadline time.Time // zero if the task has none
	Queued   time.Time // when the task was stored in the queue
}

type taskInfoKey struct{}

// TaskFromContext returns the task a handler's context belongs to.
func TaskFromContext(ctx context.Context) (TaskInfo, bool) {
	t, ok := ctx.Value(taskInfoKey{}).(TaskInfo)
	return t, ok
}

// handle runs one delivered task to its reply and acknowledgement. It
// calls free once the task no longer needs its slot: when the handler
// has returned, before its reply is stored.
func (w *Worker) handle(ctx context.Context, msg *nats.Msg, free func()) {
	var once sync.Once
	release := func() { once.Do(free) }
	defer release()
	t, ok := w.admit(ctx, msg)
	if !ok {
		return
	}
	hctx, cancel := context.WithCancelCause(context.WithValue(ctx, taskInfoKey{}, t.info))
	defer cancel(nil)
	if t.hasDeadline {
		var stop context.CancelFunc
		hctx, stop = context.WithDeadlineCause(hctx, t.info.Deadline, fanout.ErrTaskTimeout)
		defer stop()
	}
	rt := &runningTask{id: t.id, batch: t.addr.tenant + "." + t.addr.batch, cancel: cancel}
	if !w.start(rt) {
		w.stats.cancelled.Add(1)
		_ = msg.Term()
		return
	}
	defer w.finish(rt)
	w.stats.started.Add(1)
	if t.info.Delivery > 1 {
		w.stats.redelivered.Add(1)
	}

	stopBeat := w.beat(msg)
	defer stopBeat()
	out, err := callHandler(hctx, t.fn, msg.Data)
	rt.returned.Store(true)
	release()
	switch cause := context.Cause(hctx); {
	case errors.Is(cause, errCancelled):
		w.stats.cancelled.Add(1)
		_ = msg.Term()
		return
	case ctx.Err() != nil && err != nil:
		// The worker is stopping: let another one have it, once this
		// worker's pull requests are gone (see handBackTasks).
		w.handOver(msg)
		return
	}
	var r *nats.Msg
	if err != nil {
		w.stats.failed.Add(1)
		r = w.errorReply(msg, t, toWire(hctx, err))
	} else {
		w.stats.succeeded.Add(1)
		r = w.okReply(msg, t, out)
	}
	w.finishTask(ctx, msg, r)
}

// task is a delivered task the worker accepted to run.
type task struct {
	id          string
	addr        taskAddress
	info        TaskInfo
	hasDeadline bool
	fn          handlerFunc
}

// admit reads a delivered task and decides whether to run it: a task
// whose reply subject is not its own is refused, one that was answered
// already (its acknowledgement was lost) is acknowledged, one whose
// deadline passed or whose name has no handler is answered with an error.
func (w *Worker) admit(ctx context.Context, msg *nats.Msg) (task, bool) {
	h := msg.Header
	addr, ok := parseTaskSubject(w.cfg.prefix, msg.Subject)
	if !ok || !replyAllowed(w.cfg.prefix, addr, h.Get(hdrReply)) || h.Get(hdrTask) == "" {
		w.stats.refused.Add(1)
		_ = msg.Term()
		return task{}, false
	}
	t := task{id: h.Get(hdrTask), addr: addr, info: TaskInfo{
		Key: keyFromHeader(h.Get(hdrKey), h.Get(hdrKeyQuote) == "quoted"), Name: addr.name, Worker: w.name,
	}}
	if meta, err := msg.Metadata(); err == nil {
		t.info.Delivery, t.info.Queued = int(meta.NumDelivered), meta.Timestamp
	}
	t.info.Deadline, t.hasDeadline = parseDeadline(h.Get(hdrDeadline))
	if t.info.Delivery > 1 && w.answered(ctx, t) {
		w.stats.answered.Add(1)
		_ = msg.Ack()
		return task{}, false
	}
	if t.hasDeadline && !time.Now().Before(t.info.Deadline) {
		w.stats.expired.Add(1)
		w.finishTask(ctx, msg, w.errorReply(msg, t, wireError{Code: CodeTimeout,
			Message: fmt.Sprintf("fanoutnats: deadline of key %q passed while queued", t.info.Key)}))
		return task{}, false
	}
	w.mu.Lock()
	t.fn = w.handlers[addr.name]
	w.mu.Unlock()
	if t.fn == nil {
		w.finishTask(ctx, msg, w.errorReply(msg, t, wireError{Code: CodeNoHandler,
			Message: fmt.Sprintf("fanoutnats: worker %s has no handler %q", w.name, addr.name)}))
		return task{}, false
	}
	return t, true
}

// answered reports whether the replies stream holds a reply to t's
// attempt already: a redelivered task whose worker stored the reply but
// whose acknowledgement was lost need not run again.
func (w *Worker) answered(ctx context.Context, t task) bool {
	ctx, cancel := context.WithTimeout(ctx, lookupWait)
	defer cancel()
	subject := w.cfg.prefix + ".reply." + t.addr.tenant + "." + t.addr.batch + "." + t.addr.keyToken
	m, err := w.strms.Load().replies.GetLastMsgForSubject(ctx, subject)
	return err == nil && m.Header.Get(hdrTask) == t.id
}

// finishTask stores r and acknowledges the task; if r cannot be stored
// before Serve stops, the task is handed back to run again.
func (w *Worker) finishTask(ctx context.Context, msg *nats.Msg, r *nats.Msg) {
	if err := w.store(ctx, r); err != nil {
		w.handOver(msg)
		return
	}
	_ = msg.Ack()
}

func (w *Worker) handOver(msg *nats.Msg) {
	w.mu.Lock()
	w.handBack = append(w.handBack, msg)
	w.mu.Unlock()
}

// handBackTasks naks the tasks that Serve's end stopped, after the
// worker's pull subscription is gone, so that another worker runs them at
// once rather than after AckWait. The nak asks for a short delay, so
// that the server has dropped this worker's pending pull requests before
// the task is delivered again.
func (w *Worker) handBackTasks() {
	w.mu.Lock()
	msgs := w.handBack
	w.handBack = nil
	w.mu.Unlock()
	for _, msg := range msgs {
		_ = msg.NakWithDelay(handBackDelay)
	}
	if len(msgs) > 0 {
		flushIfConnected(w.nc)
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

// onCancel handles PREFIX.cancel.TENANT.BATCH and
// PREFIX.cancel.TENANT.BATCH.ATTEMPT.
func (w *Worker) onCancel(m *nats.Msg) {
	rest := strings.TrimPrefix(m.Subject, w.cfg.prefix+".cancel.")
	tenant, rest, _ := strings.Cut(rest, ".")
	batch, id, _ := strings.Cut(rest, ".")
	batch = tenant + "." + batch
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
func (w *Worker) beat(msg *nats.Msg) (stop func()) {
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

// callHandler runs fn, turning a panic into a *fanout.PanicError and a
// runtime.Goexit into [fanout.ErrGoexit], as fanout does for a local task.
// fn runs on a goroutine of its own so that a Goexit ends only that one:
// the task is answered, not left to be redelivered until MaxDeliver.
func callHandler(ctx context.Context, fn handlerFunc, args []byte) (out []byte, err error) {
	err = fanout.ErrGoexit // unless fn returns or panics
	var wg sync.WaitGroup
	wg.Go(func() {
		defer func() {
			if p := recover(); p != nil {
				err = newPanicError(p)
			}
		}()
		out, err = fn(ctx, args)
	})
	wg.Wait()
	return out, err
}

// WorkerStats counts what a worker has done.
type WorkerStats struct {
	Started     int64 // handlers started
	Succeeded   int64
	Failed      int64
	Redelivered int64 // handlers started on a redelivered task
	Expired     int64 // tasks whose deadline passed while queued: not started
	Cancelled   int64 // tasks cancelled by their client, running or not yet
	// Answered counts redelivered tasks acknowledged without running,
	// since the replies stream already held their reply.
	Answered int64
	// Refused counts tasks dropped unrun: malformed, or naming a reply
	// subject other than the one their subject allows.
	Refused int64
	// ReplyFailures counts replies that could not be stored at the first
	// try (a server unreachable, a replies stream lost). The worker tries
	// again while Serve runs, heartbeats keeping the task; a result over
	// max_payload is replaced by an error reply saying why.
	ReplyFailures int64
}

type workerStats struct {
	started, succeeded, failed, redelivered, expired, cancelled atomic.Int64
	answered, refused, replyFailures                            atomic.Int64
}

// Stats returns the worker's counters so far.
func (w *Worker) Stats() WorkerStats {
	s := &w.stats
	return WorkerStats{
		Started: s.started.Load(), Succeeded: s.succeeded.Load(), Failed: s.failed.Load(),
		Redelivered: s.redelivered.Load(), Expired: s.expired.Load(), Cancelled: s.cancelled.Load(),
		Answered: s.answered.Load(), Refused: s.refused.Load(), ReplyFailures: s.replyFailures.Load(),
	}
}
