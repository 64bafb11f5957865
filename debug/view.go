package fanoutdebug

import (
	"math"
	"time"

	"github.com/gofanout/fanout"
)

// Snapshot is the page's top level: every run it follows, the totals by
// observer name, the shared limits and the fleets. The api endpoint
// returns it as JSON; the page polls that endpoint to stay live.
type Snapshot struct {
	Now       time.Time `json:"now"`
	RefreshMS int64     `json:"refresh_ms"` // how often the page polls
	// Runs lists the running runs, newest first and at most 200, then the
	// finished ones still kept, newest first.
	Runs []Run `json:"runs"`
	// Hidden counts running runs left out of Runs, beyond the first 200
	// of them; Untracked counts runs never followed because WithMaxRuns
	// were already running.
	Hidden    int   `json:"hidden"`
	Untracked int64 `json:"untracked"`
	// Nested lists the runs started inside another run's tasks (the vote
	// of each key, say) as Runs lists the others, at most 50 running.
	Nested       []Run   `json:"nested"`
	HiddenNested int     `json:"hidden_nested"`
	Names        []Name  `json:"names"`
	Limits       []Limit `json:"limits"`
	// ServerWait is the last retry delay a server asked for (a 429's
	// Retry-After, say), in any run: a run pauses its Throttles for that
	// long, so it is the nearest sign of their cooldown the observer sees.
	ServerWait *ServerWait `json:"server_wait,omitempty"`
	Fleets     []FleetView `json:"fleets"`
}

// Run is one run on the page: its totals so far, or its final ones.
type Run struct {
	ID uint64 `json:"id"`
	// Parent is the run whose task started this one, 0 for none.
	Parent  uint64    `json:"parent,omitempty"`
	Name    string    `json:"name"` // the name given to Page.Observer
	Running bool      `json:"running"`
	Started time.Time `json:"started"`
	// Tasks is the number of keys, or -1 while a lazy source (StreamSeq,
	// GatherSeq) or a Group runs: their count is known only at the end.
	Tasks         int     `json:"tasks"`
	Done          int     `json:"done"` // Succeeded + Failed + Skipped
	Succeeded     int     `json:"succeeded"`
	Failed        int     `json:"failed"`  // failed, other than skipped
	Skipped       int     `json:"skipped"` // never made an attempt
	InFlight      int     `json:"in_flight"`
	Attempts      int     `json:"attempts"`
	Retries       int     `json:"retries"`
	Hedges        int     `json:"hedges"`
	LimiterWaitMS float64 `json:"limiter_wait_ms"` // summed over every wait
	Cost          Cost    `json:"cost"`
	ElapsedMS     float64 `json:"elapsed_ms"`
	// ETAMS is the time left at the average pace so far, or -1 when it
	// cannot be told: no key done yet, the count of keys unknown, or the
	// run finished.
	ETAMS float64 `json:"eta_ms"`
	// NestedRunning counts the runs running inside this run's tasks now,
	// NestedRuns all those started there.
	NestedRunning int `json:"nested_running"`
	NestedRuns    int `json:"nested_runs"`
}

// Cost is fanout.Cost with JSON names. Cents that are not a finite number
// (a task that spent NaN or an infinity) count as 0, since JSON has no
// such number and one would stop the page.
type Cost struct {
	Tokens int64   `json:"tokens"`
	Cents  float64 `json:"cents"`
}

func costOf(c fanout.Cost) Cost {
	if math.IsNaN(c.Cents) || math.IsInf(c.Cents, 0) {
		c.Cents = 0
	}
	return Cost{Tokens: c.Tokens, Cents: c.Cents}
}

// RunDetail is a run's page: its totals and what its keys are doing.
type RunDetail struct {
	Run
	RefreshMS int64 `json:"refresh_ms"` // how often the page polls
	// Keys are the keys in flight, longest running first, at most 100.
	Keys []KeyInFlight `json:"keys"`
	// Slowest are the slowest keys that finished, slowest first.
	Slowest []KeyDone `json:"slowest"`
	// Failures are the last failed keys, newest first; skipped keys are
	// counted in Skipped, not listed.
	Failures []Failure `json:"failures"`
	// RecentRetries are the last retries, newest first.
	RecentRetries []Retry `json:"recent_retries"`
	// Nested are the runs started inside this run's tasks: at most 50
	// running, newest first, then those finished that the page still keeps.
	Nested []Run `json:"nested"`
}

// KeyInFlight is a key that holds its slot.
type KeyInFlight struct {
	Key string `json:"key"`
	// State is "waiting" (on the rate limiters, the budget or a guard,
	// before an attempt), "running" (an attempt is calling Do) or
	// "retry wait" (backing off after a failed attempt).
	State     string  `json:"state"`
	Attempt   int     `json:"attempt"` // the latest attempt started, 0 before the first
	Copies    int     `json:"copies"`  // attempts running now: 2 while hedged
	ForMS     float64 `json:"for_ms"`  // since the key took its slot
	AttemptMS float64 `json:"attempt_ms"`
	RetryInMS float64 `json:"retry_in_ms,omitempty"`
	LastError string  `json:"last_error,omitempty"` // of its latest failed attempt
}

// KeyDone is a key that finished.
type KeyDone struct {
	Key       string  `json:"key"`
	Attempts  int     `json:"attempts"`
	ElapsedMS float64 `json:"elapsed_ms"`
	Kind      string  `json:"kind,omitempty"` // fanout.ErrorKind, empty for a success
}

// Failure is a key that failed, with its error.
type Failure struct {
	Key       string    `json:"key"`
	Kind      string    `json:"kind"` // fanout.ErrorKind
	Error     string    `json:"error"`
	Attempts  int       `json:"attempts"`
	ElapsedMS float64   `json:"elapsed_ms"`
	At        time.Time `json:"at"`
}

// Retry is a failed attempt about to be tried again.
type Retry struct {
	Key            string    `json:"key"`
	Attempt        int       `json:"attempt"` // the attempt that failed
	WaitMS         float64   `json:"wait_ms"`
	ServerDirected bool      `json:"server_directed"`
	Error          string    `json:"error"`
	At             time.Time `json:"at"`
}

// ServerWait is a retry delay a server asked for.
type ServerWait struct {
	Run    uint64    `json:"run"`
	Name   string    `json:"name"`
	Key    string    `json:"key"`
	WaitMS float64   `json:"wait_ms"`
	At     time.Time `json:"at"`
	LeftMS float64   `json:"left_ms"` // until the wait ends; 0 once it has
}

// Name totals the runs watched by the observers of one name.
type Name struct {
	Name     string `json:"name"`
	Running  int    `json:"running"`
	Finished int    `json:"finished"`
	Keys     int64  `json:"keys"` // of finished runs, as are the counts below
	Failed   int64  `json:"failed"`
	Skipped  int64  `json:"skipped"`
	Retries  int64  `json:"retries"`
	Cost     Cost   `json:"cost"`
}

// Limit is one shared limit shown with ShowSemaphore or ShowLimiter.
type Limit struct {
	Name string `json:"name"`
	// Kind is "semaphore", "rate" (a *rate.Limiter), "throttle" (a
	// *fanout.Throttle over a limiter the page cannot see) or "limiter"
	// (any other).
	Kind   string  `json:"kind"`
	InUse  int     `json:"in_use"`
	Cap    int     `json:"cap"`
	Rate   float64 `json:"rate"` // per second; 0 when not known or not limited
	Burst  int     `json:"burst"`
	Tokens float64 `json:"tokens"` // available now
	Note   string  `json:"note,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
