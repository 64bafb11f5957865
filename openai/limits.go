package fanoutopenai

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/openai/openai-go/v3/option"
)

// Limits is a fanout.Limiter that follows the rate limits OpenAI reports
// with every response, success or error, in its x-ratelimit-limit-*,
// x-ratelimit-remaining-* and x-ratelimit-reset-* headers, for requests
// and for tokens. Once the server says a budget is spent until a reset,
// every task waiting on the Limits waits for the reset, instead of each
// finding out with a 429.
//
// Limits has three sides. Feed it the headers: pass it to [Chat] or
// [Response] with [WithLimits], or give its [Limits.Middleware] to the
// client, or call [Limits.Observe] yourself. Wait on it: pass it to
// fanout.WithRateLimit, so that each attempt waits for one request and its
// Task.Tokens (estimate them as OpenAI counts them: the prompt's tokens
// plus max_completion_tokens). And let it pause: fanout calls
// [Limits.Pause] when a response asks everyone to wait (see [Classify]).
//
// Each budget is modelled as the server describes it: so many units per
// window, this many left, whole again after the reset. Between responses,
// Limits subtracts what it grants from what the server last said was
// left, so that the calls in flight count before the server reports them.
// Within a window a response can only lower that figure (a response
// written before some of the grants arrived would raise it), and one whose
// reset falls well before the current window's is ignored: it was written
// in a window that has passed. The budget is whole again at the latest
// reset the server announced, and then every window after, a window
// lasting the longest reset seen so far. For a server that refills a
// budget continuously, as OpenAI's does, this waits longer than needed
// after a budget is spent, never less.
//
// Until the first response, Limits knows nothing and lets every request
// through: bound the first wave with fanout.WithLimit (or a *rate.Limiter
// sized to your tier, beside it) so that it fits in one window. The first
// response may be written before the whole wave has reached the server;
// how many requests the server says it has counted tells Limits how many
// of the wave's tokens to subtract still.
//
// The zero value is ready to use. A Limits is safe for concurrent use, and
// meant to be shared by every run that uses the same API key.
type Limits struct {
	mu       sync.Mutex
	requests window
	tokens   window
	paused   time.Time // no grant before then
	blind    grants    // made while the tokens budget was unknown
}

// grants counts requests and their tokens.
type grants struct{ requests, tokens int }

// NewLimits returns an empty Limits, the same as new(Limits).
func NewLimits() *Limits { return new(Limits) }

// WaitN waits until one request of n tokens fits in both of the server's
// budgets and in no pause, then takes it from them. It returns at once
// with an error if n is more than the server's whole token budget, or if
// the wait would outlast ctx's deadline, and with context.Cause(ctx) if
// ctx ends first (an ended ctx takes nothing).
func (l *Limits) WaitN(ctx context.Context, n int) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	for {
		wake, err := l.take(n)
		if err != nil || wake.IsZero() {
			return err
		}
		if deadline, ok := ctx.Deadline(); ok && deadline.Before(wake) {
			return fmt.Errorf("openai: Limits.WaitN(n=%d): the server's limits hold it past the context deadline", n)
		}
		if err := sleepUntil(ctx, wake); err != nil {
			return err
		}
	}
}

// take takes n tokens and one request if they fit now, and otherwise
// returns when to try again.
func (l *Limits) take(n int) (wake time.Time, err error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tokens.tooLarge(n) {
		return time.Time{}, fmt.Errorf("openai: Limits.WaitN(n=%d): more than the server's whole budget of %d tokens", n, l.tokens.limit)
	}
	if now.Before(l.paused) {
		return l.paused, nil
	}
	r, t := l.requests.ready(now, 1), l.tokens.ready(now, n)
	if r.IsZero() && t.IsZero() {
		l.requests.take(1)
		l.tokens.take(n)
		if !l.tokens.known {
			l.blind.requests, l.blind.tokens = l.blind.requests+1, l.blind.tokens+n
		}
		return time.Time{}, nil
	}
	if r.After(t) {
		return r, nil
	}
	return t, nil
}

// Observe reads the x-ratelimit-* headers of a response, success or
// error. Headers that are absent or malformed are ignored.
func (l *Limits) Observe(h http.Header) {
	req, tok := readBudget(h, "Requests"), readBudget(h, "Tokens")
	if !req.complete() && !tok.complete() {
		return
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.tokens.known {
		req, tok = l.blind.unseen(req, tok)
	}
	l.requests.observe(req, now)
	l.tokens.observe(tok, now)
	if l.tokens.known {
		l.blind = grants{}
	}
}

// unseen lowers the first budgets the server reports by the grants made
// before it spoke that had not reached it yet: a first wave sent at once
// does not all arrive before the first answer is written. How many
// requests the server has counted in its window says how many of them it
// has seen; the tokens of the others are taken as the average.
func (g grants) unseen(req, tok budgetHeader) (budgetHeader, budgetHeader) {
	if g.requests == 0 || !req.complete() || !tok.complete() {
		return req, tok
	}
	unseen := g.requests - (req.limit - req.remaining)
	if unseen <= 0 {
		return req, tok
	}
	req.remaining = max(req.remaining-unseen, 0)
	tok.remaining = max(tok.remaining-g.tokens*unseen/g.requests, 0)
	return req, tok
}

// Middleware returns an SDK middleware that feeds l the headers of every
// response of the requests it wraps: give it to option.WithMiddleware on
// the client, and every call of that client keeps l up to date.
func (l *Limits) Middleware() option.Middleware {
	return func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		res, err := next(req)
		if res != nil {
			l.Observe(res.Header)
		}
		return res, err
	}
}

// Pause makes every wait last until d from now at least. fanout calls it
// when a response asks to wait, so that every task sharing l waits, not
// only the one that was told.
func (l *Limits) Pause(d time.Duration) {
	until := time.Now().Add(d)
	l.mu.Lock()
	if until.After(l.paused) {
		l.paused = until
	}
	l.mu.Unlock()
}

// Settle takes, at once, the tokens a call used beyond what it was
// charged, so that later waits account for them until the server's next
// response says what is left; fanout calls it through fanout.Settle. It
// gives nothing back for a call that used less, or that was rejected:
// OpenAI counts a request against its limits when it arrives, by its
// prompt and max_completion_tokens, rejected ones included, so the
// server's own remaining budget does not grow either.
func (l *Limits) Settle(charged, used int) {
	if used <= charged {
		return
	}
	l.mu.Lock()
	l.tokens.take(used - charged)
	l.mu.Unlock()
}

func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
