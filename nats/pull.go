package fanoutnats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// A worker asks the consumer for exactly as many tasks as it has free
// slots, so that it never holds a task it cannot start (whose AckWait
// would run while it waits, and which another worker could be running).
// nats.go's Consume and Messages pre-fetch beyond that, and its Next
// subscribes and unsubscribes an inbox per task; so the puller sends the
// pull requests itself, on one subscription, one request at a time: a
// request for every free slot, and the next once that one has delivered
// all it asked for or ended. Tasks come with their own subjects, status
// messages on the request's reply subject (INBOX.N), which tells a status
// of the current request from a late one.
//
// Every request asks for idle heartbeats. A request whose heartbeats stop
// is given up and the slots asked for again: its consumer leader died
// (the new leader knows nothing of it) or the connection dropped. The
// server ends a request early with a status (408 expired, 409 leadership
// change or consumer deleted, 503 no consumer at all), which frees its
// slots too; a 503 makes the worker open the consumer again, creating it
// if a server lost it.

const (
	pullExpiry    = 10 * time.Second       // how long one pull request waits
	pullHeartbeat = 500 * time.Millisecond // its idle heartbeat
	pullPause     = 250 * time.Millisecond // first pause after a failed pull
)

type puller struct {
	w        *Worker
	inbox    string
	sub      *nats.Subscription
	msgs     chan *nats.Msg
	finished chan struct{} // a handler returned
	slots    int
	running  int

	next  uint64 // requests sent so far
	cur   string // the request in flight, "" if none
	left  int    // tasks it may still deliver
	heard time.Time

	pause    time.Duration // after a failed pull: wait before the next
	resumeAt time.Time
	missing  int        // 503s in a row: no consumer, or no leader
	reopened chan error // a reopen in the background is done
}

func (w *Worker) newPuller() (*puller, error) {
	n := w.cfg.concurrency
	p := &puller{
		w: w, inbox: w.nc.NewInbox(), slots: n,
		// Room for every task a request may deliver, and for status
		// messages, so that the library never drops one.
		msgs:     make(chan *nats.Msg, 2*n+64),
		finished: make(chan struct{}, n),
		reopened: make(chan error, 1),
	}
	sub, err := w.nc.ChanSubscribe(p.inbox+".*", p.msgs)
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: subscribe to pulled tasks: %w", err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	p.sub = sub
	return p, nil
}

// run pulls tasks and starts a handler for each on handlers, until ctx
// ends or the connection closes.
func (p *puller) run(ctx context.Context, handlers *sync.WaitGroup) error {
	closed := p.w.nc.StatusChanged(nats.CLOSED)
	defer p.w.nc.RemoveStatusListener(closed)
	tick := time.NewTicker(pullHeartbeat)
	defer tick.Stop()
	resume := time.NewTimer(0)
	defer resume.Stop()
	var reopening sync.WaitGroup
	defer reopening.Wait()
	for {
		if p.w.nc.IsClosed() {
			return fmt.Errorf("fanoutnats: worker %s: connection closed", p.w.name)
		}
		p.request()
		if p.paused() {
			resume.Reset(time.Until(p.resumeAt))
		}
		select {
		case <-resume.C:
		case <-ctx.Done():
			return nil
		case <-closed:
			return fmt.Errorf("fanoutnats: worker %s: connection closed", p.w.name)
		case m := <-p.msgs:
			if p.receive(ctx, m, handlers) {
				// Several 503s in a row: look the consumer up, and create
				// it if a server lost it, without holding up the loop.
				reopening.Go(func() {
					_, err := p.w.open(ctx)
					p.reopened <- err
				})
			}
		case err := <-p.reopened:
			p.missing = 0
			if errors.Is(err, errMissing) && ctx.Err() == nil {
				return fmt.Errorf("fanoutnats: worker %s: %w", p.w.name, err)
			}
		case <-p.finished:
			p.running--
		case now := <-tick.C:
			if p.cur != "" && now.Sub(p.heard) > 2*pullHeartbeat+pullPause {
				p.cur = "" // its heartbeats stopped
			}
		}
	}
}

func (p *puller) paused() bool { return time.Now().Before(p.resumeAt) }

// request asks for a task for every free slot, unless a request is in
// flight or pulls are paused.
func (p *puller) request() {
	free := p.slots - p.running
	if p.cur != "" || free == 0 || p.paused() || !p.w.nc.IsConnected() {
		return
	}
	p.next++
	token := strconv.FormatUint(p.next, 36)
	body := fmt.Appendf(nil, `{"batch":%d,"expires":%d,"idle_heartbeat":%d}`,
		free, pullExpiry.Nanoseconds(), pullHeartbeat.Nanoseconds())
	cfg := p.w.cfg
	subject := "$JS.API.CONSUMER.MSG.NEXT." + cfg.stream + "." + cfg.consumer
	if err := p.w.nc.PublishRequest(subject, p.inbox+"."+token, body); err != nil {
		p.failed()
		return
	}
	p.cur, p.left, p.heard = token, free, time.Now()
}

// receive handles a task or a status message, and reports whether the
// consumer should be opened again.
func (p *puller) receive(ctx context.Context, m *nats.Msg, handlers *sync.WaitGroup) (reopen bool) {
	if token, ok := strings.CutPrefix(m.Subject, p.inbox+"."); ok {
		return p.status(token, m.Header.Get("Status"), m.Header.Get("Description"))
	}
	if p.cur == "" || p.running == p.slots {
		// A request given up for dead delivered after all: no slot is
		// free for it, so let another worker have it.
		_ = m.NakWithDelay(handBackDelay)
		return false
	}
	p.pause = 0
	p.heard = time.Now()
	if p.left--; p.left == 0 {
		p.cur = ""
	}
	p.running++
	handlers.Go(func() {
		p.w.handle(ctx, m, func() { p.finished <- struct{}{} })
	})
	return false
}

// status handles a status message of request token, and reports
// whether the consumer should be opened again: a heartbeat keeps the
// request alive; anything else ends it.
func (p *puller) status(token, status, desc string) (reopen bool) {
	if token != p.cur {
		return false // a request given up already
	}
	if status == "100" { // idle heartbeat
		p.heard = time.Now()
		return false
	}
	p.cur = ""
	switch status {
	case "404", "408": // no tasks; expired
		p.missing = 0
		return false
	case "503": // no responders: no consumer, or no leader for now
		p.failed()
		p.missing++
		return p.missing == 4
	default: // 409: leadership change, consumer deleted, ...
		if !strings.EqualFold(desc, "Leadership Change") {
			p.failed() // a new leader has nothing to wait for
		}
		return false
	}
}

// failed pauses pulls, longer after each failure in a row, up to 1 s.
func (p *puller) failed() {
	p.pause = min(max(2*p.pause, pullPause), time.Second)
	p.resumeAt = time.Now().Add(p.pause)
}

// close unsubscribes, so that the server drops the pending request, and
// waits until it has, if it can be reached.
func (p *puller) close() {
	_ = p.sub.Unsubscribe()
	flushIfConnected(p.w.nc)
}

// flushIfConnected waits, briefly, until the server has seen what was
// sent; with no server to see it, there is nothing to wait for.
func flushIfConnected(nc *nats.Conn) {
	if nc.IsConnected() {
		_ = nc.FlushTimeout(time.Second)
	}
}
