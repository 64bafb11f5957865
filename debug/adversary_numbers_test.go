package fanoutdebug_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutdebug "github.com/gofanout/fanout/debug"
)

// tries counts the attempts of each key, for tasks that fail their first.
type tries struct {
	mu sync.Mutex
	n  map[string]int
}

func (tr *tries) next(key string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.n == nil {
		tr.n = map[string]int{}
	}
	tr.n[key]++
	return tr.n[key]
}

func TestFinishedRunsMatchTheirResults(t *testing.T) {
	tests := []struct {
		name string
		// run runs 12 keys with the page's observer, in a synctest bubble.
		run       func(ctx context.Context, obs *fanout.Observer) *fanout.Results[int]
		wantKinds []string // the kinds of the failed keys, sorted
		// covers says whether the run did what the case is about.
		covers func(c counts) bool
	}{
		{
			name: "retries",
			run: func(ctx context.Context, obs *fanout.Observer) *fanout.Results[int] {
				var tr tries
				return twelve(ctx, obs, func(ctx context.Context, i int) (int, error) {
					n := tr.next(strconv.Itoa(i))
					switch {
					case i%4 == 0:
						return 0, errUpstream // every try
					case i%4 == 1 && n < 3:
						return 0, errors.New("flaky")
					}
					return i, nil
				}, fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Second}))
			},
			wantKinds: []string{"error", "error", "error"},
			covers:    func(c counts) bool { return c.Retries == 3*2+3*2 },
		},
		{
			name: "hedged attempts",
			run: func(ctx context.Context, obs *fanout.Observer) *fanout.Results[int] {
				var tr tries
				return twelve(ctx, obs, func(ctx context.Context, i int) (int, error) {
					if i%3 == 0 && tr.next(strconv.Itoa(i)) == 1 {
						select { // the first copy is slow: the hedge wins
						case <-time.After(time.Hour):
						case <-ctx.Done():
							return 0, context.Cause(ctx)
						}
					}
					time.Sleep(10 * time.Millisecond)
					return i, nil
				}, fanout.WithHedge(fanout.HedgePolicy{Delay: time.Second, MaxExtra: 1}))
			},
			covers: func(c counts) bool { return c.Hedges == 4 },
		},
		{
			name: "task timeouts, retried",
			run: func(ctx context.Context, obs *fanout.Observer) *fanout.Results[int] {
				var tr tries
				return twelve(ctx, obs, func(ctx context.Context, i int) (int, error) {
					if i%5 == 0 || (i%5 == 1 && tr.next(strconv.Itoa(i)) == 1) {
						<-ctx.Done()
						return 0, ctx.Err()
					}
					return i, nil
				}, fanout.WithTaskTimeout(time.Second),
					fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Second}))
			},
			wantKinds: []string{"timeout", "timeout", "timeout"},
			covers:    func(c counts) bool { return c.Retries == 6 },
		},
		{
			name: "panics",
			run: func(ctx context.Context, obs *fanout.Observer) *fanout.Results[int] {
				return twelve(ctx, obs, func(ctx context.Context, i int) (int, error) {
					if i%6 == 0 {
						panic("task " + strconv.Itoa(i))
					}
					return i, nil
				})
			},
			wantKinds: []string{"panic", "panic"},
			covers:    func(c counts) bool { return c.Failed == 2 },
		},
		{
			name: "Goexit",
			run: func(ctx context.Context, obs *fanout.Observer) *fanout.Results[int] {
				return twelve(ctx, obs, func(ctx context.Context, i int) (int, error) {
					if i%5 == 2 {
						runtime.Goexit()
					}
					return i, nil
				}, fanout.WithLimit(2))
			},
			wantKinds: []string{"goexit", "goexit"},
			covers:    func(c counts) bool { return c.Failed == 2 },
		},
		{
			name: "a run timeout skips the keys not started",
			run: func(ctx context.Context, obs *fanout.Observer) *fanout.Results[int] {
				return twelve(ctx, obs, func(ctx context.Context, i int) (int, error) {
					select {
					case <-time.After(time.Duration(i+1) * 400 * time.Millisecond):
						return i, nil
					case <-ctx.Done():
						return 0, context.Cause(ctx)
					}
				}, fanout.WithLimit(3), fanout.WithTimeout(time.Second))
			},
			wantKinds: []string{"run_timeout", "run_timeout", "run_timeout"},
			covers:    func(c counts) bool { return c.Skipped > 0 },
		},
		{
			name: "fail fast skips the rest",
			run: func(ctx context.Context, obs *fanout.Observer) *fanout.Results[int] {
				return twelve(ctx, obs, func(ctx context.Context, i int) (int, error) {
					if i == 3 {
						return 0, errUpstream
					}
					time.Sleep(time.Second)
					return i, nil
				}, fanout.WithLimit(2), fanout.WithFailFast())
			},
			wantKinds: []string{"error"},
			covers:    func(c counts) bool { return c.Skipped > 0 },
		},
		{
			name: "a spent budget skips the rest",
			run: func(ctx context.Context, obs *fanout.Observer) *fanout.Results[int] {
				return twelve(ctx, obs, func(ctx context.Context, i int) (int, error) {
					fanout.Spend(ctx, fanout.Cost{Tokens: 10, Cents: 0.25})
					return i, nil
				}, fanout.WithLimit(1), fanout.WithBudget(fanout.Cost{Tokens: 50}))
			},
			covers: func(c counts) bool { return c.Skipped == 7 },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := fanoutdebug.New()
				res := tt.run(context.Background(), p.Observer(tt.name))
				require.NotNil(t, res)

				rec := get(p, "/api/run?id=1")
				require.Equal(t, 200, rec.Code, rec.Body.String())
				var got fanoutdebug.RunDetail
				require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
				want := fromResults(res)
				assert.True(t, tt.covers(want), "the run is not what the case is about: %+v", want)
				assert.Equal(t, want, figuresOf(got.Run))

				var failed, kinds []string
				for _, r := range res.All() {
					if r.Err != nil && !errors.Is(r.Err, fanout.ErrSkipped) {
						failed = append(failed, r.Key)
					}
				}
				for _, f := range got.Failures {
					kinds = append(kinds, f.Kind)
				}
				sort.Strings(kinds)
				assert.Equal(t, tt.wantKinds, kinds)
				assert.ElementsMatch(t, failed, keysOf(got.Failures))
				assert.Len(t, got.Failures, want.Failed, "fewer than 20 failed: each is listed")

				var s fanoutdebug.Snapshot
				require.NoError(t, json.Unmarshal(get(p, "/api").Body.Bytes(), &s))
				require.Len(t, s.Names, 1)
				assert.Equal(t, fanoutdebug.Name{Name: tt.name, Finished: 1, Keys: int64(want.Tasks),
					Failed: int64(want.Failed), Skipped: int64(want.Skipped), Retries: int64(want.Retries),
					Cost: fanoutdebug.Cost{Tokens: res.Cost().Tokens, Cents: res.Cost().Cents}}, s.Names[0])
			})
		})
	}
}

// twelve runs keys 0 to 11 with do.
func twelve(ctx context.Context, obs *fanout.Observer, do func(context.Context, int) (int, error), opts ...fanout.Option) *fanout.Results[int] {
	tasks := make([]fanout.Task[int], 12)
	for i := range tasks {
		tasks[i] = fanout.NewTask(strconv.Itoa(i), func(ctx context.Context) (int, error) { return do(ctx, i) })
	}
	res, _ := fanout.Run(ctx, tasks, append(opts, fanout.WithObserver(obs))...)
	return res
}

// counts are the figures of a finished run that its Results decide.
type counts struct {
	Tasks, Done, Succeeded, Failed, Skipped, InFlight, Attempts, Retries, Hedges int
	Running                                                                      bool
	Cost                                                                         fanoutdebug.Cost
}

func figuresOf(r fanoutdebug.Run) counts {
	return counts{Tasks: r.Tasks, Done: r.Done, Succeeded: r.Succeeded, Failed: r.Failed, Skipped: r.Skipped,
		InFlight: r.InFlight, Attempts: r.Attempts, Retries: r.Retries, Hedges: r.Hedges, Running: r.Running, Cost: r.Cost}
}

func fromResults(res *fanout.Results[int]) counts {
	c := counts{Tasks: res.Len(), Done: res.Len(), Succeeded: res.Succeeded(),
		Cost: fanoutdebug.Cost{Tokens: res.Cost().Tokens, Cents: res.Cost().Cents}}
	for _, r := range res.All() {
		c.Attempts += r.Attempts
		c.Hedges += r.Hedges
		if r.Attempts > 0 {
			c.Retries += r.Attempts - r.Hedges - 1
		}
		switch {
		case r.Err == nil:
		case errors.Is(r.Err, fanout.ErrSkipped):
			c.Skipped++
		default:
			c.Failed++
		}
	}
	return c
}

func keysOf(fs []fanoutdebug.Failure) []string {
	var keys []string
	for _, f := range fs {
		keys = append(keys, f.Key)
	}
	return keys
}
