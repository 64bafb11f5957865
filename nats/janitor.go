package fanoutnats

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// errLost tells an attempt that its task is neither queued nor answered:
// it sends the task again.
var errLost = errors.New("fanoutnats: task lost by the server")

// janitor is a client's background work: it removes the tasks of
// attempts and batches that gave up, when the server can be reached, so
// that attempts end with their context whatever the server's state; and
// after every reconnect it resyncs the attempts in flight. It stops with
// Client.Close, or when the connection closes.
type janitor struct {
	c      *Client
	wake   chan struct{}    // buffered 1
	status chan nats.Status // reconnected, or closed
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	deletes []uint64
	purges  []*Batch
}

// janitorRetry paces retries of clean-ups that failed.
const janitorRetry = time.Second

func startJanitor(c *Client) *janitor {
	j := &janitor{c: c, wake: make(chan struct{}, 1), status: c.nc.StatusChanged(nats.CONNECTED, nats.CLOSED)}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	j.wg.Go(j.run)
	return j
}

// delete removes a task message once the server can be reached.
func (j *janitor) delete(seq uint64) {
	j.mu.Lock()
	j.deletes = append(j.deletes, seq)
	j.mu.Unlock()
	j.poke()
}

// purge purges a cancelled batch once its publishes in flight have landed
// and the server can be reached.
func (j *janitor) purge(b *Batch) {
	j.mu.Lock()
	j.purges = append(j.purges, b)
	j.mu.Unlock()
	j.poke()
}

func (j *janitor) poke() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

func (j *janitor) run() {
	retry := time.NewTimer(janitorRetry)
	defer retry.Stop()
	for {
		select {
		case <-j.ctx.Done():
			return
		case s := <-j.status:
			if s == nats.CLOSED {
				return // nothing more can be done
			}
			j.c.resync(j.ctx)
		case <-j.wake:
		case <-retry.C:
		}
		if !j.clean(j.ctx) {
			retry.Reset(janitorRetry)
		}
	}
}

// clean does the clean-ups it can, and reports whether none is left.
func (j *janitor) clean(ctx context.Context) bool {
	if !j.c.nc.IsConnected() {
		return false
	}
	j.mu.Lock()
	deletes, purges := j.deletes, j.purges
	j.deletes, j.purges = nil, nil
	j.mu.Unlock()
	var failedDeletes []uint64
	for _, seq := range deletes {
		if ctx.Err() != nil || j.c.deleteMsg(ctx, seq) != nil {
			failedDeletes = append(failedDeletes, seq)
		}
	}
	var failedPurges []*Batch
	for _, b := range purges {
		select {
		case <-b.landed:
			if ctx.Err() == nil && j.c.purgeBatch(b, cleanupWait) == nil {
				continue
			}
		default: // a publish is still in flight: purge after it lands
		}
		failedPurges = append(failedPurges, b)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.deletes = append(j.deletes, failedDeletes...)
	j.purges = append(j.purges, failedPurges...)
	return len(j.deletes) == 0 && len(j.purges) == 0
}

// close stops the janitor after one last pass, bounded by cleanupWait.
func (j *janitor) close() {
	ctx, cancel := context.WithTimeout(j.ctx, cleanupWait)
	j.clean(ctx)
	cancel()
	j.cancel()
	j.wg.Wait()
	j.c.nc.RemoveStatusListener(j.status)
}

// deleteMsg removes one task message; one already gone counts as done.
func (c *Client) deleteMsg(ctx context.Context, seq uint64) error {
	ctx, cancel := context.WithTimeout(ctx, cleanupWait)
	defer cancel()
	err := c.streams().tasks.DeleteMsg(ctx, seq)
	if err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

func isNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// resync runs after every reconnect. It opens the streams again (and
// creates them if the server lost them), then looks up each attempt still
// waiting: a reply stored while the client was away is handed over, a
// task still queued or running is left to its worker, and a task the
// server lost is sent again.
func (c *Client) resync(ctx context.Context) {
	lost, err := c.openStreams(ctx)
	if err != nil {
		return // the attempts end with their contexts; the next reconnect tries again
	}
	c.mu.Lock()
	var waiting []*call
	for _, cl := range c.pending {
		if !cl.over && !cl.answered && cl.settled {
			waiting = append(waiting, cl)
		}
	}
	c.mu.Unlock()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, cl := range waiting {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.recover(ctx, cl, lost)
		})
	}
	wg.Wait()
}

// recover finds out what became of one waiting attempt.
func (c *Client) recover(ctx context.Context, cl *call, lost bool) {
	if c.recoverReply(ctx, cl) {
		return
	}
	if !lost {
		m, err := c.queuedTask(ctx, cl.msg.Subject)
		if err != nil {
			return // cannot tell: leave it be
		}
		if m != nil && m.Header.Get(hdrTask) == cl.id {
			c.mu.Lock()
			if cl.seq == 0 { // its PubAck was lost in the disconnect
				cl.seq = m.Sequence
				c.bySeq[m.Sequence] = cl
			}
			c.mu.Unlock()
			return
		}
		// Acknowledged between the two look-ups?
		if c.recoverReply(ctx, cl) {
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !cl.over && !cl.answered && cl.settled {
		select {
		case cl.publishFailed <- errLost:
			c.stats.republished.Add(1)
		default:
		}
	}
}

// recoverReply hands over a stored reply of cl's key, and reports whether
// it was cl's.
func (c *Client) recoverReply(ctx context.Context, cl *call) bool {
	r, err := c.storedReply(ctx, cl.b.id, cl.key)
	if err != nil || r == nil {
		return false
	}
	c.deliver(r, true)
	return r.Header.Get(hdrTask) == cl.id
}
