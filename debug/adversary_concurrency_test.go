package fanoutdebug_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
	fanoutdebug "github.com/gofanout/fanout/debug"
)

// capturing returns obs with its RunDone also handing over the context the
// page's hooks see for the run, so that a test can call them late.
func capturing(obs *fanout.Observer, ctxs chan<- context.Context) *fanout.Observer {
	o := *obs
	o.RunDone = func(ctx context.Context, s fanout.RunSummary) {
		obs.RunDone(ctx, s)
		ctxs <- ctx
	}
	return &o
}

func TestHooksCalledAfterARunEndedChangeNothing(t *testing.T) {
	p := fanoutdebug.New()
	obs := p.Observer("late")
	ctxs := make(chan context.Context, 1)
	_, err := fanout.Run(t.Context(), []fanout.Task[int]{
		fanout.NewTask("a", func(context.Context) (int, error) { return 1, nil }),
		fanout.NewTask("b", func(context.Context) (int, error) { return 0, errUpstream }),
	}, fanout.WithObserver(capturing(obs, ctxs)))
	require.Error(t, err)
	ctx := <-ctxs
	before, ok := p.Run(1)
	require.True(t, ok)
	names := p.Snapshot().Names

	// A goroutine a task left behind, or a second caller of the hooks.
	for i := range 2000 {
		key := "late-" + strconv.Itoa(i)
		obs.TaskStart(ctx, key)
		a := fanout.AttemptInfo{Key: key, Attempt: 1}
		obs.AttemptStart(ctx, a)
		obs.LimiterWait(ctx, fanout.WaitInfo{Key: key, Wait: time.Second})
		obs.Retry(ctx, fanout.RetryInfo{Key: key, Attempt: 1, Wait: time.Second, Err: errUpstream})
		obs.Hedge(ctx, fanout.HedgeInfo{Key: key, Attempt: 1})
		obs.AttemptDone(ctx, fanout.AttemptInfo{Key: key, Attempt: 1, Err: errUpstream})
		if i%2 == 0 { // half of them never end
			obs.TaskDone(ctx, fanout.TaskInfo{Key: key, Err: errUpstream, Attempts: 1, Elapsed: time.Hour,
				Cost: fanout.Cost{Tokens: 5}})
		}
	}
	obs.RunDone(ctx, fanout.RunSummary{Tasks: 9, Succeeded: 9})

	after, ok := p.Run(1)
	require.True(t, ok)
	before.ElapsedMS, after.ElapsedMS = 0, 0
	assert.Equal(t, before, after, "a finished run's figures are its final ones")
	assert.Equal(t, names, p.Snapshot().Names)
	assert.Len(t, p.Snapshot().Runs, 1)
	assert.Nil(t, p.Snapshot().ServerWait)
}

func TestHooksOutsideAnyRunAreIgnored(t *testing.T) {
	p := fanoutdebug.New()
	obs := p.Observer("none")
	ctx := t.Context() // no RunStart
	assert.NotPanics(t, func() {
		obs.TaskStart(ctx, "a")
		obs.AttemptStart(ctx, fanout.AttemptInfo{Key: "a", Attempt: 1})
		obs.AttemptDone(ctx, fanout.AttemptInfo{Key: "a", Attempt: 1})
		obs.Retry(ctx, fanout.RetryInfo{Key: "a", ServerDirected: true})
		obs.Hedge(ctx, fanout.HedgeInfo{Key: "a"})
		obs.LimiterWait(ctx, fanout.WaitInfo{Key: "a"})
		obs.TaskDone(ctx, fanout.TaskInfo{Key: "a"})
		obs.RunDone(ctx, fanout.RunSummary{Tasks: 1, Succeeded: 1})
	})
	s := p.Snapshot()
	assert.Empty(t, s.Runs)
	assert.Nil(t, s.ServerWait)
}

func TestAFleetReportThatBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := fanoutdebug.New()
		release := make(chan struct{})
		var reports atomic.Int64
		p.ShowFleet("stuck", func() fanoutdebug.Fleet {
			reports.Add(1)
			<-release
			return fanoutdebug.Fleet{Sent: 7}
		})
		overview := make(chan *httptest.ResponseRecorder, 2)
		for range 2 {
			go func() { overview <- get(p, "/api") }()
		}
		synctest.Wait()
		assert.Equal(t, int64(2), reports.Load())
		assert.Empty(t, overview, "the overview waits for its fleets")

		// Everything else goes on: runs start and end, their pages are
		// served, limits and fleets are shown.
		_, err := fanout.Run(context.Background(), []fanout.Task[int]{
			fanout.NewTask("a", func(context.Context) (int, error) { return 1, nil }),
		}, fanout.WithObserver(p.Observer("meanwhile")))
		require.NoError(t, err)
		assert.Equal(t, 200, get(p, "/api/run?id=1").Code)
		assert.Equal(t, 200, get(p, "/run?id=1").Code)
		assert.Equal(t, 200, get(p, "/").Code)
		p.ShowLimiter("requests", rate.NewLimiter(1, 1))
		p.ShowFleet("other", func() fanoutdebug.Fleet { return fanoutdebug.Fleet{} })

		close(release)
		for range 2 {
			rec := <-overview
			require.Equal(t, 200, rec.Code)
			var s fanoutdebug.Snapshot
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &s))
			require.NotEmpty(t, s.Fleets)
			assert.Equal(t, int64(7), s.Fleets[0].Fleet.Sent)
		}
		assert.Len(t, p.Snapshot().Fleets, 2)
	})
}

func TestAFleetReportMayUseThePage(t *testing.T) {
	p := fanoutdebug.New()
	var reports atomic.Int64
	p.ShowFleet("reentrant", func() fanoutdebug.Fleet {
		n := reports.Add(1)
		p.ShowLimiter("from the report", rate.NewLimiter(rate.Limit(n), 1))
		p.Run(1)
		p.ShowFleet("added by the report", func() fanoutdebug.Fleet { return fanoutdebug.Fleet{Late: n} })
		return fanoutdebug.Fleet{Sent: n}
	})
	done := make(chan fanoutdebug.Snapshot)
	go func() { done <- p.Snapshot() }()
	select {
	case s := <-done:
		assert.Equal(t, int64(1), s.Fleets[0].Fleet.Sent)
	case <-time.After(10 * time.Second):
		t.Fatal("a report that calls the page deadlocks it")
	}
	assert.Len(t, p.Snapshot().Fleets, 2)
}

func TestFleetReportsThatPanic(t *testing.T) {
	give := []any{"plain", errors.New("an error"), nil, 42, string(make([]byte, 100_000)), panicky{}}
	p := fanoutdebug.New()
	for i, v := range give {
		p.ShowFleet(strconv.Itoa(i), func() fanoutdebug.Fleet { panic(v) })
	}
	p.ShowFleet("fine", func() fanoutdebug.Fleet { return fanoutdebug.Fleet{Sent: 1} })
	rec := get(p, "/api")
	require.Equal(t, 200, rec.Code)
	var s fanoutdebug.Snapshot
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &s))
	require.Len(t, s.Fleets, len(give)+1)
	for i := range give {
		f := s.Fleets[i]
		assert.Contains(t, f.Error, "fanoutdebug: fleet report panicked: ", f.Name)
		assert.LessOrEqual(t, len(f.Error), maxKept, f.Name)
		assert.NotNil(t, f.Fleet.Workers)
		assert.NotNil(t, f.Fleet.Batches)
	}
	assert.Equal(t, int64(1), s.Fleets[len(give)].Fleet.Sent)
}

// panicky panics when the page formats it.
type panicky struct{}

func (panicky) String() string { panic("again") }

func TestManyRunsAndHTTPReadersAtOnce(t *testing.T) {
	p := fanoutdebug.New(fanoutdebug.WithHistory(5), fanoutdebug.WithMaxRuns(12),
		fanoutdebug.WithKeysInFlight(8), fanoutdebug.WithFailures(3))
	obs := p.Observer("crowd")
	srv := httptest.NewServer(p) // on 127.0.0.1
	defer srv.Close()

	ctx, stop := context.WithCancel(t.Context())
	var readers sync.WaitGroup
	var reads atomic.Int64
	var found findings
	check := found.check
	for range 4 {
		readers.Go(func() {
			for ctx.Err() == nil {
				var s fanoutdebug.Snapshot
				if !fetch(ctx, srv, "/api", &s) {
					continue
				}
				reads.Add(1)
				for _, r := range append(s.Runs, s.Nested...) {
					checkRun(check, r)
					var d fanoutdebug.RunDetail
					if fetch(ctx, srv, fmt.Sprintf("/api/run?id=%d", r.ID), &d) {
						checkRun(check, d.Run)
						check(len(d.Keys) <= 8, "run %d lists %d keys", d.ID, len(d.Keys))
						check(len(d.Failures) <= 3 && len(d.RecentRetries) <= 3, "run %d keeps too many", d.ID)
					}
				}
			}
		})
	}
	// Meanwhile the limits and fleets change.
	readers.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			p.ShowLimiter("lim", rate.NewLimiter(rate.Limit(i+1), 1))
			p.ShowFleet("fleet", func() fanoutdebug.Fleet { return fanoutdebug.Fleet{Sent: int64(i)} })
			time.Sleep(time.Millisecond)
		}
	})

	var runs sync.WaitGroup
	var mu sync.Mutex
	var want fanoutdebug.Name
	want.Name = "crowd"
	for range 24 {
		runs.Go(func() {
			tasks := make([]fanout.Task[int], 60)
			for i := range tasks {
				tasks[i] = fanout.NewTask(strconv.Itoa(i), func(ctx context.Context) (int, error) {
					fanout.Spend(ctx, fanout.Cost{Tokens: 1})
					switch {
					case i%11 == 0:
						return 0, errUpstream
					case i%13 == 0:
						panic("boom")
					}
					time.Sleep(time.Duration(i%3) * time.Millisecond)
					return i, nil
				})
			}
			res, _ := fanout.Run(t.Context(), tasks, fanout.WithLimit(6), fanout.WithObserver(obs),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Microsecond}),
				fanout.WithHedge(fanout.HedgePolicy{Delay: time.Millisecond}))
			mu.Lock()
			defer mu.Unlock()
			want.Keys += int64(res.Len())
			want.Failed += int64(len(res.Errs()))
			want.Cost.Tokens += res.Cost().Tokens
			for _, r := range res.All() {
				want.Retries += int64(r.Attempts - r.Hedges - 1)
			}
		})
	}
	runs.Wait()
	time.Sleep(50 * time.Millisecond) // a few reads of the finished runs
	stop()
	readers.Wait()

	assert.Positive(t, reads.Load())
	assert.Empty(t, found.list())
	s := p.Snapshot()
	want.Finished = 24 - int(s.Untracked)
	require.Len(t, s.Names, 1)
	// Runs beyond WithMaxRuns are not followed, so compare only when all were.
	if s.Untracked == 0 {
		assert.Equal(t, want, s.Names[0])
	}
	assert.Len(t, s.Runs, 5)
	for _, r := range s.Runs {
		assert.False(t, r.Running)
		assert.Equal(t, 60, r.Done)
		assert.Zero(t, r.InFlight)
	}
}

// checkRun checks what holds of a run at any moment.
func checkRun(check func(bool, string, ...any), r fanoutdebug.Run) {
	check(r.Done == r.Succeeded+r.Failed+r.Skipped, "run %d: done %d is not the sum", r.ID, r.Done)
	check(r.InFlight >= 0, "run %d: %d in flight", r.ID, r.InFlight)
	if r.Tasks >= 0 {
		check(r.Done <= r.Tasks, "run %d: %d done of %d", r.ID, r.Done, r.Tasks)
	}
	if !r.Running {
		check(r.Done == r.Tasks, "run %d says finished with %d of %d done", r.ID, r.Done, r.Tasks)
		check(r.InFlight == 0, "run %d says finished with %d in flight", r.ID, r.InFlight)
		check(r.ETAMS == -1, "run %d says finished with an ETA", r.ID)
	}
}

// fetch decodes the JSON at path into v, and reports whether it could.
func fetch(ctx context.Context, srv *httptest.Server, path string, v any) bool {
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
	if err != nil {
		return false
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(v) == nil
}

// A run read as it ends is either still running or finished with its
// final figures, never finished with figures from before its end.
func TestARunReadAsItEndsIsConsistent(t *testing.T) {
	p := fanoutdebug.New(fanoutdebug.WithHistory(1))
	obs := p.Observer("edge")
	ctx, stop := context.WithCancel(t.Context())
	var readers sync.WaitGroup
	var found findings
	check := found.check
	for range 2 {
		readers.Go(func() {
			for ctx.Err() == nil {
				for _, r := range p.Snapshot().Runs {
					checkRun(check, r)
				}
			}
		})
	}
	tasks := make([]fanout.Task[int], 4)
	for i := range tasks {
		tasks[i] = fanout.NewTask(strconv.Itoa(i), func(context.Context) (int, error) { return i, nil })
	}
	for range 3000 {
		_, err := fanout.Run(ctx, tasks, fanout.WithObserver(obs))
		require.NoError(t, err)
	}
	stop()
	readers.Wait()
	assert.Empty(t, found.list())
}

// findings gathers, from many goroutines, the first 20 broken checks.
type findings struct {
	mu  sync.Mutex
	bad []string
}

func (f *findings) check(ok bool, format string, args ...any) {
	if ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bad) < 20 {
		f.bad = append(f.bad, fmt.Sprintf(format, args...))
	}
}

func (f *findings) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bad
}
