package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sync"
	"time"

	"github.com/gofanout/fanout"
)

// journal records, per key, the retries of a run and whether a hedged copy
// won, which a Result alone does not tell. It is safe for concurrent use.
type journal struct {
	mu      sync.Mutex
	retries map[string][]fanout.RetryInfo
	won     map[string]bool
}

func newJournal() *journal {
	return &journal{retries: map[string][]fanout.RetryInfo{}, won: map[string]bool{}}
}

func (j *journal) observer() *fanout.Observer {
	return &fanout.Observer{
		Retry: func(_ context.Context, r fanout.RetryInfo) {
			j.mu.Lock()
			j.retries[r.Key] = append(j.retries[r.Key], r)
			j.mu.Unlock()
		},
		AttemptDone: func(_ context.Context, a fanout.AttemptInfo) {
			// The first copy to succeed is the one the run keeps: the
			// other is cancelled, so it cannot succeed too.
			if a.Hedge && a.Err == nil {
				j.mu.Lock()
				j.won[a.Key] = true
				j.mu.Unlock()
			}
		},
	}
}

// of returns what the journal holds for key.
func (j *journal) of(key string) ([]fanout.RetryInfo, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.retries[key], j.won[key]
}

// liveObserver prints retries, hedges and long limiter waits to w as they
// happen, each line stamped with the time since the run started.
func liveObserver(w io.Writer) *fanout.Observer {
	type hedgeKey struct {
		key     string
		attempt int
	}
	var mu sync.Mutex
	var start time.Time
	hedging := map[hedgeKey]bool{} // hedges started whose limiter wait is not reported yet
	printf := func(key, format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "  %+7.3fs  %-8s ", time.Since(start).Seconds(), key)
		fmt.Fprintf(w, format+"\n", args...)
	}
	return &fanout.Observer{
		RunStart: func(ctx context.Context, _ int) context.Context {
			mu.Lock()
			start = time.Now()
			mu.Unlock()
			return ctx
		},
		Retry: func(_ context.Context, r fanout.RetryInfo) {
			if r.ServerDirected {
				printf(r.Key, "attempt %d: %s -> retry in %v as told; the shared limiter pauses for every source",
					r.Attempt, brief(r.Err), round(r.Wait))
				return
			}
			printf(r.Key, "attempt %d: %s -> retry in %v (backoff)", r.Attempt, brief(r.Err), round(r.Wait))
		},
		Hedge: func(_ context.Context, h fanout.HedgeInfo) {
			mu.Lock()
			hedging[hedgeKey{h.Key, h.Attempt}] = true
			mu.Unlock()
			printf(h.Key, "attempt %d still running after %v -> hedge started", h.Attempt, round(h.After))
		},
		AttemptDone: func(_ context.Context, a fanout.AttemptInfo) {
			if a.Hedge && a.Err == nil {
				printf(a.Key, "hedge won after %v", round(a.Elapsed))
			}
		},
		LimiterWait: func(_ context.Context, wi fanout.WaitInfo) {
			// WaitInfo does not say whether a hedged copy waited; the
			// only wait for an attempt after its Hedge hook is the copy's.
			who := fmt.Sprintf("attempt %d", wi.Attempt)
			mu.Lock()
			k := hedgeKey{wi.Key, wi.Attempt}
			if hedging[k] {
				delete(hedging, k)
				who += "'s hedge"
			}
			mu.Unlock()
			if wi.Wait >= 10*time.Millisecond {
				printf(wi.Key, "%s waited %v on the shared limiter", who, round(wi.Wait))
			}
		},
	}
}

// brief says what went wrong in a few words.
func brief(err error) string {
	var he *fanout.HTTPError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &he):
		if he.Delay > 0 {
			return fmt.Sprintf("HTTP %d asking %v", he.StatusCode, he.Delay)
		}
		return fmt.Sprintf("HTTP %d", he.StatusCode)
	case errors.Is(err, fanout.ErrTaskTimeout):
		return "timed out"
	case errors.Is(err, fanout.ErrRunTimeout):
		return "run timed out"
	case errors.Is(err, fanout.ErrSkipped):
		return "skipped"
	}
	var ue *url.Error // "Get URL: ..." says what the table already does
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// round rounds d for people: to the millisecond.
func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
