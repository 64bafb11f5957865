package fanoutnats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/gofanout/fanout"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// A remote attempt's life, top to bottom: Remote's task calls call; call
// checks the task, and for a resumed batch looks for the key's stored
// reply or queued task first; send publishes the task; wait waits for the
// reply, the end of the attempt's context, or the client's backstop;
// giveUp cleans up after an attempt that ends without a reply.

// call is one attempt in flight.
type call struct {
	id            string
	key           string
	b             *Batch
	msg           *nats.Msg
	reply         chan reply // buffered 1, sent to once: the first answer wins
	publishFailed chan error // buffered 1: the publish in flight failed

	// Guarded by Client.mu.
	seq       uint64
	settled   bool // the publish in flight was acknowledged or failed
	over      bool // the attempt returned
	tookReply bool // ... with a worker's reply
	answered  bool // an answer was handed over, or the attempt gave up
	byWorker  bool // the answer handed over was a worker's reply
}

type reply struct {
	msg *nats.Msg // nil with err set: the client decided (advisory)
	err error
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

// Remote returns a task that runs the handler registered as name on some
// worker, with args, and whose value is the handler's result. The task
// takes its deadline from its context (as set by [fanout.WithTaskTimeout],
// say), sends it along for the worker to enforce, and cancels the remote
// work when its context ends. Each call of the task's Do is a new remote
// attempt, so the run's retries and hedges work unchanged. Keys are
// limited to [MaxKeyLen] bytes. Arguments that do not encode, and a
// result that does not decode into T, are permanent errors, as are the
// worker's [CodeBadArgs] for arguments its handler cannot decode.
//
// An attempt ends with the worker's reply, with [ErrMaxDeliveries], when
// its context ends (the task's or the run's deadline, a cancel), or after
// the client's [WithResultTimeout]; it ends then even if the server is
// unreachable, and the client removes its task from the queue once it
// can. Replies are stored before they are delivered, so a reply sent
// while the client was disconnected is collected when it reconnects. An
// attempt with neither a deadline nor a result timeout waits as long as
// it takes, as a local task would: while no worker takes the task (none
// running, or all stuck in handlers that ignore their context, so that no
// redelivery and no max-deliveries advisory can happen), or while a
// handler that keeps sending heartbeats runs. Give remote runs a deadline
// ([fanout.WithTimeout], [fanout.WithTaskTimeout]) or the client a result
// timeout. Remote panics if s is a nil Client or Batch.
func Remote[A, T any](s Scope, name, key string, args A) fanout.Task[T] {
	var b *Batch
	if s != nil {
		b = s.batch()
	}
	if b == nil || b.c == nil {
		panic("fanoutnats: Remote: nil Scope; pass a *Client or a *Batch")
	}
	return fanout.Task[T]{Key: key, Do: func(ctx context.Context) (T, error) {
		var zero T
		data, err := b.c.call(ctx, b, name, key, args)
		if err != nil {
			return zero, err
		}
		var v T
		if err := b.c.cfg.codec.Unmarshal(data, &v); err != nil {
			// The worker would send the same again: not worth a retry.
			return zero, backoff.Permanent(fmt.Errorf("fanoutnats: decode result of key %q: %w", key, err))
		}
		return v, nil
	}}
}

// call runs one attempt and returns the result's encoding.
func (c *Client) call(ctx context.Context, b *Batch, name, key string, args any) ([]byte, error) {
	if err := checkCall(name, key); err != nil {
		return nil, err
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, closedErr(key)
	}
	body, err := c.cfg.codec.Marshal(args)
	if err != nil {
		return nil, backoff.Permanent(fmt.Errorf("fanoutnats: encode arguments of key %q: %w", key, err))
	}
	if b.resumed {
		if data, err, done := b.resume(ctx, name, key); done {
			return data, err
		}
	}
	id := nuid.Next()
	m := c.taskMsg(ctx, b, id, name, key, body)
	if size, limit := msgSize(m), c.nc.MaxPayload(); size > limit {
		return nil, backoff.Permanent(fmt.Errorf("%w: arguments of key %q make a %d-byte message, over the server's max_payload of %d bytes",
			ErrTooLarge, key, size, limit))
	}
	cl := c.newCall(id, key, b, m)
	if err := c.send(cl); err != nil {
		c.giveUp(cl, false)
		return nil, err
	}
	return c.wait(ctx, cl)
}

func checkCall(name, key string) error {
	if !validToken(name) {
		return backoff.Permanent(fmt.Errorf("fanoutnats: task name %q must be letters, digits, '-' or '_'", name))
	}
	if len(key) > MaxKeyLen {
		return backoff.Permanent(fmt.Errorf("%w: key %.32q... is %d bytes, over the %d-byte key limit (MaxKeyLen)",
			ErrTooLarge, key, len(key), MaxKeyLen))
	}
	return nil
}

// newCall registers an attempt for msg, whose replies and PubAck it then
// receives.
func (c *Client) newCall(id, key string, b *Batch, m *nats.Msg) *call {
	cl := &call{id: id, key: key, b: b, msg: m,
		reply: make(chan reply, 1), publishFailed: make(chan error, 1)}
	c.mu.Lock()
	c.track(cl)
	c.mu.Unlock()
	return cl
}

// track records cl as pending and waiting in its batch; through a
// closed client, cl has its answer at once. It must be called with c.mu
// held.
func (c *Client) track(cl *call) {
	c.pending[cl.id] = cl
	c.waiting[cl.b.id]++
	if c.closed {
		cl.answer(reply{err: closedErr(cl.key)})
	}
}

// end records that cl's attempt returned: it waits no more in its batch.
// It must be called with c.mu held.
func (c *Client) end(cl *call) {
	if cl.over {
		return
	}
	cl.over = true
	if c.waiting[cl.b.id]--; c.waiting[cl.b.id] <= 0 {
		delete(c.waiting, cl.b.id)
	}
}

// send publishes cl's task without waiting for its PubAck, which
// onPubAck and onPubErr receive. The batch counts it in flight until then.
func (c *Client) send(cl *call) error {
	if !cl.b.admit() {
		return ErrBatchCancelled
	}
	c.mu.Lock()
	cl.settled = false
	c.mu.Unlock()
	if _, err := c.js.PublishMsgAsync(cl.msg); err != nil {
		c.mu.Lock()
		cl.settled = true
		c.mu.Unlock()
		cl.b.settle()
		return fmt.Errorf("fanoutnats: publish key %q: %w", cl.key, err)
	}
	return nil
}

// maxResends bounds how often one attempt sends its task again after it
// was lost or its PubAck timed out.
const maxResends = 3

// wait waits for cl's outcome.
func (c *Client) wait(ctx context.Context, cl *call) ([]byte, error) {
	var backstop <-chan time.Time
	if d := c.cfg.resultTimeout; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		backstop = t.C
	}
	resends := 0
	for {
		select {
		case r := <-cl.reply:
			if r.err != nil {
				c.giveUp(cl, true)
				c.cancelRemote(cl.b.id, cl.id)
				return nil, r.err
			}
			c.took(cl)
			return c.accept(r.msg, cl.key)
		case err := <-cl.publishFailed:
			resends++
			if err := c.resend(ctx, cl, err, resends); err != nil {
				c.giveUp(cl, false)
				return nil, err
			}
		case <-backstop:
			c.giveUp(cl, true)
			c.cancelRemote(cl.b.id, cl.id)
			return nil, fmt.Errorf("%w (%v) for key %q", ErrNoReply, c.cfg.resultTimeout, cl.key)
		case <-ctx.Done():
			return nil, c.stop(ctx, cl)
		}
	}
}

// resend sends cl's task again after its publish failed, if that is
// worth it: the task was lost, or its PubAck, or the stream has no
// leader for now (a cluster electing one) or was lost with its server;
// the same de-duplication id makes a task stored twice count once.
// Streams are looked up (and created if lost) every third time.
func (c *Client) resend(ctx context.Context, cl *call, err error, n int) error {
	if ctx.Err() != nil {
		return nil // wait sees the context end
	}
	fail := fmt.Errorf("fanoutnats: publish key %q: %w", cl.key, err)
	switch {
	case errors.Is(err, errLost), errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		if n > maxResends {
			return fail
		}
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		if n%3 == 0 {
			octx, cancel := context.WithTimeout(ctx, time.Second)
			_, oerr := c.openStreams(octx)
			cancel()
			if errors.Is(oerr, errMissing) {
				return oerr
			}
		}
		if !sleepCtx(ctx, min(time.Duration(n)*pullPause, time.Second)) {
			return nil // wait sees the context end
		}
	default:
		return fail
	}
	return c.send(cl)
}

// stop ends an attempt whose context ended.
func (c *Client) stop(ctx context.Context, cl *call) error {
	cause := context.Cause(ctx)
	c.stats.cancels.Add(1)
	if !attemptOnly(cause) {
		c.giveUp(cl, false)
		cl.b.cancel()
		return cause
	}
	c.giveUp(cl, true)
	if _, timed := ctx.Deadline(); !timed || !errors.Is(cause, fanout.ErrTaskTimeout) {
		// A worker enforces the deadline it was sent by itself.
		c.cancelRemote(cl.b.id, cl.id)
	}
	return cause
}

// took finishes an attempt that took a worker's reply. Later replies to
// it count as duplicates.
func (c *Client) took(cl *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.end(cl)
	cl.tookReply = true
	c.replied.add(cl.id)
	if cl.settled {
		c.remove(cl)
	}
}

// giveUp finishes an attempt without a reply: later replies to it count
// as late, and if dropTask its task is removed from the queue once it is
// known to be stored (the janitor does that, so that the attempt ends
// now even if the server is unreachable). A reply handed over while the
// attempt was giving up is late too.
func (c *Client) giveUp(cl *call, dropTask bool) {
	c.mu.Lock()
	c.end(cl)
	cl.answered = true
	select {
	case r := <-cl.reply:
		if r.msg != nil {
			c.stats.late.Add(1)
		}
	default:
	}
	seq := uint64(0)
	if cl.settled {
		seq = cl.seq
		c.remove(cl)
	}
	c.mu.Unlock()
	if dropTask && seq != 0 {
		c.jan.delete(seq)
	}
}

func (c *Client) taskMsg(ctx context.Context, b *Batch, id, name, key string, body []byte) *nats.Msg {
	p, t := c.cfg.prefix, c.cfg.tenant
	m := nats.NewMsg(taskSubject(p, t, name, b.id, key))
	m.Data = body
	m.Header.Set(hdrTask, id)
	m.Header.Set(hdrMsgID, id)
	m.Header.Set(hdrReply, replySubject(p, t, c.id, b.id, key))
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
	return decodeReply(m, key)
}

func decodeReply(m *nats.Msg, key string) ([]byte, error) {
	if m.Header.Get(hdrStatus) == "ok" {
		return m.Data, nil
	}
	var w wireError
	if err := json.Unmarshal(m.Data, &w); err != nil {
		return nil, fmt.Errorf("fanoutnats: undecodable error reply for key %q: %w", key, err)
	}
	return nil, fromWire(w, key, m.Header.Get(hdrWorker))
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

// sleepCtx waits d, or less if ctx ends first, and reports whether ctx is
// still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
