package fanoutdebug

import (
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
)

// Slots is a semaphore the page can read: *fanout.Semaphore fits.
type Slots interface {
	Cap() int
	InUse() int
}

// rateLimiter is what the page reads of a *rate.Limiter.
type rateLimiter interface {
	Limit() rate.Limit
	Burst() int
	Tokens() float64
}

// shown is a shared limit on the page.
type shown struct {
	name  string
	slots Slots
	lim   fanout.Limiter
}

// ShowSemaphore shows s under name among the shared limits: its slots in
// use and its capacity. Showing another value under the same name replaces
// the first. A limit that panics when read, a nil one say, shows the panic
// in its note, for ShowLimiter too.
func (p *Page) ShowSemaphore(name string, s Slots) { p.show(shown{name: name, slots: s}) }

// ShowLimiter shows l under name among the shared limits. A *rate.Limiter
// shows its rate, burst and the tokens available now. A *fanout.Throttle
// hides both its cooldown and the limiter it wraps, so show that limiter
// too, under a name of its own; the page's "last server-directed wait" is
// the nearest sign of the cooldown it has. Showing another value under the
// same name replaces the first.
func (p *Page) ShowLimiter(name string, l fanout.Limiter) { p.show(shown{name: name, lim: l}) }

func (p *Page) show(s shown) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.limits {
		if p.limits[i].name == s.name {
			p.limits[i] = s
			return
		}
	}
	p.limits = append(p.limits, s)
}

func (s shown) view() (l Limit) {
	l.Name = s.name
	// A limit is the caller's code, or a nil one: reading it must not
	// stop the page.
	defer func() {
		if r := recover(); r != nil {
			l = Limit{Name: s.name, Kind: l.Kind,
				Note: clip(fmt.Sprintf("fanoutdebug: reading the limit panicked: %v", r))}
		}
	}()
	switch v := s.lim.(type) {
	case nil:
		l.Kind, l.InUse, l.Cap = "semaphore", s.slots.InUse(), s.slots.Cap()
	case *fanout.Throttle:
		l.Kind, l.Note = "throttle", "cooldown not readable; see the last server-directed wait"
	case rateLimiter:
		l.Kind, l.Burst, l.Tokens = "rate", v.Burst(), math.Round(v.Tokens()*100)/100
		switch lim := v.Limit(); {
		case lim == rate.Inf:
			l.Note = "no limit"
		case l.Tokens < 0:
			l.Rate, l.Note = float64(lim), "in debt: waits are queued for the tokens owed"
		default:
			l.Rate = float64(lim)
		}
	default:
		l.Kind, l.Note = "limiter", fmt.Sprintf("%T", v)
	}
	return l
}

// Fleet is what a distributed backend (the nats module's client and
// workers, say) reports of the processes that run its tasks. Fill in what
// is known; zero fields show as blank.
type Fleet struct {
	Workers []FleetWorker `json:"workers"`
	Batches []FleetBatch  `json:"batches"`
	// The client's counters: task messages sent (retries and hedges
	// included), replies accepted, accepted replies that came from a
	// redelivery, and replies dropped as duplicates or as late.
	Sent        int64 `json:"sent"`
	Replies     int64 `json:"replies"`
	Redelivered int64 `json:"redelivered"`
	Duplicates  int64 `json:"duplicates"`
	Late        int64 `json:"late"`
}

// FleetWorker is one worker process of a fleet.
type FleetWorker struct {
	Name        string    `json:"name"`
	Slots       int       `json:"slots"`
	InUse       int       `json:"in_use"`
	Started     int64     `json:"started"`
	Succeeded   int64     `json:"succeeded"`
	Failed      int64     `json:"failed"`
	Redelivered int64     `json:"redelivered"`
	Seen        time.Time `json:"seen,omitzero"` // when it last reported
}

// FleetBatch is the tasks of one run sent to a fleet.
type FleetBatch struct {
	ID      string `json:"id"`
	Queued  int    `json:"queued"`
	Running int    `json:"running"`
}

// FleetView is a fleet on the page.
type FleetView struct {
	Name  string `json:"name"`
	Fleet Fleet  `json:"fleet"`
	Error string `json:"error,omitempty"` // the report panicked
}

// maxFleetRows caps the workers, and the batches, a fleet shows.
const maxFleetRows = 500

type fleetSource struct {
	name   string
	report func() Fleet
}

// ShowFleet shows the fleet that report describes under name: the page
// calls report each time it is read, so report must be quick and safe for
// concurrent use. The page holds no lock while report runs, so report may
// call the Page; a report that blocks holds up each read of the overview
// (Snapshot and /api) until it returns, and nothing else: runs, their
// hooks and their pages go on. A report that panics shows the panic in
// place of its fleet. Showing another fleet under the same name replaces
// the first. This is the hook for a distributed backend. The nats module's
// Client.Fleet has all of a Fleet: the workers as their status reports
// describe them, the client's batches queued and running, its counters.
// Neither module depends on the other, so the mapping is the caller's
// (nats/examples/distributed has it, with -debug-addr):
//
//	client.Fleet() // listen now, to hear the workers' first reports
//	page.ShowFleet("nats", func() fanoutdebug.Fleet {
//		f := client.Fleet()
//		d := fanoutdebug.Fleet{Sent: f.Stats.Sent, Replies: f.Stats.Replies,
//			Redelivered: f.Stats.Redelivered, Duplicates: f.Stats.Duplicates, Late: f.Stats.Late}
//		for _, w := range f.Workers {
//			d.Workers = append(d.Workers, fanoutdebug.FleetWorker{Name: w.Name, Slots: w.Slots,
//				InUse: w.InUse, Started: w.Stats.Started, Succeeded: w.Stats.Succeeded,
//				Failed: w.Stats.Failed, Redelivered: w.Stats.Redelivered, Seen: w.Seen})
//		}
//		for _, b := range f.Batches {
//			d.Batches = append(d.Batches, fanoutdebug.FleetBatch{ID: b.ID, Queued: b.Queued, Running: b.Running})
//		}
//		return d
//	})
func (p *Page) ShowFleet(name string, report func() Fleet) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.fleets {
		if p.fleets[i].name == name {
			p.fleets[i].report = report
			return
		}
	}
	p.fleets = append(p.fleets, fleetSource{name: name, report: report})
}

func (f fleetSource) view() (v FleetView) {
	v.Name = f.name
	defer func() {
		if r := recover(); r != nil {
			// Empty lists, not nil ones: the page's script maps over them.
			v.Fleet = Fleet{Workers: []FleetWorker{}, Batches: []FleetBatch{}}
			v.Error = clip(fmt.Sprintf("fanoutdebug: fleet report panicked: %v", r))
		}
	}()
	v.Fleet = f.report()
	v.Fleet.Workers = append([]FleetWorker{}, v.Fleet.Workers[:min(len(v.Fleet.Workers), maxFleetRows)]...)
	v.Fleet.Batches = append([]FleetBatch{}, v.Fleet.Batches[:min(len(v.Fleet.Batches), maxFleetRows)]...)
	return v
}
