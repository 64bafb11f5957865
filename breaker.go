package fanout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"
)

// ErrCircuitOpen matches the error of an attempt a [CircuitBreaker]
// refused, a [*CircuitOpenError]. The key fails with it and its last
// attempt's error, if it made one.
var ErrCircuitOpen = errors.New("fanout: circuit open")

// CircuitOpenError is the error of an attempt a [CircuitBreaker]
// refused. It matches [ErrCircuitOpen].
type CircuitOpenError struct {
	Name  string    // the breaker's
	Until time.Time // when the breaker lets probe calls through
}

// Error says which breaker refused, and until when.
func (e *CircuitOpenError) Error() string {
	name := ""
	if e.Name != "" {
		name = fmt.Sprintf(" %q", e.Name)
	}
	return fmt.Sprintf("fanout: circuit%s open until %s", name, e.Until.Format("15:04:05.000"))
}

// Is reports whether target is ErrCircuitOpen.
func (e *CircuitOpenError) Is(target error) bool { return target == ErrCircuitOpen }

// BreakerState is the state of a [CircuitBreaker].
type BreakerState int

const (
	// BreakerClosed lets every attempt through and counts failures.
	BreakerClosed BreakerState = iota
	// BreakerOpen refuses every attempt until its cool-off ends.
	BreakerOpen
	// BreakerHalfOpen lets a few probe calls through, whose outcomes
	// close or open the breaker again, and holds the other attempts until
	// they do.
	BreakerHalfOpen
)

// String returns "closed", "open" or "half-open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// CircuitBreaker is a [Guard] that stops calling a dependency that keeps
// failing: attempts fail at once with a [*CircuitOpenError] for a
// cool-off period, then a few probe calls decide whether to call it
// again. Pass the same CircuitBreaker with [WithGuard] to every run that
// calls the dependency; State tells where it stands, and the Breaker hook
// of its config's Observer reports each change.
//
//   - Closed, it lets every attempt through and counts, over the last
//     Window, the attempts that ended and those that failed; it opens once
//     the failures reach MinFailures and FailureRatio of the attempts.
//   - Open, it refuses every attempt, until CoolOff has passed.
//   - Half-open, it lets Probes attempts through and holds the others
//     (until their context ends) while the probes decide. Once all the
//     probes have succeeded it closes, and the held attempts go on; as
//     soon as one fails it opens again, for another CoolOff, and the held
//     attempts are refused. So a fan-out that starts while the breaker
//     probes waits a probe call's time, rather than failing every key but
//     the probes.
//
// Only failures that say the dependency is unhealthy count (see
// FailureIf). An attempt cut by the run (its context ended, it lost a
// hedge race), refused by another guard, or that panicked counts neither
// way, and a probe that ends so makes room for another. The outcomes of
// attempts admitted before the last change of state are not counted: the
// failures of the attempts in flight when it opened do not extend its
// cool-off.
//
// A CircuitBreaker is safe for concurrent use. Admit and the outcome take
// the mutex once each.
type CircuitBreaker struct {
	cfg   CircuitBreakerConfig
	start time.Time

	mu     sync.Mutex
	state  BreakerState
	gen    int       // bumped at each change of state: late outcomes are not news
	until  time.Time // open: when probes may start
	window [breakerSlots]breakerSlot
	probes int           // half-open: probes in flight
	passed int           // half-open: probes that succeeded
	turn   chan struct{} // closed when a held attempt may get its turn; nil if none is held
}

// CircuitBreakerConfig configures a [CircuitBreaker]. The zero value opens
// after 5 failures that are half of the attempts of the last 10 seconds,
// stays open for 10 seconds, and then probes with 3 attempts.
type CircuitBreakerConfig struct {
	// Name tells this breaker apart in its errors and in BreakerInfo.
	Name string
	// Window is how far back failures are counted; zero means 10 s. It is
	// kept in ten slots, so it moves in tenths of itself.
	Window time.Duration
	// MinFailures is how many failures in the Window open the breaker, if
	// they also make FailureRatio of its attempts; zero means 5.
	MinFailures int
	// FailureRatio is the share of the Window's attempts that must have
	// failed to open the breaker; zero means 0.5. It must be in (0, 1].
	FailureRatio float64
	// CoolOff is how long the breaker stays open before it probes; zero
	// means 10 s.
	CoolOff time.Duration
	// Probes is how many attempts the half-open breaker lets through, all
	// of which must succeed to close it; zero means 3.
	Probes int
	// FailureIf reports whether an attempt's error says the dependency is
	// unhealthy. Nil means: an error carrying an HTTP status (as
	// [Retryable] reads it) of 5xx, 429 or 408; a per-attempt timeout
	// ([ErrTaskTimeout]) or a task's own deadline
	// (context.DeadlineExceeded); a connection error (a *net.OpError, a
	// net.Error that timed out, an unexpected EOF from the server). Any
	// other error, a 4xx of the caller's making say, means the dependency
	// answered, and counts as a success.
	FailureIf func(error) bool
	// Observer, if set, has its Breaker hook called after each change of
	// state. Runs do not call it: the breaker is shared by runs.
	Observer *Observer
}

// BreakerInfo describes a change of state of a [CircuitBreaker], for the
// Breaker hook of an [Observer].
type BreakerInfo struct {
	Name     string // the breaker's
	From, To BreakerState
	// Err is the failure that opened the breaker; nil for other changes.
	Err error
	// Failures and Attempts are what the Window held when the breaker
	// opened from closed.
	Failures, Attempts int
	Until              time.Time // when an open breaker will probe
}

// Defaults of CircuitBreakerConfig.
const (
	breakerWindow       = 10 * time.Second
	breakerMinFailures  = 5
	breakerFailureRatio = 0.5
	breakerCoolOff      = 10 * time.Second
	breakerProbes       = 3
	breakerSlots        = 10
)

// breakerSlot counts the attempts of a tenth of the Window.
type breakerSlot struct {
	at                 int64 // the tenth since start it counts
	attempts, failures int
}

// NewCircuitBreaker returns a closed CircuitBreaker configured by c. It
// panics if a field is negative or FailureRatio is above 1.
func NewCircuitBreaker(c CircuitBreakerConfig) *CircuitBreaker {
	if c.Window < 0 || c.MinFailures < 0 || c.CoolOff < 0 || c.Probes < 0 || !(c.FailureRatio >= 0 && c.FailureRatio <= 1) {
		panic(fmt.Sprintf("fanout: NewCircuitBreaker: bad config: Window %v, MinFailures %d, FailureRatio %v, CoolOff %v, Probes %d",
			c.Window, c.MinFailures, c.FailureRatio, c.CoolOff, c.Probes))
	}
	if c.Window == 0 {
		c.Window = breakerWindow
	}
	if c.MinFailures == 0 {
		c.MinFailures = breakerMinFailures
	}
	if c.FailureRatio == 0 {
		c.FailureRatio = breakerFailureRatio
	}
	if c.CoolOff == 0 {
		c.CoolOff = breakerCoolOff
	}
	if c.Probes == 0 {
		c.Probes = breakerProbes
	}
	if c.FailureIf == nil {
		c.FailureIf = unhealthy
	}
	return &CircuitBreaker{cfg: c, start: time.Now()}
}

// State returns the breaker's state now.
func (b *CircuitBreaker) State() BreakerState {
	b.mu.Lock()
	info, changed := b.probeIfCool()
	state := b.state
	b.mu.Unlock()
	if changed {
		b.cfg.Observer.breakerChanged(context.Background(), info)
	}
	return state
}

// Admit lets the attempt through if the breaker is closed, or half-open
// with room for a probe, and refuses it with a [*CircuitOpenError] if it
// is open. While the breaker is half-open with every probe in flight, it
// waits for the probes to decide, or until ctx ends, and then returns
// ctx's cause.
func (b *CircuitBreaker) Admit(ctx context.Context, _ Admission) (func(Outcome), error) {
	for {
		b.mu.Lock()
		info, changed := b.probeIfCool()
		done, turn, err := b.admit(ctx)
		b.mu.Unlock()
		if changed {
			b.cfg.Observer.breakerChanged(ctx, info)
		}
		if turn == nil {
			return done, err
		}
		select {
		case <-turn:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// admit lets an attempt through, refuses it, or returns the channel to
// wait on before asking again.
func (b *CircuitBreaker) admit(ctx context.Context) (func(Outcome), <-chan struct{}, error) {
	gen := b.gen
	switch b.state {
	case BreakerOpen:
		return nil, nil, &CircuitOpenError{Name: b.cfg.Name, Until: b.until}
	case BreakerHalfOpen:
		if b.probes+b.passed >= b.cfg.Probes {
			if b.turn == nil {
				b.turn = make(chan struct{})
			}
			return nil, b.turn, nil
		}
		b.probes++
		return func(o Outcome) { b.ended(ctx, gen, true, o) }, nil, nil
	}
	return func(o Outcome) { b.ended(ctx, gen, false, o) }, nil, nil
}

// ended takes in the outcome of an attempt admitted under ctx in
// generation gen, a probe or not.
func (b *CircuitBreaker) ended(ctx context.Context, gen int, probe bool, o Outcome) {
	quiet := saysNothing(ctx, o)
	failed := !quiet && o.Err != nil && b.cfg.FailureIf(o.Err)
	b.mu.Lock()
	var info BreakerInfo
	changed := false
	switch {
	case gen != b.gen: // admitted before the last change of state
	case probe:
		b.probes--
		info, changed = b.judgeProbe(quiet, failed, o.Err)
	case !quiet:
		info, changed = b.count(failed, o.Err)
	}
	b.mu.Unlock()
	if changed {
		b.cfg.Observer.breakerChanged(ctx, info)
	}
}

// count adds a closed breaker's attempt to the window, and opens the
// breaker if the failures are now too many.
func (b *CircuitBreaker) count(failed bool, err error) (BreakerInfo, bool) {
	now := b.tenth()
	s := &b.window[now%breakerSlots]
	if s.at != now {
		*s = breakerSlot{at: now}
	}
	s.attempts++
	if !failed {
		return BreakerInfo{}, false
	}
	s.failures++
	var attempts, failures int
	for _, s := range b.window {
		if now-s.at < breakerSlots {
			attempts += s.attempts
			failures += s.failures
		}
	}
	if failures < b.cfg.MinFailures || float64(failures) < b.cfg.FailureRatio*float64(attempts) {
		return BreakerInfo{}, false
	}
	info := b.open(err)
	info.Failures, info.Attempts = failures, attempts
	return info, true
}

// judgeProbe takes in a probe's outcome: a failure opens the breaker
// again, the last success needed closes it, and a probe that says nothing
// makes room for another.
func (b *CircuitBreaker) judgeProbe(quiet, failed bool, err error) (BreakerInfo, bool) {
	switch {
	case quiet:
		b.wake()
		return BreakerInfo{}, false
	case failed:
		return b.open(err), true
	}
	b.passed++
	if b.passed < b.cfg.Probes {
		return BreakerInfo{}, false
	}
	return b.become(BreakerClosed), true
}

// open opens the breaker for CoolOff, because of err.
func (b *CircuitBreaker) open(err error) BreakerInfo {
	b.until = time.Now().Add(b.cfg.CoolOff)
	info := b.become(BreakerOpen)
	info.Err, info.Until = err, b.until
	return info
}

// probeIfCool makes an open breaker half-open once its cool-off is over.
func (b *CircuitBreaker) probeIfCool() (BreakerInfo, bool) {
	if b.state != BreakerOpen || time.Now().Before(b.until) {
		return BreakerInfo{}, false
	}
	return b.become(BreakerHalfOpen), true
}

// become moves the breaker to state to, starting afresh what that state
// counts.
func (b *CircuitBreaker) become(to BreakerState) BreakerInfo {
	info := BreakerInfo{Name: b.cfg.Name, From: b.state, To: to}
	b.state = to
	b.gen++
	b.probes, b.passed = 0, 0
	b.window = [breakerSlots]breakerSlot{}
	b.wake()
	return info
}

// wake lets the held attempts ask again.
func (b *CircuitBreaker) wake() {
	if b.turn != nil {
		close(b.turn)
		b.turn = nil
	}
}

// tenth is the number of tenths of the Window since the breaker was made.
func (b *CircuitBreaker) tenth() int64 {
	return int64(time.Since(b.start) / max(b.cfg.Window/breakerSlots, 1))
}

// unhealthy is the default FailureIf of a CircuitBreakerConfig.
func unhealthy(err error) bool {
	if code, ok := httpStatus(err); ok {
		return code >= 500 || code == 429 || code == 408
	}
	var op *net.OpError
	var ne net.Error
	var ue *url.Error
	switch {
	case errors.Is(err, ErrTaskTimeout), errors.Is(err, context.DeadlineExceeded):
		return true
	case errors.As(err, &op), errors.As(err, &ne) && ne.Timeout():
		return true
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF) && errors.As(err, &ue):
		return true
	}
	return false
}
