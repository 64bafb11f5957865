package fanoutnats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Client sends remote tasks to workers and collects their replies. Make
// one per process and share it: a Client is safe for concurrent use.
//
// Replies are stored in the replies stream before they reach the client,
// so a client that was disconnected collects the ones it missed when it
// reconnects, and a client that restarted resumes a batch by its ID
// ([Client.ResumeBatch]) without running its finished keys again.
type Client struct {
	cfg   *config
	nc    *nats.Conn
	js    jetstream.JetStream
	id    string // this client's token in reply subjects
	subs  []*nats.Subscription
	jan   *janitor
	strms atomic.Pointer[streams]

	mu      sync.Mutex
	closed  bool             // Close was called: attempts fail with ErrClientClosed
	pending map[string]*call // by attempt id, until over and settled
	bySeq   map[uint64]*call // by stream sequence, for advisories
	waiting map[string]int   // attempts not over, by batch ID, for Fleet
	replied recentSet        // finished attempts that took a worker's reply

	fleet fleetView // the workers' status reports, once Fleet is called
	stats clientStats
}

// streams are the task and replies streams, replaced when a server that
// lost them has them created again.
type streams struct {
	tasks, replies jetstream.Stream
}

// publishTimeout bounds the wait for a task's PubAck; an attempt whose
// publish times out sends its task again, under the same de-duplication
// id, so that it is stored once.
const publishTimeout = 10 * time.Second

// NewClient prepares a client on nc: it opens the task and replies
// streams and subscribes to its replies and to JetStream's
// max-deliveries advisories. The caller keeps owning nc; Close the client
// before closing nc.
//
// Opening a stream looks it up first and creates it only if it does not
// exist ([WithBind]: fails instead). An existing stream is never changed,
// so its own storage, replicas, limits and description stay as an
// operator or an earlier client set them; NewClient fails, naming each
// difference, if that stream cannot serve (see the README).
func NewClient(ctx context.Context, nc *nats.Conn, opts ...Option) (*Client, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errNilConn
	}
	c := &Client{
		cfg: cfg, nc: nc, id: nuid.Next(),
		pending: make(map[string]*call), bySeq: make(map[uint64]*call), waiting: make(map[string]int),
		replied: newRecentSet(1 << 14),
	}
	c.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncAckHandler(c.onPubAck),
		jetstream.WithPublishAsyncErrHandler(c.onPubErr),
		jetstream.WithPublishAsyncMaxPending(1<<20),
		jetstream.WithPublishAsyncTimeout(publishTimeout))
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: jetstream: %w", err)
	}
	if _, err := c.openStreams(ctx); err != nil {
		return nil, err
	}
	if err := c.subscribe(ctx); err != nil {
		c.Close()
		return nil, err
	}
	c.jan = startJanitor(c)
	return c, nil
}

func (c *Client) subscribe(ctx context.Context) error {
	inbox := c.cfg.prefix + ".reply." + c.cfg.tenant + "." + c.id + ".>"
	sub, err := c.nc.Subscribe(inbox, c.onReply)
	if err != nil {
		return fmt.Errorf("fanoutnats: subscribe to replies: %w", err)
	}
	c.subs = append(c.subs, sub)
	// A reply the library drops for want of room would leave its key
	// waiting: never drop one.
	_ = sub.SetPendingLimits(-1, -1)
	adv := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + c.cfg.stream + "." + c.cfg.consumer
	if sub, err = c.nc.Subscribe(adv, c.onMaxDeliveries); err != nil {
		return fmt.Errorf("fanoutnats: subscribe to advisories: %w", err)
	}
	c.subs = append(c.subs, sub)
	if err := flush(ctx, c.nc); err != nil {
		return fmt.Errorf("fanoutnats: flush subscriptions: %w", err)
	}
	return nil
}

// openStreams opens both streams, creating them if they are missing and
// [WithBind] allows it, and reports whether the task stream is not the
// one the client had: a server lost it, and the tasks in it with it.
func (c *Client) openStreams(ctx context.Context) (lost bool, err error) {
	tasks, err := openStream(ctx, c.js, c.cfg)
	if err != nil {
		return false, err
	}
	replies, err := openReplies(ctx, c.js, c.cfg)
	if err != nil {
		return false, err
	}
	old := c.strms.Swap(&streams{tasks: tasks, replies: replies})
	return old != nil && !old.tasks.CachedInfo().Created.Equal(tasks.CachedInfo().Created), nil
}

// Close stops listening for replies and for the workers' status
// reports, and stops the client's background clean-up, after one last
// bounded pass if the connection is up. Attempts still waiting for a
// reply end at once with [ErrClientClosed], their tasks cancelled on the
// workers as a cancelled attempt's are, and so does any attempt made
// after Close. It does not close the connection. Calling it again does
// nothing.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	for _, cl := range c.pending {
		cl.answer(reply{err: closedErr(cl.key)})
	}
	c.mu.Unlock()
	for _, s := range c.subs {
		_ = s.Unsubscribe()
	}
	c.fleet.close()
	if c.jan != nil {
		c.jan.close()
	}
}

// Stats counts what the client has seen. Reading it is safe at any time.
// Every reply that reaches the client is counted once: in Replies if its
// attempt took it, in Duplicates if its attempt had taken another reply
// already, else in Late: its attempt had given up first (its context
// ended, at a per-task timeout say; its result timeout passed; or a
// max-deliveries advisory decided it), or is too old to be remembered.
type Stats struct {
	Sent        int64 // task messages stored, retries, hedges and republished ones included
	Replies     int64 // replies accepted, one per finished attempt
	Redelivered int64 // accepted replies that came from a redelivery
	Duplicates  int64 // replies dropped because their attempt already had one
	Late        int64 // replies dropped because their attempt had given up
	MaxDelivers int64 // attempts failed by a max-deliveries advisory
	Cancels     int64 // attempts cancelled before their reply
	Purges      int64 // batches purged from the stream
	// Recovered counts replies read from the replies stream rather than
	// received: sent while the client was disconnected, or by a worker
	// running a task that a resumed batch adopted.
	Recovered int64
	// Resumed counts keys of a resumed batch answered by a success the
	// replies stream held, without sending a task.
	Resumed int64
	// Adopted counts keys of a resumed batch whose task, still queued or
	// running, the client waited for rather than send another.
	Adopted int64
	// Republished counts tasks sent again after a reconnect found them
	// neither queued nor answered: a server restarted without their
	// stream (memory storage), or their first publish never arrived.
	Republished int64
}

type clientStats struct {
	sent, replies, redelivered, duplicates, late, maxDelivers, cancels, purges atomic.Int64
	recovered, resumed, adopted, republished                                   atomic.Int64
}

// Stats returns the client's counters so far.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{
		Sent: s.sent.Load(), Replies: s.replies.Load(), Redelivered: s.redelivered.Load(),
		Duplicates: s.duplicates.Load(), Late: s.late.Load(), MaxDelivers: s.maxDelivers.Load(),
		Cancels: s.cancels.Load(), Purges: s.purges.Load(), Recovered: s.recovered.Load(),
		Resumed: s.resumed.Load(), Adopted: s.adopted.Load(), Republished: s.republished.Load(),
	}
}

// onReply hands a worker's reply to its attempt.
func (c *Client) onReply(m *nats.Msg) {
	c.deliver(m, false)
}

// deliver hands m to its attempt, recovered or not, and counts it.
func (c *Client) deliver(m *nats.Msg, recovered bool) {
	id := m.Header.Get(hdrTask)
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.pending[id]
	switch {
	case cl != nil && cl.answer(reply{msg: m}):
		if recovered {
			c.stats.recovered.Add(1)
		}
	case recovered:
		// Read from the stream after it arrived after all: not a second
		// reply.
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

// onPubAck records that an attempt's task is stored. It runs on the
// library's goroutine and never blocks.
func (c *Client) onPubAck(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
	c.mu.Lock()
	cl := c.pending[m.Header.Get(hdrTask)]
	if cl == nil || cl.settled {
		c.mu.Unlock()
		return
	}
	cl.settled, cl.seq = true, ack.Sequence
	c.bySeq[ack.Sequence] = cl
	if !ack.Duplicate {
		c.stats.sent.Add(1)
	}
	drop := cl.over && !cl.tookReply
	if cl.over {
		c.remove(cl)
	}
	c.mu.Unlock()
	cl.b.settle()
	if drop {
		// The attempt gave up before its task was stored.
		c.jan.delete(ack.Sequence)
	}
}

// onPubErr records that an attempt's publish failed. A disconnect leaves
// it unknown whether the task was stored: the resync after the reconnect
// finds out. Other failures go to the attempt, which decides.
func (c *Client) onPubErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	c.mu.Lock()
	cl := c.pending[m.Header.Get(hdrTask)]
	if cl == nil || cl.settled {
		c.mu.Unlock()
		return
	}
	cl.settled = true
	if cl.over {
		c.remove(cl)
	} else if !errors.Is(err, nats.ErrDisconnected) {
		cl.publishFailed <- err // buffered; one publish in flight at a time
	}
	c.mu.Unlock()
	cl.b.settle()
}

// remove forgets cl. It must be called with c.mu held.
func (c *Client) remove(cl *call) {
	delete(c.pending, cl.id)
	if cl.seq != 0 && c.bySeq[cl.seq] == cl {
		delete(c.bySeq, cl.seq)
	}
}

// cancelRemote tells workers to stop a batch (task "") or one attempt.
func (c *Client) cancelRemote(batch, task string) {
	_ = c.nc.Publish(cancelSubject(c.cfg.prefix, c.cfg.tenant, batch, task), nil)
}

func (c *Client) streams() *streams { return c.strms.Load() }

// flush waits until the server has seen everything sent so far, within
// ctx's deadline or the connection's default timeout.
func flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); ok {
		return nc.FlushWithContext(ctx)
	}
	return nc.Flush()
}

// closedErr is the error of key's attempt through a closed client.
func closedErr(key string) error {
	return backoff.Permanent(fmt.Errorf("%w: key %q", ErrClientClosed, key))
}
