package fanoutnats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Scope is where a remote task belongs: a [*Client], which puts each task
// in a batch of its own, or a [*Batch], which groups one run's tasks so
// that cancelling the run purges them with one request and a restarted
// client can resume them.
type Scope interface {
	batch() *Batch
}

func (c *Client) batch() *Batch { return c.Batch() }

// Batch groups the remote tasks of one run. When the run is cancelled
// (fail-fast, an aggregator that decided, a run timeout, the caller's
// context), the batch's queued tasks are purged from the stream with one
// subject-filtered purge and workers are told to cancel the running ones.
// A cancelled Batch stays cancelled: use a new one for each run, or
// resume it with [Client.ResumeBatch]. A Batch is safe for concurrent
// use.
type Batch struct {
	c       *Client
	id      string
	resumed bool

	mu        sync.Mutex
	cancelled bool
	inflight  int           // publishes not yet acknowledged or failed
	landed    chan struct{} // closed once cancelled with none in flight
	purged    chan struct{} // closed once the cancel's purge is done
	looked    map[string]bool
	adopted   int // adopted attempts waiting, for adoptSub
	adoptSub  *nats.Subscription
}

// Batch returns a new, empty batch of c.
func (c *Client) Batch() *Batch {
	return c.newBatch(nuid.Next(), false)
}

func (c *Client) newBatch(id string, resumed bool) *Batch {
	return &Batch{c: c, id: id, resumed: resumed,
		landed: make(chan struct{}), purged: make(chan struct{})}
}

// ID returns the batch's ID, for [Client.ResumeBatch].
func (b *Batch) ID() string { return b.id }

func (b *Batch) batch() *Batch { return b }

// ResumeBatch returns the batch with the given ID, as [Batch.ID] reported
// it, typically to a process that crashed part-way through a run: a
// rerun of the same keys through it takes each key whose success the
// replies stream still holds (see [WithReplyRetention]) without sending
// a task, waits for the keys whose task is still queued or running
// rather than sending another, and runs only the rest. A key whose
// stored reply is an error runs again. The client must use the same
// prefix and tenant as the one that created the batch. Only each key's
// first attempt looks: retries and hedges are new attempts.
//
// The resumed batch is a fresh one in every other way, so a batch that
// was cancelled can be resumed too.
func (c *Client) ResumeBatch(id string) (*Batch, error) {
	if !validToken(id) {
		return nil, fmt.Errorf("fanoutnats: ResumeBatch(%q): a batch ID is letters, digits, '-' or '_'", id)
	}
	b := c.newBatch(id, true)
	b.looked = make(map[string]bool)
	return b, nil
}

// admit counts a publish in flight, unless the batch was cancelled: a
// cancelled batch sends nothing more.
func (b *Batch) admit() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cancelled {
		return false
	}
	b.inflight++
	return true
}

// settle counts a publish acknowledged or failed.
func (b *Batch) settle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inflight--
	if b.cancelled && b.inflight == 0 {
		close(b.landed)
	}
}

// cleanupWait bounds how long a cancel waits for the server: for the
// batch's publishes in flight to be acknowledged, then for the purge.
// Whatever is not done by then, the janitor finishes in the background.
const cleanupWait = 2 * time.Second

// cancel purges the batch's queued tasks and tells workers to stop its
// running ones, once; other callers wait until that is done. The purge
// waits for the batch's publishes in flight to land, so that none lands
// after it. Unless the server is unreachable or slow (see cleanupWait),
// a run that returns has left nothing of its own in the stream; if it
// is, the janitor purges the batch once it can, and workers skip its
// tasks all the same since they heard the cancel.
func (b *Batch) cancel() {
	b.mu.Lock()
	first := !b.cancelled
	b.cancelled = true
	if first && b.inflight == 0 {
		close(b.landed)
	}
	b.mu.Unlock()
	if !first {
		<-b.purged
		return
	}
	defer close(b.purged)
	c := b.c
	c.cancelRemote(b.id, "")
	if !c.nc.IsConnected() {
		c.jan.purge(b)
		return
	}
	t := time.NewTimer(cleanupWait)
	defer t.Stop()
	select {
	case <-b.landed:
	case <-t.C:
		c.jan.purge(b)
		return
	}
	if err := c.purgeBatch(b, cleanupWait); err != nil {
		c.jan.purge(b)
	}
}

// purgeBatch removes the batch's queued tasks from the stream.
func (c *Client) purgeBatch(b *Batch, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := c.streams().tasks.Purge(ctx, jetstream.WithPurgeSubject(batchFilter(c.cfg.prefix, c.cfg.tenant, b.id)))
	if err == nil {
		c.stats.purges.Add(1)
	}
	return err
}

// resume answers a resumed batch's key from the streams if it can: with
// its stored success (done), or by waiting for its task still queued or
// running. It reports done false if the key must run.
func (b *Batch) resume(ctx context.Context, name, key string) (data []byte, err error, done bool) {
	b.mu.Lock()
	first := !b.looked[key]
	b.looked[key] = true
	b.mu.Unlock()
	if !first {
		return nil, nil, false
	}
	// The task first, then the reply: a worker stores its reply before it
	// acknowledges the task, so a task found gone was either never sent
	// or has its reply stored by now. The other order has a window, a
	// task finishing between the two looks, in which the key would run
	// again.
	c := b.c
	m, err := c.queuedTask(ctx, taskSubject(c.cfg.prefix, c.cfg.tenant, name, b.id, key))
	if cause := context.Cause(ctx); cause != nil {
		return nil, cause, true
	}
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: resume key %q: look up its task: %w", key, err), true
	}
	r, err := c.storedReply(ctx, b.id, key)
	if cause := context.Cause(ctx); cause != nil {
		return nil, cause, true
	}
	if err != nil {
		// Running the key could pay for it twice.
		return nil, fmt.Errorf("fanoutnats: resume key %q: look up its reply: %w", key, err), true
	}
	if r != nil && r.Header.Get(hdrStatus) == "ok" && sameKey(r.Header, key) {
		c.stats.resumed.Add(1)
		return r.Data, nil, true
	}
	if m == nil || m.Header.Get(hdrTask) == "" || !sameKey(m.Header, key) {
		return nil, nil, false
	}
	data, err = b.adopt(ctx, m, key)
	return data, err, true
}

// sameKey reports whether a task or reply message is key's: its subject
// token says so, and so does its key header if it has one (a reply has
// one only when the token is a hash).
func sameKey(h nats.Header, key string) bool {
	v := h.Values(hdrKey)
	return len(v) == 0 || keyFromHeader(v[0], h.Get(hdrKeyQuote) == "quoted") == key
}

// adopt waits for the reply to a task an earlier client left queued or
// running, which goes to that client's reply subject: the batch listens
// there while it has adopted attempts waiting.
func (b *Batch) adopt(ctx context.Context, m *jetstream.RawStreamMsg, key string) ([]byte, error) {
	c := b.c
	cl := &call{id: m.Header.Get(hdrTask), key: key, b: b, seq: m.Sequence, settled: true,
		msg: taskCopy(m), reply: make(chan reply, 1), publishFailed: make(chan error, 1)}
	c.mu.Lock()
	c.track(cl)
	c.bySeq[cl.seq] = cl
	c.mu.Unlock()
	if err := b.listen(); err != nil {
		c.giveUp(cl, false)
		return nil, err
	}
	defer b.unlisten()
	c.stats.adopted.Add(1)
	// The reply may have been stored before the batch listened.
	if r, _ := c.storedReply(ctx, b.id, key); r != nil && r.Header.Get(hdrTask) == cl.id {
		c.deliver(r, true)
	}
	return c.wait(ctx, cl)
}

// taskCopy rebuilds a stored task as it was published, so that an adopted
// attempt can send it again if the server loses it.
func taskCopy(m *jetstream.RawStreamMsg) *nats.Msg {
	t := nats.NewMsg(m.Subject)
	t.Data = m.Data
	for k, v := range m.Header {
		if strings.HasPrefix(k, "Fanout-") || k == hdrMsgID {
			t.Header[k] = v
		}
	}
	return t
}

func (b *Batch) listen() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.adopted++; b.adoptSub != nil {
		return nil
	}
	c := b.c
	own := c.cfg.prefix + ".reply." + c.cfg.tenant + "." + c.id + "."
	sub, err := c.nc.Subscribe(c.cfg.prefix+".reply."+c.cfg.tenant+".*."+b.id+".*", func(m *nats.Msg) {
		if !strings.HasPrefix(m.Subject, own) { // those come through the client's own subscription
			c.deliver(m, true)
		}
	})
	if err != nil {
		b.adopted--
		return fmt.Errorf("fanoutnats: subscribe to the replies of batch %s: %w", b.id, err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	b.adoptSub = sub
	return flush(context.Background(), c.nc)
}

func (b *Batch) unlisten() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.adopted--; b.adopted == 0 && b.adoptSub != nil {
		_ = b.adoptSub.Unsubscribe()
		b.adoptSub = nil
	}
}

// lookupWait bounds each look-up in the streams.
const lookupWait = 5 * time.Second

// storedReply returns the last reply the replies stream holds for key in
// batch, nil if there is none.
func (c *Client) storedReply(ctx context.Context, batch, key string) (*nats.Msg, error) {
	m, err := c.lastMsg(ctx, c.streams().replies, storedReplySubject(c.cfg.prefix, c.cfg.tenant, batch, key))
	if m == nil {
		return nil, err
	}
	return &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}, nil
}

// queuedTask returns the task stored on subject, queued or running, nil
// if there is none.
func (c *Client) queuedTask(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	return c.lastMsg(ctx, c.streams().tasks, subject)
}

// lastMsg returns the last message s holds on subject, nil if none.
func (c *Client) lastMsg(ctx context.Context, s jetstream.Stream, subject string) (*jetstream.RawStreamMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupWait)
	defer cancel()
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	return m, err
}
