package fanoutnats

import (
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// A worker's status reports, read by [Client.Fleet]: while Serve runs,
// every [WithStatusInterval] and once as it starts, the worker publishes
// (core NATS, not stored) its status on P.status.W, where W is the
// worker's id: its name, slots, slots in use and counters, the same for
// every tenant since a worker serves them all. Just before, it publishes
// on P.running.T.W, for each tenant T that has tasks running on it, how
// many of each of T's batches it runs, so that only T can read them. A
// running report counts until the next status report: a tenant whose
// tasks have all finished gets no running report, and the next status
// report tells its clients that nothing of theirs runs there. As Serve
// ends, the worker says goodbye with a status report marked gone.

// workerStatus is a worker's status report on P.status.W.
type workerStatus struct {
	ID       string        `json:"id"`
	Name     string        `json:"name"`
	Seq      uint64        `json:"seq"`      // 1 for the first report, then one more each
	Interval time.Duration `json:"interval"` // until the next report
	Slots    int           `json:"slots"`
	InUse    int           `json:"in_use"` // handlers running
	Stats    WorkerStats   `json:"stats"`
	Gone     bool          `json:"gone,omitempty"` // Serve returned: the last report
}

// runningReport is a worker's report on P.running.T.W: the tasks of
// tenant T's batches its handlers are running, by batch ID, as of the
// status report with the same Seq.
type runningReport struct {
	ID      string         `json:"id"`
	Seq     uint64         `json:"seq"`
	Batches map[string]int `json:"batches"`
}

// startReports publishes the worker's first status report and goes on
// reporting every interval until the returned function is called, which
// publishes the goodbye. With reports off it does nothing.
func (w *Worker) startReports() (stop func()) {
	every := w.cfg.status
	if every <= 0 {
		return func() {}
	}
	var seq uint64 // owned by the reporting goroutine, then by stop
	w.report(&seq, false)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				w.report(&seq, false)
			case <-done:
				return
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		w.report(&seq, true)
		flushIfConnected(w.nc)
	}
}

// report publishes the worker's running reports, then its status
// report. Publishing fails only on a closed connection, and a worker
// that cannot report is forgotten by its clients: errors are dropped.
func (w *Worker) report(seq *uint64, gone bool) {
	*seq++
	inUse, byTenant := w.load()
	if !gone {
		for tenant, batches := range byTenant {
			data, _ := json.Marshal(runningReport{ID: w.id, Seq: *seq, Batches: batches})
			_ = w.nc.Publish(runningSubject(w.cfg.prefix, tenant, w.id), data)
		}
	}
	data, _ := json.Marshal(workerStatus{ID: w.id, Name: w.name, Seq: *seq, Interval: w.cfg.status,
		Slots: w.cfg.concurrency, InUse: inUse, Stats: w.Stats(), Gone: gone})
	_ = w.nc.Publish(statusSubject(w.cfg.prefix, w.id), data)
}

// load returns how many handlers are running and, by tenant and batch,
// how many tasks they run.
func (w *Worker) load() (inUse int, byTenant map[string]map[string]int) {
	byTenant = make(map[string]map[string]int)
	w.mu.Lock()
	defer w.mu.Unlock()
	for rt := range w.running {
		if rt.returned.Load() {
			continue
		}
		inUse++
		tenant, batch, _ := strings.Cut(rt.batch, ".")
		if byTenant[tenant] == nil {
			byTenant[tenant] = make(map[string]int)
		}
		byTenant[tenant][batch]++
	}
	return inUse, byTenant
}
