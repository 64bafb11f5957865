package fanout

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/time/rate"
)

// waitRateFunc is a wait under test: x/time's WaitN or waitRate.
type waitRateFunc func(ctx context.Context, l *rate.Limiter, n int) error

func upstreamWaitN(ctx context.Context, l *rate.Limiter, n int) error { return l.WaitN(ctx, n) }

// waitRateGrant is n tokens a wait returned nil for, at the (bubble) time
// it did.
type waitRateGrant struct {
	at time.Time
	n  int
}

// waitRateLog records grants from many goroutines.
type waitRateLog struct {
	mu        sync.Mutex
	grants    []waitRateGrant
	abandoned int
}

// wait runs wait and records a grant, or an abandoned wait.
func (g *waitRateLog) wait(ctx context.Context, wait waitRateFunc, l *rate.Limiter, n int) bool {
	err := wait(ctx, l, n)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		g.abandoned++
		return false
	}
	g.grants = append(g.grants, waitRateGrant{time.Now(), n})
	return true
}

func (g *waitRateLog) grantedAt(at time.Time) int {
	sum := 0
	for _, gr := range g.grants {
		if gr.at.Equal(at) {
			sum += gr.n
		}
	}
	return sum
}

// worstExcess is the most tokens granted beyond burst + limit×(b-a) in
// any window [a, b] that starts at t0 or at a grant: what a token bucket
// that starts full must never let through.
func (g *waitRateLog) worstExcess(t0 time.Time, limit rate.Limit, burst int) float64 {
	worst := 0.0
	starts := []time.Time{t0}
	for _, a := range g.grants {
		starts = append(starts, a.at)
	}
	for _, a := range starts {
		for _, b := range g.grants {
			if b.at.Before(a) {
				continue
			}
			sum := 0
			for _, c := range g.grants {
				if !c.at.Before(a) && !c.at.After(b.at) {
					sum += c.n
				}
			}
			allowed := float64(burst) + float64(limit)*b.at.Sub(a).Seconds()
			worst = max(worst, float64(sum)-allowed)
		}
	}
	return worst
}

var errWaitRateStopped = errors.New("stopped")

// replayCancelScenario runs, all at one instant, five waits on a bucket of
// 7 refilled at 1 token/s, cancelling three of them mid-wait:
//
//	wait 6 (granted), wait 5 (queued), wait 2 (queued), cancel the 5,
//	wait 6 (queued), cancel it, cancel the 2, wait 2.
//
// The third cancel is the one x/time gets wrong: the second moved the
// limiter's lastEvent back before the 2's time to act, so cancelling the 2
// restores 5 tokens instead of 2, and the last wait of 2 is granted at once.
func replayCancelScenario(t *testing.T, wait waitRateFunc) (g *waitRateLog, t0 time.Time) {
	l := rate.NewLimiter(1, 7)
	g = &waitRateLog{}
	t0 = time.Now()
	var wg sync.WaitGroup
	start := func(n int) (cancel func()) {
		ctx, cancelCause := context.WithCancelCause(t.Context())
		wg.Go(func() { g.wait(ctx, wait, l, n) })
		synctest.Wait()
		return func() { cancelCause(errWaitRateStopped); synctest.Wait() }
	}
	start(6)            // granted at once: 1 token left
	cancel5 := start(5) // queued to act at 4s
	cancel2 := start(2) // queued to act at 6s
	cancel5()           // gives back 3: the 2 queued behind it keep theirs
	cancel6 := start(6) // queued to act at 9s
	cancel6()           // gives back 6 and moves lastEvent back to 3s, before the 2's 6s
	cancel2()           // gives back 5: 2, plus 3 for lastEvent being 3s before its 6s
	start(2)            // x/time has 2 tokens, not 1: granted at once
	synctest.Wait()
	if !time.Now().Equal(t0) {
		t.Fatalf("the scenario took %v of bubble time, want none", time.Since(t0))
	}
	time.Sleep(time.Minute) // let the waits still queued end
	wg.Wait()
	return g, t0
}

func TestWaitRateUpstreamCancelBug(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, t0 := replayCancelScenario(t, upstreamWaitN)
		if got := g.grantedAt(t0); got != 8 {
			t.Fatalf("WaitN granted %d tokens at once from a bucket of 7, want the bug's 8: "+
				"if x/time fixed Reservation.CancelAt, waitRate may go", got)
		}
	})
}

func TestWaitRateKeepsBoundInCancelScenario(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, t0 := replayCancelScenario(t, waitRate)
		if got := g.grantedAt(t0); got != 6 {
			t.Errorf("granted %d tokens at once, want only the first wait's 6", got)
		}
		if excess := g.worstExcess(t0, 1, 7); excess > 1e-6 {
			t.Errorf("granted %.3g tokens beyond burst + rate×elapsed", excess)
		}
	})
}

// TestWaitRateKeepsBoundUnderHedgesAndStops starts runs of tasks on one
// limiter, each task waiting twice (it and its hedged copy: the first
// granted cancels the other), and stops some runs mid-wait.
func TestWaitRateKeepsBoundUnderHedgesAndStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit, burst = rate.Limit(10), 5
		l := rate.NewLimiter(limit, burst)
		rng := rand.New(rand.NewPCG(1, 2))
		g := &waitRateLog{}
		t0 := time.Now()
		var wg sync.WaitGroup
		var stops []context.CancelCauseFunc
		for range 40 {
			run, stop := context.WithCancelCause(t.Context())
			stops = append(stops, stop)
			for range 4 {
				n := 1 + rng.IntN(3)
				task, hedgeWon := context.WithCancelCause(run)
				stops = append(stops, hedgeWon)
				for range 2 {
					wg.Go(func() {
						if g.wait(task, waitRate, l, n) {
							hedgeWon(errWaitRateStopped)
						}
					})
					synctest.Wait() // reserve in the order started
				}
			}
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			if rng.IntN(3) == 0 {
				stop(errWaitRateStopped)
			}
		}
		time.Sleep(time.Hour)
		for _, stop := range stops {
			stop(errWaitRateStopped)
		}
		wg.Wait()
		if len(g.grants) == 0 || g.abandoned == 0 {
			t.Fatalf("%d grants, %d abandoned waits: want some of each", len(g.grants), g.abandoned)
		}
		if excess := g.worstExcess(t0, limit, burst); excess > 1e-6 {
			t.Errorf("granted %.3g tokens beyond burst + rate×elapsed", excess)
		}
	})
}

func TestWaitRate(t *testing.T) {
	tests := []struct {
		name     string
		limit    rate.Limit
		burst    int
		spent    int           // tokens taken before the wait
		timeout  time.Duration // 0: no deadline
		give     int
		wantErr  string // "": nil
		wantWait time.Duration
	}{
		{"n above the burst is refused at once", 1, 3, 0, 0, 4, "exceeds limiter's burst 3", 0},
		{"a wait past the deadline is refused at once", 1, 3, 3, 2 * time.Second, 3, "would exceed context deadline", 0},
		{"a wait within the deadline ends when the tokens arrive", 1, 3, 3, 4 * time.Second, 3, "", 3 * time.Second},
		{"a wait without a deadline ends when the tokens arrive", 2, 3, 3, 0, 1, "", 500 * time.Millisecond},
		{"a zero limit refuses more than it has left", 0, 2, 1, 0, 2, "would never end", 0},
		{"a zero limit grants what it has left", 0, 2, 1, 0, 1, "", 0},
		{"an Inf limit never waits, even beyond the burst", rate.Inf, 0, 0, 0, 100, "", 0},
		{"n == 0 returns at once", 1, 3, 3, 0, 0, "", 0},
		{"a negative n returns at once and adds no tokens", 1, 3, 3, 0, -2, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := rate.NewLimiter(tt.limit, tt.burst)
				start := time.Now()
				l.ReserveN(start, tt.spent)
				before := l.TokensAt(start)
				ctx := t.Context()
				if tt.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.timeout)
					defer cancel()
				}
				err := waitRate(ctx, l, tt.give)
				if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
					t.Fatalf("waitRate(%d) = %v, want error %q", tt.give, err, tt.wantErr)
				}
				if got := time.Since(start); got != tt.wantWait {
					t.Errorf("waited %v, want %v", got, tt.wantWait)
				}
				if (err != nil || tt.give <= 0) && l.TokensAt(start) != before {
					t.Errorf("tokens went from %v to %v, want unchanged", before, l.TokensAt(start))
				}
			})
		})
	}
}

func TestWaitRateEndedContext(t *testing.T) {
	cause := errors.New("run stopped")
	t.Run("a wait that ctx ends returns its cause and keeps its tokens", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := rate.NewLimiter(1, 1)
			l.ReserveN(time.Now(), 1)
			ctx, cancel := context.WithCancelCause(t.Context())
			time.AfterFunc(400*time.Millisecond, func() { cancel(cause) })
			start := time.Now()
			if err := waitRate(ctx, l, 1); !errors.Is(err, cause) {
				t.Fatalf("waitRate = %v, want %v", err, cause)
			}
			if got := time.Since(start); got != 400*time.Millisecond {
				t.Errorf("returned after %v, want 400ms", got)
			}
			if got := l.Tokens(); got > -0.6+1e-9 {
				t.Errorf("%v tokens after the abandoned wait, want -0.6: none given back", got)
			}
		})
	})
	t.Run("an ended ctx is refused at once with its cause", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := rate.NewLimiter(1, 1)
			ctx, cancel := context.WithCancelCause(t.Context())
			cancel(cause)
			if err := waitRate(ctx, l, 1); !errors.Is(err, cause) {
				t.Fatalf("waitRate = %v, want %v", err, cause)
			}
			if got := l.Tokens(); got != 1 {
				t.Errorf("%v tokens after the refusal, want 1", got)
			}
		})
	})
}
