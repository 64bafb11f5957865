package fanoutnats

import (
	"cmp"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

// Fleet is what a client knows of the workers under its prefix and of its
// own batches, as [Client.Fleet] returns it.
type Fleet struct {
	// Workers are the workers heard from, by name then ID: each one as
	// its last status report described it.
	Workers []FleetWorker
	// Batches are this client's batches that have tasks waiting for a
	// reply, by ID.
	Batches []FleetBatch
	// Stats are the client's counters, as [Client.Stats] returns them:
	// tasks sent, replies accepted, those that came from a redelivery,
	// and the duplicate and late replies dropped.
	Stats Stats
}

// FleetWorker is a worker as its last status report described it.
type FleetWorker struct {
	ID    string // one per [Worker] value: a restarted process is a new worker
	Name  string // see [WithName]; the first 256 bytes of it
	Slots int    // handlers it runs at most ([WithConcurrency])
	InUse int    // handlers it was running, for any tenant
	Stats WorkerStats
	Seen  time.Time // when the client received the report
}

// FleetBatch is one of the client's batches with tasks waiting for a
// reply. A task is an attempt: a retry or a hedge counts as one more.
type FleetBatch struct {
	ID      string
	Queued  int // tasks sent and not answered that no worker reports running
	Running int // tasks that workers report running, at most those waiting
}

// Bounds of what a client keeps of the workers' reports.
const (
	maxFleetWorkers = 1000 // workers remembered; more are ignored until some are forgotten
	maxWorkerName   = 256  // bytes of a worker's name kept; the rest is cut
	maxWorkerID     = 64   // a longer ID is no worker's: the report is ignored
	forgetAfter     = 3    // status intervals without a report before a worker is forgotten
)

// Fleet returns the workers under the client's prefix, the client's
// batches with tasks waiting, and the client's counters. Workers appear
// as their status reports arrive (see [WithStatusInterval]); one that
// said goodbye (its Serve returned) is gone, and one that missed three
// reports in a row (it crashed, or lost its connection) is forgotten. A
// batch's tasks are queued unless a worker's last report says it runs
// them.
//
// The first call starts listening to the reports, with one round trip
// to the server, and finds no worker yet: call it once early (after
// NewClient, say) for it to hear the workers' first reports. The client
// keeps listening until Close, and remembers at most 1 000 workers. With
// tenants, the client subscribes to PREFIX.status.* and
// PREFIX.running.TENANT.*, which its user must be allowed (see the
// README); a worker's slots and counters are the worker's own, for all
// the tenants it serves, while each tenant hears only of its own batches.
//
// Fleet is safe for concurrent use. Its cost grows with the workers and
// with the batches that have tasks waiting, not with the tasks: the
// client counts each batch's waiting tasks as they are sent and answered.
func (c *Client) Fleet() Fleet {
	c.fleet.listen(c)
	workers, running := c.fleet.snapshot(time.Now())
	return Fleet{Workers: workers, Batches: c.batchesWaiting(running), Stats: c.Stats()}
}

// ownBatches keeps, of a running report's batches, those of the client
// with tasks waiting: a report names every batch of the tenant that the
// worker runs, or, forged, any number of others, and what the client
// keeps of it must grow with its own batches only. A batch with nothing
// waiting as the report is read (a resumed batch adopting a running
// task, say) counts from the worker's next report.
func (c *Client) ownBatches(batches map[string]int) map[string]int {
	own := make(map[string]int)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(batches) <= len(c.waiting) {
		for id, n := range batches {
			if c.waiting[id] > 0 {
				own[id] = n
			}
		}
		return own
	}
	for id := range c.waiting {
		if n, ok := batches[id]; ok {
			own[id] = n
		}
	}
	return own
}

// batchesWaiting splits each batch's waiting tasks into those the
// workers report running and the rest, queued.
func (c *Client) batchesWaiting(running map[string]int) []FleetBatch {
	c.mu.Lock()
	batches := make([]FleetBatch, 0, len(c.waiting))
	for id, n := range c.waiting {
		r := min(running[id], n)
		batches = append(batches, FleetBatch{ID: id, Queued: n - r, Running: r})
	}
	c.mu.Unlock()
	slices.SortFunc(batches, func(a, b FleetBatch) int { return cmp.Compare(a.ID, b.ID) })
	return batches
}

// fleetView is what a client has heard of the workers, from its first
// call of Fleet until Close.
type fleetView struct {
	mu      sync.Mutex
	closed  bool
	subs    []*nats.Subscription // nil until listening; status reports first
	workers map[string]*heardWorker
}

// heardWorker is a worker's last status report, and its last running
// report, which counts while it goes with the status report (see
// countsWith).
type heardWorker struct {
	status  workerStatus
	seen    time.Time
	running runningReport
}

// listen subscribes to the workers' reports, once; a failure is tried
// again at the next call.
func (f *fleetView) listen(c *Client) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs != nil || f.closed {
		return
	}
	status, err := c.nc.Subscribe(statusSubject(c.cfg.prefix, "*"), f.onStatus)
	if err != nil {
		return
	}
	running, err := c.nc.Subscribe(runningSubject(c.cfg.prefix, c.cfg.tenant, "*"),
		func(m *nats.Msg) { f.onRunning(m, c.ownBatches) })
	if err != nil {
		_ = status.Unsubscribe()
		return
	}
	f.subs = []*nats.Subscription{status, running}
	f.workers = make(map[string]*heardWorker)
	flushIfConnected(c.nc)
}

func (f *fleetView) onStatus(m *nats.Msg) {
	var s workerStatus
	if json.Unmarshal(m.Data, &s) != nil || s.ID != subjectWorker(m) || len(s.ID) > maxWorkerID {
		return
	}
	s.Name = clipName(s.Name)
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	// A worker's reports arrive in the order it sent them: the last one
	// read is its latest, whatever Seq it claims, so that a forged one
	// from the future does not shut the worker's own out.
	h := f.workers[s.ID]
	switch {
	case s.Gone:
		delete(f.workers, s.ID)
		return
	case h == nil:
		f.forget(now, 1)
		if len(f.workers) >= maxFleetWorkers {
			return
		}
		h = &heardWorker{}
		f.workers[s.ID] = h
	}
	h.status, h.seen = s, now
}

func (f *fleetView) onRunning(m *nats.Msg, own func(map[string]int) map[string]int) {
	var r runningReport
	if json.Unmarshal(m.Data, &r) != nil || r.ID != subjectWorker(m) {
		return
	}
	r.Batches = own(r.Batches)
	f.mu.Lock()
	defer f.mu.Unlock()
	// A worker not heard of yet: its next reports will tell. A worker's
	// reports arrive in the order it sent them, so the last one read is
	// its latest, whatever Seq it claims.
	if h := f.workers[r.ID]; h != nil {
		h.running = r
	}
}

// subjectWorker is the worker id a report's subject names, its last
// token. A report naming another in its body is dropped, so that
// permissions granting each worker its own subjects keep workers from
// speaking, or saying goodbye, for each other.
func subjectWorker(m *nats.Msg) string {
	return m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
}

// forget drops the workers that missed forgetAfter reports in a row,
// unless more status reports than the reading ones wait to be read: the
// client is late then (a flood of reports, say), not the workers, and a
// worker whose report waits there must not lose its place to the flood.
// It must be called with f.mu held.
func (f *fleetView) forget(now time.Time, reading int) {
	if len(f.subs) > 0 {
		if n, _, err := f.subs[0].Pending(); err == nil && n > reading {
			return
		}
	}
	for id, h := range f.workers {
		every := h.status.Interval
		if every <= 0 {
			every = DefaultStatusInterval
		}
		if now.Sub(h.seen)/forgetAfter > every { // forgetAfter*every may overflow
			delete(f.workers, id)
		}
	}
}

// snapshot returns the workers by name, and the tasks they run by batch.
func (f *fleetView) snapshot(now time.Time) ([]FleetWorker, map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forget(now, 0)
	workers := make([]FleetWorker, 0, len(f.workers))
	running := make(map[string]int)
	for _, h := range f.workers {
		s := h.status
		workers = append(workers, FleetWorker{ID: s.ID, Name: s.Name, Slots: s.Slots, InUse: s.InUse,
			Stats: s.Stats, Seen: h.seen})
		if countsWith(h.running, s) {
			for batch, n := range h.running.Batches {
				if n > 0 { // a count that wraps around or below zero is no task
					running[batch] = min(running[batch], math.MaxInt-n) + n
				}
			}
		}
	}
	slices.SortFunc(workers, func(a, b FleetWorker) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return workers, running
}

// countsWith reports whether r goes with status report s: it has the
// same Seq, or the next one, sent just before a status report not read
// yet (the two come on separate subscriptions). One with any other Seq,
// a forged one from the future say, counts for nothing.
func countsWith(r runningReport, s workerStatus) bool {
	return r.Seq == s.Seq || r.Seq == s.Seq+1
}

// close stops listening for good.
func (f *fleetView) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for _, s := range f.subs {
		_ = s.Unsubscribe()
	}
	f.subs, f.workers = nil, nil
}

// clipName returns name cut to maxWorkerName bytes, between characters,
// as a copy: a slice would keep the whole of a forged report's string.
func clipName(name string) string {
	if len(name) <= maxWorkerName {
		return name
	}
	n := maxWorkerName
	for n > 0 && !utf8.RuneStart(name[n]) {
		n--
	}
	return strings.Clone(name[:n])
}
