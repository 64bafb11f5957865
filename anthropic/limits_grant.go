package fanoutanthropic

import (
	"context"
	"math"
	"net/http"
	"slices"
	"time"
)

// How Limits decides, top to bottom: a wait is granted by tryGrant against
// the newest report of each budget, less the load of the grants not sent
// yet and of the requests in flight; send moves a grant in flight as its
// request leaves, end takes it out and reads the response's report; drop
// and expire give back grants whose requests were never sent.

// report is a budget as a response reported it, and when the response
// came back.
type report struct {
	Budget
	seen time.Time
}

// load is a number of requests and the tokens they were granted.
type load struct{ requests, tokens int }

// grant is a wait granted whose request has not been sent yet.
type grant struct {
	tokens int
	at     time.Time
	stop   func() bool // stops dropping the grant when its wait's context ends
}

// pendingTTL bounds how long a grant whose request is never sent (the
// attempt gave up after the wait) holds its room: a minute, the API's
// rate-limit window, after which the server has refilled it anyway.
const pendingTTL = time.Minute

// tryGrant grants a wait for one request of n tokens, or reports when
// it is worth trying again: when a budget will have refilled enough, or a
// grant whose request was never sent expires; zero means at the next
// change.
func (l *Limits) tryGrant(ctx context.Context, now time.Time, n int) (wake time.Time, ok bool) {
	l.expire(now)
	blocked := false
	if !l.heard {
		blocked = l.waiting.requests+l.inflight.requests > 0 // one probe at a time
	}
	for _, r := range l.budgets {
		want, used := n, l.waiting.tokens+l.inflight.tokens
		if r.Name == "requests" {
			want, used = 1, l.waiting.requests+l.inflight.requests
		}
		if r.Limit > 0 {
			want = min(want, r.Limit) // a call larger than the budget waits for a full one
		}
		if r.room(now)-used >= want {
			continue
		}
		blocked = true
		if at := r.when(want + used); at.After(now) {
			wake = earliest(wake, at)
		}
	}
	if blocked {
		if len(l.pending) > 0 {
			wake = earliest(wake, l.pending[0].at.Add(pendingTTL))
		}
		return wake, false
	}
	g := &grant{tokens: n, at: now}
	g.stop = context.AfterFunc(ctx, func() { l.drop(g) })
	l.pending = append(l.pending, g)
	l.waiting.add(1, n)
	return time.Time{}, true
}

// room is what r holds at now: from what remained when it was seen, a
// straight line up to the limit at the reset, and the limit after it
// (unbounded if the server gave none).
func (r report) room(now time.Time) int {
	switch {
	case !now.Before(r.Reset) && r.Limit > 0:
		return r.Limit
	case !now.Before(r.Reset):
		return math.MaxInt
	case !r.refills():
		return r.Remaining
	}
	f := float64(now.Sub(r.seen)) / float64(r.Reset.Sub(r.seen))
	return r.Remaining + int(float64(r.Limit-r.Remaining)*max(f, 0))
}

// when is the first time r holds n: on its line, or at the reset.
func (r report) when(n int) time.Time {
	if !r.refills() || n >= r.Limit {
		return r.Reset
	}
	f := float64(n-r.Remaining) / float64(r.Limit-r.Remaining)
	return r.seen.Add(time.Duration(f*float64(r.Reset.Sub(r.seen))) + time.Microsecond)
}

// refills reports whether r has a line to refill on.
func (r report) refills() bool { return r.Limit > r.Remaining && r.Reset.After(r.seen) }

// send moves the oldest grant in flight, as a request starts.
func (l *Limits) send() *load {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := &load{requests: 1}
	if len(l.pending) > 0 {
		g := l.pending[0]
		l.pending = slices.Delete(l.pending, 0, 1)
		g.stop()
		f.tokens = g.tokens
		l.waiting.add(-1, -g.tokens)
	}
	l.inflight.add(f.requests, f.tokens)
	return f
}

// end takes a request out of flight, and reads its response's budgets.
func (l *Limits) end(f *load, res *http.Response) {
	var budgets []Budget
	if res != nil {
		budgets = readBudgets(res.Header)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight.add(-f.requests, -f.tokens)
	l.heard = l.heard || res != nil
	now := time.Now()
	for _, b := range budgets {
		l.report(report{Budget: b, seen: now})
	}
	l.broadcastLocked()
}

// report keeps r if it is newer than what the Limits holds. The newest
// report is the one with the latest reset: a token bucket that admits a
// call later is full again later, whatever order the answers come back in
// (and at equal resets, the lower remaining count is the later one).
func (l *Limits) report(r report) {
	old, ok := l.budgets[r.Name]
	if ok && (r.Reset.Before(old.Reset) || r.Reset.Equal(old.Reset) && r.Remaining >= old.Remaining) {
		return
	}
	if l.budgets == nil {
		l.budgets = map[string]report{}
	}
	l.budgets[r.Name] = r
}

// drop gives back a grant whose wait's context ended before its request
// was sent.
func (l *Limits) drop(g *grant) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := slices.Index(l.pending, g); i >= 0 {
		l.pending = slices.Delete(l.pending, i, i+1)
		l.waiting.add(-1, -g.tokens)
		l.broadcastLocked()
	}
}

// expire gives back the grants whose requests were not sent within
// pendingTTL.
func (l *Limits) expire(now time.Time) {
	for len(l.pending) > 0 && now.Sub(l.pending[0].at) >= pendingTTL {
		g := l.pending[0]
		l.pending = slices.Delete(l.pending, 0, 1)
		g.stop()
		l.waiting.add(-1, -g.tokens)
	}
}

func (l *Limits) changedLocked() <-chan struct{} {
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.changed
}

func (l *Limits) broadcastLocked() {
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}

func (x *load) add(requests, tokens int) {
	x.requests += requests
	x.tokens += tokens
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// waitFor waits until wake (if not zero), a change, or the end of ctx.
func waitFor(ctx context.Context, wake time.Time, changed <-chan struct{}) error {
	var timer <-chan time.Time
	if !wake.IsZero() {
		t := time.NewTimer(time.Until(wake))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-changed:
	case <-timer:
	}
	return nil
}
