package fanoutnats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/gofanout/fanout"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Client sends remote tasks to workers and collects their replies. Make
// one per process and share it: a Client is safe for concurrent use.
type Client struct {
	cfg    *config
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	id     string
	inbox  string
	subs   []*nats.Subscription

	mu      sync.Mutex
	pending map[string]*call // by attempt id
	bySeq   map[uint64]*call // by stream sequence, for advisories
	replied recentSet        // finished attempts that took a worker's reply

	stats clientStats
}

type call struct {
	key   string
	reply chan reply // buffered 1, sent to once: the first answer wins

	// Guarded by Client.mu.
	seq      uint64
	answered bool // an answer was handed over, or the attempt gave up
	byWorker bool // the answer handed over was a worker's reply
}

// answer hands r to the waiting attempt, and reports false if the attempt
// already had its answer or gave up. It must be called with Client.mu
// held; it never blocks.
func (cl *call) answer(r reply) bool {
	if cl.answered {
		return false
	}
	cl.answered, cl.byWorker = true, r.msg != nil
	cl.reply <- r
	return true
}

type reply struct {
	msg *nats.Msg // nil with err set: the client decided (advisory)
	err error
}

// NewClient prepares a client on nc: it opens the task stream and
// subscribes to its reply subject and to JetStream's max-deliveries
// advisories. The caller keeps owning nc; Close the client before closing
// nc.
//
// Opening the stream looks it up first and creates it only if it does not
// exist ([WithBind]: fails instead). An existing stream is never changed,
// so its own storage, replicas, limits and description stay as an operator
// or an earlier client set them; NewClient fails, naming each difference,
// if that stream cannot serve as the task queue (not work-queue retention,
// subjects that miss PREFIX.task.>, sealed, no_ack, deny_delete or
// deny_purge).
func NewClient(ctx context.Context, nc *nats.Conn, opts ...Option) (*Client, error) {
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
	c := &Client{
		cfg: cfg, nc: nc, js: js, stream: s, id: nuid.Next(),
		pending: make(map[string]*call), bySeq: make(map[uint64]*call),
		replied: newRecentSet(1 << 14),
	}
	c.inbox = cfg.prefix + ".reply." + c.id
	sub, err := nc.Subscribe(c.inbox, c.onReply)
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: subscribe to replies: %w", err)
	}
	c.subs = append(c.subs, sub)
	adv := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + cfg.stream + "." + cfg.consumer
	sub, err = nc.Subscribe(adv, c.onMaxDeliveries)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("fanoutnats: subscribe to advisories: %w", err)
	}
	c.subs = append(c.subs, sub)
	if err := flush(ctx, nc); err != nil {
		c.Close()
		return nil, fmt.Errorf("fanoutnats: flush subscriptions: %w", err)
	}
	return c, nil
}

// Close stops listening for replies. Tasks still waiting end with their
// context or result timeout. It does not close the connection.
func (c *Client) Close() {
	for _, s := range c.subs {
		_ = s.Unsubscribe()
	}
}

// Stats counts what the client has seen. Reading it is safe at any time.
// Every reply that reaches the client is counted once: in Replies if its
// attempt took it, in Duplicates if its attempt had taken another reply
// already, else in Late: its attempt had given up first (its context
// ended, at a per-task timeout say; its result timeout passed; or a
// max-deliveries advisory decided it), or is too old to be remembered.
type Stats struct {
	Sent        int64 // task messages published, retries and hedges included
	Replies     int64 // replies accepted, one per finished attempt
	Redelivered int64 // accepted replies that came from a redelivery
	Duplicates  int64 // replies dropped because their attempt already had one
	Late        int64 // replies dropped because their attempt had given up
	MaxDelivers int64 // attempts failed by a max-deliveries advisory
	Cancels     int64 // attempts cancelled before their reply
	Purges      int64 // batches purged from the stream
}

type clientStats struct {
	sent, replies, redelivered, duplicates, late, maxDelivers, cancels, purges atomic.Int64
}

// Stats returns the client's counters so far.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{
		Sent: s.sent.Load(), Replies: s.replies.Load(), Redelivered: s.redelivered.Load(),
		Duplicates: s.duplicates.Load(), Late: s.late.Load(), MaxDelivers: s.maxDelivers.Load(),
		Cancels: s.cancels.Load(), Purges: s.purges.Load(),
	}
}

func (c *Client) onReply(m *nats.Msg) {
	id := m.Header.Get(hdrTask)
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.pending[id]
	switch {
	case cl != nil && cl.answer(reply{msg: m}):
	case cl != nil && cl.byWorker, cl == nil && c.replied.has(id):
		c.stats.duplicates.Add(1)
	default:
		c.stats.late.Add(1)
	}
}

func (c *Client) onMaxDeliveries(m *nats.Msg) {
	var adv struct {
		StreamSeq  uint64 `json:"stream_seq"`
		Deliveries uint64 `json:"deliveries"`
	}
	if json.Unmarshal(m.Data, &adv) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.bySeq[adv.StreamSeq]
	if cl == nil {
		return
	}
	err := fmt.Errorf("%w: %d deliveries of key %q", ErrMaxDeliveries, adv.Deliveries, cl.key)
	if cl.answer(reply{err: err}) {
		c.stats.maxDelivers.Add(1)
	}
}

func (c *Client) register(id string, cl *call) {
	c.mu.Lock()
	c.pending[id] = cl
	c.mu.Unlock()
}

func (c *Client) setSeq(cl *call, seq uint64) {
	c.mu.Lock()
	cl.seq = seq
	c.bySeq[seq] = cl
	c.mu.Unlock()
}

// unregister forgets a finished attempt. Later replies to it count as
// duplicates if it took a worker's reply, else as late. A reply handed
// over while the attempt was giving up is late too.
func (c *Client) unregister(id string, cl *call, tookReply bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, id)
	delete(c.bySeq, cl.seq)
	if tookReply {
		c.replied.add(id)
		return
	}
	cl.answered = true
	select {
	case r := <-cl.reply:
		if r.msg != nil {
			c.stats.late.Add(1)
		}
	default:
	}
}

// Scope is where a remote task belongs: a [*Client], which puts each task
// in a batch of its own, or a [*Batch], which groups one run's tasks so
// that cancelling the run purges them with one request.
type Scope interface {
	batch() *Batch
}

func (c *Client) batch() *Batch { return c.Batch() }

// Batch groups the remote tasks of one run. When the run is cancelled
// (fail-fast, an aggregator that decided, a run timeout, the caller's
// context), the batch's queued tasks are purged from the stream with one
// subject-filtered purge and workers are told to cancel the running ones.
// A cancelled Batch stays cancelled: use a new one for each run. A Batch
// is safe for concurrent use.
type Batch struct {
	c  *Client
	id string

	mu        sync.Mutex
	cancelled bool
	purged    chan struct{} // closed once the purge is done
}

// Batch returns a new, empty batch of c.
func (c *Client) Batch() *Batch {
	return &Batch{c: c, id: nuid.Next(), purged: make(chan struct{})}
}

func (b *Batch) batch() *Batch { return b }

// Remote returns a task that runs the handler registered as name on some
// worker, with args, and whose value is the handler's result. The task
// takes its deadline from its context (as set by [fanout.WithTaskTimeout],
// say), sends it along for the worker to enforce, and cancels the remote
// work when its context ends. Each call of the task's Do is a new remote
// attempt, so the run's retries and hedges work unchanged.
//
// An attempt ends with the worker's reply, with [ErrMaxDeliveries], when
// its context ends (the task's or the run's deadline, a cancel), or after
// the client's [WithResultTimeout]. Its context's deadline is therefore
// its backstop: no separate timer is needed. An attempt with neither a
// deadline nor a result timeout waits as long as it takes, as a local
// task would: while no worker takes the task (none running, or all stuck
// in handlers that ignore their context, so that no redelivery and no
// max-deliveries advisory can happen), while a handler that keeps sending
// heartbeats runs, and forever if its reply was lost while the client was
// disconnected. Give remote runs a deadline ([fanout.WithTimeout],
// [fanout.WithTaskTimeout]) or the client a result timeout.
func Remote[A, T any](s Scope, name, key string, args A) fanout.Task[T] {
	b := s.batch()
	return fanout.Task[T]{Key: key, Do: func(ctx context.Context) (T, error) {
		var zero T
		data, err := b.c.call(ctx, b, name, key, args)
		if err != nil {
			return zero, err
		}
		var v T
		if err := b.c.cfg.codec.Unmarshal(data, &v); err != nil {
			return zero, fmt.Errorf("fanoutnats: decode result of key %q: %w", key, err)
		}
		return v, nil
	}}
}

// call sends one attempt and waits for its reply.
func (c *Client) call(ctx context.Context, b *Batch, name, key string, args any) ([]byte, error) {
	if !validToken(name) {
		return nil, backoff.Permanent(fmt.Errorf("fanoutnats: task name %q must be letters, digits, '-' or '_'", name))
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	body, err := c.cfg.codec.Marshal(args)
	if err != nil {
		return nil, backoff.Permanent(fmt.Errorf("fanoutnats: encode arguments of key %q: %w", key, err))
	}
	id := nuid.Next()
	m := c.taskMsg(ctx, b, id, name, key, body)
	if size, limit := msgSize(m), c.nc.MaxPayload(); size > limit {
		return nil, backoff.Permanent(fmt.Errorf("%w: arguments of key %q make a %d-byte message, over the server's max_payload of %d bytes",
			ErrTooLarge, key, size, limit))
	}
	cl := &call{key: key, reply: make(chan reply, 1)}
	c.register(id, cl)
	tookReply := false
	defer func() { c.unregister(id, cl, tookReply) }()

	ack, err := c.js.PublishMsg(ctx, m, jetstream.WithMsgID(id))
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			// The task may have reached the stream all the same.
			if attemptOnly(cause) {
				c.cancelRemote(b.id, id)
			} else {
				b.cancel()
			}
			return nil, cause
		}
		return nil, fmt.Errorf("fanoutnats: publish key %q: %w", key, err)
	}
	c.stats.sent.Add(1)
	c.setSeq(cl, ack.Sequence)
	if !b.admit() {
		c.deleteMsg(ack.Sequence)
		return nil, ErrBatchCancelled
	}

	var backstop <-chan time.Time
	if d := c.cfg.resultTimeout; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		backstop = t.C
	}
	select {
	case r := <-cl.reply:
		if r.err != nil {
			c.deleteMsg(ack.Sequence)
			c.cancelRemote(b.id, id)
			return nil, r.err
		}
		tookReply = true
		return c.accept(r.msg, key)
	case <-backstop:
		c.deleteMsg(ack.Sequence)
		c.cancelRemote(b.id, id)
		return nil, fmt.Errorf("%w (%v) for key %q", ErrNoReply, c.cfg.resultTimeout, key)
	case <-ctx.Done():
		cause := context.Cause(ctx)
		c.stats.cancels.Add(1)
		if attemptOnly(cause) {
			c.deleteMsg(ack.Sequence)
			if _, timed := ctx.Deadline(); !timed || !errors.Is(cause, fanout.ErrTaskTimeout) {
				// A worker enforces the deadline it was sent by itself.
				c.cancelRemote(b.id, id)
			}
		} else {
			b.cancel()
		}
		return nil, cause
	}
}

func (c *Client) taskMsg(ctx context.Context, b *Batch, id, name, key string, body []byte) *nats.Msg {
	m := nats.NewMsg(taskSubject(c.cfg.prefix, name, b.id, key))
	m.Data = body
	m.Header.Set(hdrTask, id)
	m.Header.Set(hdrBatch, b.id)
	m.Header.Set(hdrName, name)
	m.Header.Set(hdrReply, c.inbox)
	hk, quoted := headerKey(key)
	m.Header.Set(hdrKey, hk)
	if quoted {
		m.Header.Set(hdrKeyQuote, "quoted")
	}
	if d, ok := ctx.Deadline(); ok {
		m.Header.Set(hdrDeadline, formatDeadline(d))
	}
	return m
}

// accept turns a worker's reply into the attempt's outcome.
func (c *Client) accept(m *nats.Msg, key string) ([]byte, error) {
	c.stats.replies.Add(1)
	if n, _ := strconv.Atoi(m.Header.Get(hdrDeliver)); n > 1 {
		c.stats.redelivered.Add(1)
	}
	if m.Header.Get(hdrStatus) == "ok" {
		return m.Data, nil
	}
	var w wireError
	if err := json.Unmarshal(m.Data, &w); err != nil {
		return nil, fmt.Errorf("fanoutnats: undecodable error reply for key %q: %w", key, err)
	}
	return nil, fromWire(w, key, m.Header.Get(hdrWorker))
}

// deleteMsg removes an attempt's message if it is still queued. Errors
// are ignored: the message is usually gone already, acked or purged.
func (c *Client) deleteMsg(seq uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.stream.DeleteMsg(ctx, seq)
}

// cancelRemote tells workers to stop a batch (task "") or one attempt.
func (c *Client) cancelRemote(batch, task string) {
	_ = c.nc.Publish(cancelSubject(c.cfg.prefix, batch, task), nil)
}

// admit reports whether a task just published may go on: false if the
// batch was cancelled meanwhile, in which case the purge may have missed
// the task and its sender deletes it.
func (b *Batch) admit() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.cancelled
}

// cancel purges the batch's queued tasks and tells workers to stop its
// running ones, once; other callers wait until that is done, so a run
// that returns has left nothing of its own in the stream.
func (b *Batch) cancel() {
	b.mu.Lock()
	first := !b.cancelled
	b.cancelled = true
	b.mu.Unlock()
	if !first {
		<-b.purged
		return
	}
	defer close(b.purged)
	c := b.c
	c.cancelRemote(b.id, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.stream.Purge(ctx, jetstream.WithPurgeSubject(batchFilter(c.cfg.prefix, b.id))); err == nil {
		c.stats.purges.Add(1)
	}
}

// attemptOnly reports whether a cause ends one attempt rather than the
// run: a per-attempt timeout ([fanout.ErrTaskTimeout]), or a hedged copy
// that lost the race ([fanout.ErrHedgeLost]).
func attemptOnly(cause error) bool {
	return errors.Is(cause, fanout.ErrTaskTimeout) || errors.Is(cause, fanout.ErrHedgeLost)
}

func msgSize(m *nats.Msg) int64 {
	n := len(m.Subject) + len(m.Reply) + len(m.Data)
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return int64(n + 12)
}

// flush waits until the server has seen everything sent so far, within
// ctx's deadline or the connection's default timeout.
func flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); ok {
		return nc.FlushWithContext(ctx)
	}
	return nc.Flush()
}
