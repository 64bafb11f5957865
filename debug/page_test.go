package fanoutdebug_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
	fanoutdebug "github.com/gofanout/fanout/debug"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errUpstream = errors.New("upstream said no")

// onlyRun returns the one run on p.
func onlyRun(t *testing.T, p *fanoutdebug.Page) fanoutdebug.RunDetail {
	t.Helper()
	s := p.Snapshot()
	require.Len(t, s.Runs, 1)
	d, ok := p.Run(s.Runs[0].ID)
	require.True(t, ok)
	return d
}

func TestFinishedRunMatchesItsResults(t *testing.T) {
	p := fanoutdebug.New()
	var tries sync.Map
	tasks := make([]fanout.Task[int], 10)
	for i := range tasks {
		key := fmt.Sprintf("k%d", i)
		tasks[i] = fanout.NewTask(key, func(ctx context.Context) (int, error) {
			n, _ := tries.LoadOrStore(key, new(int))
			*n.(*int)++
			fanout.Spend(ctx, fanout.Cost{Tokens: 10, Cents: 0.5})
			switch {
			case key == "k3":
				return 0, errUpstream
			case key == "k5" && *n.(*int) == 1:
				return 0, errors.New("flaky")
			}
			return i, nil
		})
	}
	res, _ := fanout.Run(t.Context(), tasks, fanout.WithLimit(3),
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Millisecond}),
		fanout.WithObserver(p.Observer("match")))

	d := onlyRun(t, p)
	assert.Equal(t, "match", d.Name)
	assert.False(t, d.Running)
	assert.Equal(t, res.Len(), d.Tasks)
	assert.Equal(t, res.Len(), d.Done)
	assert.Equal(t, res.Succeeded(), d.Succeeded)
	assert.Equal(t, len(res.Errs()), d.Failed)
	attempts := 0
	for _, r := range res.All() {
		attempts += r.Attempts
	}
	assert.Equal(t, attempts, d.Attempts)
	assert.Equal(t, 2, d.Retries, "k3 once, k5 once")
	assert.Equal(t, fanoutdebug.Cost{Tokens: res.Cost().Tokens, Cents: res.Cost().Cents}, d.Cost)
	assert.Equal(t, 0, d.InFlight)
	assert.Empty(t, d.Keys)
	assert.Equal(t, -1.0, d.ETAMS)
	require.Len(t, d.Failures, 1)
	assert.Equal(t, "k3", d.Failures[0].Key)
	assert.Equal(t, "error", d.Failures[0].Kind)
	assert.Equal(t, 2, d.Failures[0].Attempts)
	assert.Contains(t, d.Failures[0].Error, "upstream said no")
	assert.Len(t, d.RecentRetries, 2)
	assert.Len(t, d.Slowest, 10)

	s := p.Snapshot()
	require.Len(t, s.Names, 1)
	assert.Equal(t, fanoutdebug.Name{Name: "match", Finished: 1, Keys: 10, Failed: 1, Retries: 2, Cost: d.Cost}, s.Names[0])
}

func TestKeysInFlight(t *testing.T) {
	t.Run("each shows its attempt, its state and for how long", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := fanoutdebug.New()
			release := make(chan struct{})
			var firstTry sync.Once
			tasks := []fanout.Task[int]{
				fanout.NewTask("slow", func(ctx context.Context) (int, error) { <-release; return 1, nil }),
				fanout.NewTask("flaky", func(ctx context.Context) (int, error) {
					failed := false
					firstTry.Do(func() { failed = true })
					if failed {
						return 0, errUpstream
					}
					<-release
					return 2, nil
				}),
				fanout.NewTask("queued", func(ctx context.Context) (int, error) { return 3, nil }),
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = fanout.Run(context.Background(), tasks, fanout.WithLimit(2),
					fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 3, InitialInterval: 10 * time.Second, Jitter: -1}),
					fanout.WithObserver(p.Observer("live")))
			}()
			synctest.Wait()
			time.Sleep(4 * time.Second)
			d := onlyRun(t, p)
			assert.True(t, d.Running)
			assert.Equal(t, 2, d.InFlight)
			require.Len(t, d.Keys, 2) // started together, so in key order
			assert.Equal(t, fanoutdebug.KeyInFlight{Key: "flaky", State: "retry wait", Attempt: 1,
				ForMS: 4000, RetryInMS: 6000, LastError: "upstream said no"}, d.Keys[0])
			assert.Equal(t, fanoutdebug.KeyInFlight{Key: "slow", State: "running", Attempt: 1, Copies: 1,
				ForMS: 4000, AttemptMS: 4000}, d.Keys[1])
			assert.Equal(t, 4000.0, d.ElapsedMS)
			assert.Equal(t, -1.0, d.ETAMS, "no key done: no pace to tell")

			time.Sleep(7 * time.Second) // flaky's second attempt is running
			d = onlyRun(t, p)
			assert.Equal(t, "running", d.Keys[0].State)
			assert.Equal(t, 2, d.Keys[0].Attempt)
			assert.Equal(t, 1000.0, d.Keys[0].AttemptMS)
			close(release)
			<-done
		})
	})
	t.Run("the ETA follows the pace so far", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := fanoutdebug.New()
			tasks := make([]fanout.Task[int], 4)
			for i := range tasks {
				tasks[i] = fanout.NewTask(strconv.Itoa(i), func(ctx context.Context) (int, error) {
					time.Sleep(time.Second)
					return i, nil
				})
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = fanout.Run(context.Background(), tasks, fanout.WithLimit(1), fanout.WithObserver(p.Observer("eta")))
			}()
			time.Sleep(1500 * time.Millisecond)
			d := onlyRun(t, p)
			assert.Equal(t, 1, d.Done)
			assert.Equal(t, 4500.0, d.ETAMS, "1.5 s for 1 key: 4.5 s for the other 3")
			<-done
		})
	})
}

func TestBoundedMemory(t *testing.T) {
	t.Run("finished runs are kept in a ring", func(t *testing.T) {
		p := fanoutdebug.New(fanoutdebug.WithHistory(3))
		obs := p.Observer("ring")
		for range 10 {
			_, err := fanout.Run(t.Context(), []fanout.Task[int]{fanout.NewTask("a", func(context.Context) (int, error) { return 1, nil })},
				fanout.WithObserver(obs))
			require.NoError(t, err)
		}
		s := p.Snapshot()
		require.Len(t, s.Runs, 3)
		assert.Equal(t, []uint64{10, 9, 8}, []uint64{s.Runs[0].ID, s.Runs[1].ID, s.Runs[2].ID})
		_, ok := p.Run(7)
		assert.False(t, ok)
		assert.Equal(t, int64(10), s.Names[0].Keys, "the totals by name count every run")
	})
	t.Run("keys in flight beyond the cap are counted, not listed", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := fanoutdebug.New(fanoutdebug.WithKeysInFlight(2))
			release := make(chan struct{})
			tasks := make([]fanout.Task[int], 5)
			for i := range tasks {
				tasks[i] = fanout.NewTask(strconv.Itoa(i), func(context.Context) (int, error) { <-release; return i, nil })
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = fanout.Run(context.Background(), tasks, fanout.WithObserver(p.Observer("wide")))
			}()
			synctest.Wait()
			d := onlyRun(t, p)
			assert.Equal(t, 5, d.InFlight)
			assert.Len(t, d.Keys, 2)
			close(release)
			<-done
			d = onlyRun(t, p)
			assert.Equal(t, 0, d.InFlight)
			assert.Equal(t, 5, d.Succeeded)
		})
	})
	t.Run("only the last failures are kept", func(t *testing.T) {
		p := fanoutdebug.New(fanoutdebug.WithFailures(2))
		tasks := make([]fanout.Task[int], 5)
		for i := range tasks {
			tasks[i] = fanout.NewTask(strconv.Itoa(i), func(context.Context) (int, error) { return 0, errUpstream })
		}
		_, err := fanout.Run(t.Context(), tasks, fanout.WithLimit(1), fanout.WithObserver(p.Observer("fails")))
		require.Error(t, err)
		d := onlyRun(t, p)
		assert.Equal(t, 5, d.Failed)
		require.Len(t, d.Failures, 2)
		assert.Equal(t, []string{"4", "3"}, []string{d.Failures[0].Key, d.Failures[1].Key})
	})
	t.Run("runs beyond the cap are counted and do not mix with their parent", func(t *testing.T) {
		p := fanoutdebug.New(fanoutdebug.WithMaxRuns(1))
		obs := p.Observer("capped")
		outer := []fanout.Task[int]{fanout.NewTask("outer", func(ctx context.Context) (int, error) {
			inner := []fanout.Task[int]{
				fanout.NewTask("i1", func(context.Context) (int, error) { return 1, nil }),
				fanout.NewTask("i2", func(context.Context) (int, error) { return 0, errUpstream }),
			}
			_, _ = fanout.Run(ctx, inner, fanout.WithObserver(obs))
			return 1, nil
		})}
		_, err := fanout.Run(t.Context(), outer, fanout.WithObserver(obs))
		require.NoError(t, err)
		s := p.Snapshot()
		assert.Equal(t, int64(1), s.Untracked)
		d := onlyRun(t, p)
		assert.Equal(t, 1, d.Tasks)
		assert.Equal(t, 1, d.Succeeded)
		assert.Zero(t, d.Failed)
		assert.Empty(t, d.Failures)
	})
	t.Run("long keys and errors are clipped", func(t *testing.T) {
		p := fanoutdebug.New()
		long := string(make([]byte, 10_000))
		_, _ = fanout.Run(t.Context(), []fanout.Task[int]{fanout.NewTask("k", func(context.Context) (int, error) {
			return 0, errors.New(long)
		})}, fanout.WithObserver(p.Observer("clip")))
		d := onlyRun(t, p)
		require.Len(t, d.Failures, 1)
		assert.Less(t, len(d.Failures[0].Error), 600)
	})
}

func TestNestedRunsAreRunsOfTheirOwn(t *testing.T) {
	p := fanoutdebug.New()
	obs := p.Observer("nested")
	outer := make([]fanout.Task[int], 3)
	for i := range outer {
		outer[i] = fanout.NewTask(strconv.Itoa(i), func(ctx context.Context) (int, error) {
			inner := []fanout.Task[int]{
				fanout.NewTask("a", func(context.Context) (int, error) { return 1, nil }),
				fanout.NewTask("b", func(context.Context) (int, error) { return 0, errUpstream }),
			}
			rs, _ := fanout.Run(ctx, inner, fanout.WithObserver(obs))
			return rs.Succeeded(), nil
		})
	}
	// A second observer of the same page on the outer run counts it apart.
	_, err := fanout.Run(t.Context(), outer, fanout.WithObserver(obs), fanout.WithObserver(p.Observer("twice")))
	require.NoError(t, err)

	s := p.Snapshot()
	require.Len(t, s.Runs, 2, "the outer run, once per observer")
	require.Len(t, s.Nested, 3)
	tops := map[string]fanoutdebug.Run{}
	for _, r := range s.Runs {
		tops[r.Name] = r
		assert.Equal(t, 3, r.Tasks)
		assert.Equal(t, 3, r.Succeeded)
		assert.Zero(t, r.Failed)
		assert.Equal(t, 3, r.Attempts)
	}
	require.Contains(t, tops, "nested")
	require.Contains(t, tops, "twice")
	// The inner runs hang under the outer run's last observer of the page.
	parent := tops["twice"].ID
	assert.Equal(t, 3, tops["twice"].NestedRuns)
	for _, r := range s.Nested {
		assert.Equal(t, "nested", r.Name)
		assert.Equal(t, parent, r.Parent)
		assert.Equal(t, 2, r.Tasks)
		assert.Equal(t, 1, r.Failed)
	}
	d, ok := p.Run(parent)
	require.True(t, ok)
	assert.Len(t, d.Nested, 3)
	require.Len(t, s.Names, 2)
	assert.Equal(t, fanoutdebug.Name{Name: "nested", Finished: 4, Keys: 9, Failed: 3}, s.Names[0])
}

func TestNestedRunsDoNotPushOutTheOthers(t *testing.T) {
	p := fanoutdebug.New(fanoutdebug.WithHistory(2))
	obs := p.Observer("n")
	for range 2 {
		outer := make([]fanout.Task[int], 5)
		for i := range outer {
			outer[i] = fanout.NewTask(strconv.Itoa(i), func(ctx context.Context) (int, error) {
				_, err := fanout.Run(ctx, []fanout.Task[int]{fanout.NewTask("x", func(context.Context) (int, error) { return 1, nil })},
					fanout.WithObserver(obs))
				return i, err
			})
		}
		_, err := fanout.Run(t.Context(), outer, fanout.WithObserver(obs))
		require.NoError(t, err)
	}
	s := p.Snapshot()
	require.Len(t, s.Runs, 2)
	assert.Equal(t, 5, s.Runs[0].Tasks)
	assert.Equal(t, 5, s.Runs[1].Tasks)
	assert.Len(t, s.Nested, 2)
}

func TestLazyRunsCountTheirKeysAtTheEnd(t *testing.T) {
	p := fanoutdebug.New()
	src := func(yield func(fanout.Task[int]) bool) {
		for i := range 7 {
			if !yield(fanout.NewTask(strconv.Itoa(i), func(context.Context) (int, error) { return i, nil })) {
				return
			}
		}
	}
	seq, err := fanout.StreamSeq(t.Context(), iter.Seq[fanout.Task[int]](src), fanout.WithLimit(2),
		fanout.WithObserver(p.Observer("lazy")))
	require.NoError(t, err)
	for r := range seq {
		if r.Key == "0" {
			s := p.Snapshot()
			assert.Equal(t, -1, s.Runs[0].Tasks)
			assert.Equal(t, -1.0, s.Runs[0].ETAMS)
		}
	}
	d := onlyRun(t, p)
	assert.Equal(t, 7, d.Tasks)
	assert.Equal(t, 7, d.Succeeded)
}

type retryAfter struct{ d time.Duration }

func (e retryAfter) Error() string             { return "429 too many requests" }
func (e retryAfter) RetryAfter() time.Duration { return e.d }

func TestSharedLimits(t *testing.T) {
	p := fanoutdebug.New()
	sem := fanout.NewSemaphore(4)
	lim := rate.NewLimiter(50, 5)
	p.ShowSemaphore("workers", sem)
	p.ShowLimiter("requests", lim)
	p.ShowLimiter("cooldown", fanout.NewThrottle(lim))
	p.ShowLimiter("unlimited", rate.NewLimiter(rate.Inf, 1))
	p.ShowLimiter("own", limiterFunc(func(context.Context, int) error { return nil }))
	p.ShowSemaphore("workers", sem) // replaces, not adds

	inside := make(chan fanoutdebug.Snapshot, 1)
	_, err := fanout.Run(t.Context(), []fanout.Task[int]{fanout.NewTask("a", func(context.Context) (int, error) {
		inside <- p.Snapshot()
		return 1, nil
	})}, fanout.WithSemaphore(sem), fanout.WithRateLimit(lim))
	require.NoError(t, err)

	s := <-inside
	require.Len(t, s.Limits, 5)
	assert.Equal(t, fanoutdebug.Limit{Name: "workers", Kind: "semaphore", InUse: 1, Cap: 4}, s.Limits[0])
	assert.Equal(t, "rate", s.Limits[1].Kind)
	assert.Equal(t, 50.0, s.Limits[1].Rate)
	assert.Equal(t, 5, s.Limits[1].Burst)
	assert.InDelta(t, 4, s.Limits[1].Tokens, 0.5, "one token taken")
	assert.Equal(t, "throttle", s.Limits[2].Kind)
	assert.Equal(t, "no limit", s.Limits[3].Note)
	assert.Equal(t, fanoutdebug.Limit{Name: "own", Kind: "limiter", Note: "fanoutdebug_test.limiterFunc"}, s.Limits[4])
	assert.Zero(t, p.Snapshot().Limits[0].InUse)
}

type limiterFunc func(context.Context, int) error

func (f limiterFunc) WaitN(ctx context.Context, n int) error { return f(ctx, n) }

func TestServerDirectedWaitIsShown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := fanoutdebug.New()
		first := true
		_, err := fanout.Run(context.Background(), []fanout.Task[int]{fanout.NewTask("busy", func(context.Context) (int, error) {
			if first {
				first = false
				return 0, retryAfter{3 * time.Second}
			}
			return 1, nil
		})}, fanout.WithRetry(fanout.RetryPolicy{}), fanout.WithObserver(p.Observer("429")))
		require.NoError(t, err)
		w := p.Snapshot().ServerWait
		require.NotNil(t, w)
		assert.Equal(t, "busy", w.Key)
		assert.GreaterOrEqual(t, w.WaitMS, 3000.0)
		assert.Zero(t, w.LeftMS, "the wait is over once the run is")
		d := onlyRun(t, p)
		require.Len(t, d.RecentRetries, 1)
		assert.True(t, d.RecentRetries[0].ServerDirected)
		assert.Equal(t, "429 too many requests", d.RecentRetries[0].Error)
	})
}

func TestFleet(t *testing.T) {
	p := fanoutdebug.New()
	p.ShowFleet("nats", func() fanoutdebug.Fleet {
		return fanoutdebug.Fleet{Sent: 12, Replies: 10, Late: 1,
			Workers: []fanoutdebug.FleetWorker{{Name: "w1", Slots: 4, InUse: 3, Started: 9}},
			Batches: []fanoutdebug.FleetBatch{{ID: "b1", Queued: 5, Running: 3}}}
	})
	p.ShowFleet("broken", func() fanoutdebug.Fleet { panic("no connection") })
	s := p.Snapshot()
	require.Len(t, s.Fleets, 2)
	assert.Equal(t, int64(12), s.Fleets[0].Fleet.Sent)
	assert.Equal(t, 3, s.Fleets[0].Fleet.Workers[0].InUse)
	assert.Equal(t, "fanoutdebug: fleet report panicked: no connection", s.Fleets[1].Error)
}

func TestConcurrentRunsAndReaders(t *testing.T) {
	p := fanoutdebug.New(fanoutdebug.WithHistory(4))
	obs := p.Observer("busy")
	ctx, cancel := context.WithCancel(t.Context())
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for ctx.Err() == nil {
				for _, r := range p.Snapshot().Runs {
					p.Run(r.ID)
				}
			}
		})
	}
	var runs sync.WaitGroup
	for range 8 {
		runs.Go(func() {
			tasks := make([]fanout.Task[int], 50)
			for i := range tasks {
				tasks[i] = fanout.NewTask(strconv.Itoa(i), func(context.Context) (int, error) {
					if i%7 == 0 {
						return 0, errUpstream
					}
					return i, nil
				})
			}
			_, _ = fanout.Run(ctx, tasks, fanout.WithLimit(4), fanout.WithObserver(obs),
				fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Microsecond}),
				fanout.WithHedge(fanout.HedgePolicy{Delay: time.Microsecond}))
		})
	}
	runs.Wait()
	cancel()
	readers.Wait()
	s := p.Snapshot()
	assert.Len(t, s.Runs, 4)
	assert.Equal(t, fanoutdebug.Name{Name: "busy", Finished: 8, Keys: 400, Failed: 64, Retries: 64}, s.Names[0])
	for _, r := range s.Runs {
		assert.Equal(t, 50, r.Done)
		assert.Zero(t, r.InFlight)
	}
}
