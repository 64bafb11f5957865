// Package fanoutdebug serves a live page of the fanout runs in a process,
// as net/http/pprof and expvar do for the rest of it: which runs are
// going, how far each is, which keys are in flight, waiting or retrying,
// what the shared limits are doing, what it has cost, and the recent
// failures with their errors.
//
// It lives in its own module so that the core gains no dependency. A Page
// has three parts: [Page.Observer] makes the Observer to pass to each run
// it should show, [Page.ShowSemaphore] and [Page.ShowLimiter] add the
// process's shared limits, and the Page itself is the http.Handler to
// mount, under the prefix of your choice with http.StripPrefix:
//
//	page := fanoutdebug.New()
//	page.ShowLimiter("llm requests", limiter)
//	http.Handle("/debug/fanout/", http.StripPrefix("/debug/fanout", page))
//	...
//	res, err := fanout.Run(ctx, tasks, fanout.WithObserver(page.Observer("classify")))
//
// The page is plain HTML, CSS and JavaScript embedded in the binary; it
// polls a JSON endpoint once a second (WithRefresh), and that endpoint is
// there for scripts too:
//
//	/                 every run, the totals by name, the limits, the fleets
//	/run?id=N         one run: its keys in flight, the slowest, the failures
//	/api              the first as JSON (a [Snapshot])
//	/api/run?id=N     the second as JSON (a [RunDetail])
//
// A run started inside a task of another run the page follows (a vote per
// key, say) is listed apart, as nested in it, so that the runs started by
// the hundred do not bury the one that started them. [Page.ShowFleet] is
// the hook for a distributed backend's workers and queues, such as the
// nats module's Client.Fleet.
//
// A run ID that is not a number, or names no run the page holds, is a 404.
// The page only reads: any method but GET and HEAD is refused with 405,
// and nothing on it starts, stops or changes a run.
//
// Memory is bounded however long the process runs: the page keeps the
// last 50 finished runs (WithHistory), follows at most 1 000 running ones
// (WithMaxRuns), and of each run at most 1 000 keys in flight
// (WithKeysInFlight), its 10 slowest keys and its last 20 failures and
// retries (WithFailures).
//
// Each key costs a run about 2 500 instructions more than an Observer
// whose hooks are all nil (four context lookups, and four map operations
// under the lock of one of 16 shards of the run's keys in flight): about
// 0.36 µs on the 2-core benchmark machine, where the run itself costs
// 0.3 µs per trivial task (see BENCHMARKS.md). A run without the Page's
// Observer pays nothing.
package fanoutdebug

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/gofanout/fanout"
)

// Page follows the runs given its Observer and serves them as a web page
// and as JSON. Make one with New, usually one per process. A Page is safe
// for concurrent use.
type Page struct {
	caps    caps
	refresh time.Duration

	mu        sync.Mutex
	nextID    uint64
	running   map[uint64]*runState
	finished  ring[*runState] // top-level runs
	nested    ring[*runState] // runs started inside a task of another
	untracked int64
	names     map[string]*Name
	limits    []shown
	fleets    []fleetSource
	wait      *ServerWait
}

// caps bound what a page keeps.
type caps struct {
	history  int // finished runs
	runs     int // running runs followed
	keys     int // keys in flight per run
	failures int // failures, and retries, per run
	slowest  int // slowest keys per run
	names    int // observer names totalled
}

// An Option configures a Page.
type Option func(*Page)

// WithHistory keeps the last n finished runs, and apart from them the last
// n finished runs nested in another run's tasks, so that a run that starts
// a run per key does not push the others out; the default is 50.
func WithHistory(n int) Option { return func(p *Page) { p.caps.history = max(n, 0) } }

// WithMaxRuns follows at most n runs at once; the runs that start beyond
// it are counted, not shown. The default is 1 000.
func WithMaxRuns(n int) Option { return func(p *Page) { p.caps.runs = max(n, 1) } }

// WithKeysInFlight follows at most n keys in flight per run; the default is
// 1 000. Beyond it keys are counted, not listed.
func WithKeysInFlight(n int) Option { return func(p *Page) { p.caps.keys = max(n, 0) } }

// WithFailures keeps the last n failures, and the last n retries, of each
// run; the default is 20.
func WithFailures(n int) Option { return func(p *Page) { p.caps.failures = max(n, 0) } }

// WithRefresh sets how often the page polls for new figures; the default
// is one second.
func WithRefresh(d time.Duration) Option {
	return func(p *Page) { p.refresh = max(d, 50*time.Millisecond) }
}

// New returns a Page that shows no run yet.
func New(opts ...Option) *Page {
	p := &Page{
		caps:    caps{history: 50, runs: 1000, keys: 1000, failures: 20, slowest: 10, names: 100},
		refresh: time.Second,
		running: make(map[uint64]*runState),
		names:   make(map[string]*Name),
	}
	for _, o := range opts {
		o(p)
	}
	p.finished = ring[*runState]{max: p.caps.history}
	p.nested = ring[*runState]{max: p.caps.history}
	return p
}

// begin starts following a run, nested in parent's tasks if parent is not
// nil, or returns nil when WithMaxRuns are already followed. done is the
// Done channel of the context RunStart was given.
func (p *Page) begin(name string, tasks int, parent *runState, done <-chan struct{}) *runState {
	p.mu.Lock()
	n := p.name(name)
	if len(p.running) >= p.caps.runs {
		p.untracked++
		p.mu.Unlock()
		return nil
	}
	n.Running++
	p.nextID++
	r := newRunState(p.nextID, name, tasks, &p.caps)
	r.startDone = done
	if parent != nil {
		r.parent, r.parentID = parent, parent.id
	}
	p.running[r.id] = r
	p.mu.Unlock()
	if parent != nil {
		parent.nestedStarted()
	}
	return r
}

// name returns the totals of the runs named name, folding the names beyond
// the cap into one.
func (p *Page) name(name string) *Name {
	if n := p.names[name]; n != nil {
		return n
	}
	if len(p.names) >= p.caps.names {
		name = "(other names)"
		if n := p.names[name]; n != nil {
			return n
		}
	}
	n := &Name{Name: name}
	p.names[name] = n
	return n
}

// finish moves r from the running runs to the finished ones, once.
func (p *Page) finish(r *runState, s fanout.RunSummary) {
	if !r.ended.CompareAndSwap(false, true) {
		return
	}
	r.end(s)
	retries := r.retries.Load()
	r.mu.Lock()
	parent := r.parent
	r.parent = nil // so that a kept run does not keep its parent
	r.mu.Unlock()
	if parent != nil {
		parent.nestedEnded()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.running, r.id)
	if parent != nil {
		p.nested.add(r)
	} else {
		p.finished.add(r)
	}
	n := p.name(r.name)
	n.Running = max(0, n.Running-1)
	n.Finished++
	n.Keys += int64(s.Tasks)
	n.Failed += int64(s.Failed)
	n.Skipped += int64(s.Skipped)
	n.Retries += retries
	n.Cost = costOf(fanout.Cost{Tokens: n.Cost.Tokens, Cents: n.Cost.Cents}.Add(s.Cost))
}

// serverWait notes a retry delay a server asked for.
func (p *Page) serverWait(r *runState, rv Retry) {
	w := &ServerWait{Run: r.id, Name: r.name, Key: rv.Key, WaitMS: rv.WaitMS, At: rv.At}
	p.mu.Lock()
	p.wait = w
	p.mu.Unlock()
}

// Snapshot returns what the page shows at its top level.
func (p *Page) Snapshot() Snapshot {
	now := time.Now()
	p.mu.Lock()
	var running, nested []*runState
	for _, r := range p.running {
		if r.parentID == 0 {
			running = append(running, r)
		} else {
			nested = append(nested, r)
		}
	}
	finished, nestedDone := p.finished.newestFirst(), p.nested.newestFirst()
	names := make([]Name, 0, len(p.names))
	for _, n := range p.names {
		names = append(names, *n)
	}
	s := Snapshot{Now: now, RefreshMS: p.refresh.Milliseconds(), Untracked: p.untracked, Fleets: []FleetView{}}
	if p.wait != nil {
		w := *p.wait
		w.LeftMS = max(0, w.WaitMS-ms(now.Sub(w.At)))
		s.ServerWait = &w
	}
	limits := slices.Clone(p.limits)
	fleets := slices.Clone(p.fleets)
	p.mu.Unlock()

	var hidden int
	s.Runs, hidden = views(running, finished, maxRunsShown, now)
	s.Nested, s.HiddenNested = views(nested, nestedDone, maxNestedShown, now)
	s.Hidden = hidden
	slices.SortFunc(names, func(a, b Name) int { return cmp.Compare(a.Name, b.Name) })
	s.Names = names
	s.Limits = make([]Limit, len(limits))
	for i, l := range limits {
		s.Limits[i] = l.view()
	}
	for _, f := range fleets {
		s.Fleets = append(s.Fleets, f.view())
	}
	return s
}

// views lists the running runs, newest first and at most max of them, then
// the finished ones, and says how many running ones it left out.
func views(running, finished []*runState, max int, now time.Time) ([]Run, int) {
	slices.SortFunc(running, func(a, b *runState) int { return cmp.Compare(b.id, a.id) })
	hidden := 0
	if len(running) > max {
		hidden, running = len(running)-max, running[:max]
	}
	out := make([]Run, 0, len(running)+len(finished))
	for _, r := range append(running, finished...) {
		out = append(out, r.view(now))
	}
	return out, hidden
}

// Caps on the running runs a Snapshot lists: the top-level ones, and the
// nested ones, which come and go by the hundred in a run that starts a
// run per key.
const (
	maxRunsShown   = 200
	maxNestedShown = 50
)

// Run returns the detail of the run with id, and whether the page holds
// it: running, or finished and still among the last WithHistory.
func (p *Page) Run(id uint64) (RunDetail, bool) {
	r := p.lookup(id)
	if r == nil {
		return RunDetail{}, false
	}
	now := time.Now()
	d := r.detail(now)
	d.RefreshMS = p.refresh.Milliseconds()
	d.Nested = p.nestedIn(id, now)
	return d, true
}

// nestedIn lists the runs nested in run id's tasks: running, newest first
// and at most maxNestedShown, then those finished still kept.
func (p *Page) nestedIn(id uint64, now time.Time) []Run {
	var running, finished []*runState
	p.mu.Lock()
	for _, r := range p.running {
		if r.parentID == id {
			running = append(running, r)
		}
	}
	for _, r := range p.nested.newestFirst() {
		if r.parentID == id {
			finished = append(finished, r)
		}
	}
	p.mu.Unlock()
	out, _ := views(running, finished, maxNestedShown, now)
	return out
}

func (p *Page) lookup(id uint64) *runState {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.running[id]; r != nil {
		return r
	}
	for _, vals := range [][]*runState{p.finished.vals, p.nested.vals} {
		for _, r := range vals {
			if r.id == id {
				return r
			}
		}
	}
	return nil
}
