package fanoutdebug_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"unsafe"
	"weak"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutdebug "github.com/gofanout/fanout/debug"
)

// maxKept is the most bytes of a key or an error the page keeps: 500 and
// an ellipsis.
const maxKept = 500 + len("…")

func TestThousandsOfRunsKeepTheLastFew(t *testing.T) {
	const runs, history = 3000, 7
	p := fanoutdebug.New(fanoutdebug.WithHistory(history))
	obs := p.Observer("many")
	outer := []fanout.Task[int]{fanout.NewTask("outer", func(ctx context.Context) (int, error) {
		for range runs {
			_, err := fanout.Run(ctx, []fanout.Task[int]{fanout.NewTask("in", func(context.Context) (int, error) { return 1, nil })},
				fanout.WithObserver(obs))
			if err != nil {
				return 0, err
			}
		}
		return 1, nil
	})}
	one := []fanout.Task[int]{fanout.NewTask("top", func(context.Context) (int, error) { return 1, nil })}
	for range runs {
		_, err := fanout.Run(t.Context(), one, fanout.WithObserver(obs))
		require.NoError(t, err)
	}
	_, err := fanout.Run(t.Context(), outer, fanout.WithObserver(obs))
	require.NoError(t, err)

	s := p.Snapshot()
	assert.Len(t, s.Runs, history)
	assert.Len(t, s.Nested, history)
	kept := 0
	for id := range uint64(2*runs + 2) {
		if _, ok := p.Run(id); ok {
			kept++
		}
	}
	assert.Equal(t, 2*history, kept, "every run the page answers for is listed")
	require.Len(t, s.Names, 1)
	assert.Equal(t, 2*runs+1, s.Names[0].Finished, "the totals count every run")
	d, ok := p.Run(s.Runs[0].ID)
	require.True(t, ok)
	assert.Len(t, d.Nested, history, "a run's nested runs are those the page keeps")
	assert.Equal(t, runs, d.NestedRuns)
}

func TestARunOfAHundredThousandKeys(t *testing.T) {
	const keys, limit = 100_000, 2000
	p := fanoutdebug.New()
	gate := make(chan struct{})
	var started sync.WaitGroup
	started.Add(limit)
	var once sync.Map
	tasks := make([]fanout.Task[int], keys)
	for i := range tasks {
		tasks[i] = fanout.NewTask(strconv.Itoa(i), func(context.Context) (int, error) {
			if i < limit {
				if _, dup := once.LoadOrStore(i, true); !dup {
					started.Done()
				}
				<-gate
			}
			if i%10 == 0 {
				return 0, fmt.Errorf("key %d: %s", i, strings.Repeat("e", 2000))
			}
			return i, nil
		})
	}
	done := make(chan *fanout.Results[int], 1)
	go func() {
		res, _ := fanout.Run(context.Background(), tasks, fanout.WithLimit(limit), fanout.WithObserver(p.Observer("wide")))
		done <- res
	}()
	started.Wait()
	d := onlyRun(t, p)
	assert.Equal(t, limit, d.InFlight, "every key in flight is counted")
	assert.Len(t, d.Keys, 100, "and at most 100 listed")
	rec := get(p, fmt.Sprintf("/api/run?id=%d", d.ID))
	require.Equal(t, 200, rec.Code)
	assert.Less(t, rec.Body.Len(), 64<<10, "one read of a wide run is small")
	close(gate)
	res := <-done

	d = onlyRun(t, p)
	assert.Equal(t, keys, d.Done)
	assert.Equal(t, res.Succeeded(), d.Succeeded)
	assert.Equal(t, keys/10, d.Failed)
	assert.Zero(t, d.InFlight)
	assert.Empty(t, d.Keys)
	assert.Len(t, d.Failures, 20)
	assert.Len(t, d.Slowest, 10)
	for _, f := range d.Failures {
		assert.LessOrEqual(t, len(f.Error), maxKept)
	}
}

func TestHugeKeysAndErrorsAreClipped(t *testing.T) {
	p := fanoutdebug.New(fanoutdebug.WithFailures(5))
	huge := strings.Repeat("é", 1<<19) // 1 MB, two bytes a rune: clipping must not split one
	tasks := make([]fanout.Task[int], 50)
	for i := range tasks {
		tasks[i] = fanout.NewTask(strconv.Itoa(i)+huge, func(context.Context) (int, error) {
			return 0, errors.New(huge + strconv.Itoa(i))
		})
	}
	_, err := fanout.Run(t.Context(), tasks, fanout.WithLimit(4), fanout.WithObserver(p.Observer(huge)),
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: 1}))
	require.Error(t, err)

	d := onlyRun(t, p)
	assert.Len(t, d.Failures, 5)
	assert.Len(t, d.RecentRetries, 5)
	assert.Len(t, d.Slowest, 10)
	kept := []string{d.Name}
	for _, f := range d.Failures {
		kept = append(kept, f.Key, f.Error)
	}
	for _, r := range d.RecentRetries {
		kept = append(kept, r.Key, r.Error)
	}
	for _, k := range d.Slowest {
		kept = append(kept, k.Key)
	}
	for _, s := range kept {
		assert.LessOrEqual(t, len(s), maxKept)
		assert.True(t, strings.HasSuffix(s, "é…"), "cut between runes, and marked")
	}
	rec := get(p, "/api/run?id=1")
	require.Equal(t, 200, rec.Code)
	assert.Less(t, rec.Body.Len(), 64<<10)
}

// A key or an error message is often a slice of something much larger:
// a line of a file, the start of a response's body. The page keeps a copy
// of the bytes it shows, never the whole it was cut from.
func TestKeptTextHoldsNoLargerString(t *testing.T) {
	p := fanoutdebug.New()
	obs := p.Observer("slices")
	keys := weakRun(t, obs, func(big string, i int) (string, error) { return big[i : i+8], nil })
	errs := weakRun(t, obs, func(big string, i int) (string, error) {
		return strconv.Itoa(i), sliceError{big[i : i+8]}
	})
	for range 3 {
		runtime.GC()
	}
	assert.Nil(t, keys.Value(), "a key's source is let go")
	assert.Nil(t, errs.Value(), "an error message's source is let go")
	runtime.KeepAlive(p)
	d, ok := p.Run(2)
	require.True(t, ok)
	assert.Len(t, d.Failures, 10)
}

type sliceError struct{ msg string }

func (e sliceError) Error() string { return e.msg }

// weakRun runs 10 keys whose key and error make, from a string of 8 MB
// that only the run holds, and returns a weak pointer to that string.
func weakRun(t *testing.T, obs *fanout.Observer, keyOf func(big string, i int) (string, error)) weak.Pointer[byte] {
	big := strings.Repeat("0123456789abcdef", 1<<19)
	tasks := make([]fanout.Task[int], 10)
	for i := range tasks {
		key, err := keyOf(big, i)
		tasks[i] = fanout.NewTask(key, func(context.Context) (int, error) {
			if err != nil {
				return 0, err
			}
			return i, nil
		})
	}
	_, err := fanout.Run(t.Context(), tasks, fanout.WithObserver(obs),
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2, InitialInterval: 1}))
	require.NotErrorIs(t, err, fanout.ErrDuplicateKey)
	return weak.Make(unsafe.StringData(big))
}

// Counted by the heap: a thousand runs of failures with large messages
// leave what the page's caps allow, and no more.
func TestManyFailingRunsLeaveABoundedHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("churns 80 MB")
	}
	p := fanoutdebug.New()
	obs := p.Observer("heap")
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	run := func(n int) {
		for r := range n {
			tasks := make([]fanout.Task[int], 20)
			for i := range tasks {
				tasks[i] = fanout.NewTask(fmt.Sprintf("run %d key %d %s", r, i, strings.Repeat("k", 4000)),
					func(context.Context) (int, error) {
						return 0, errors.New(strings.Repeat("x", 4000))
					})
			}
			_, _ = fanout.Run(t.Context(), tasks, fanout.WithObserver(obs), fanout.WithLimit(4))
		}
	}
	run(50) // fill the ring of finished runs
	before := heap()
	run(1000)
	after := heap()
	runtime.KeepAlive(p)
	t.Logf("heap: %d KB after 50 runs, %d KB after 1 050", before>>10, after>>10)
	// 1 000 runs kept whole would hold 160 MB; the page keeps 50 runs of
	// at most 20 failures, 10 slowest keys and 20 retries of 500 bytes.
	assert.Less(t, int64(after)-int64(before), int64(4<<20))
}

func TestASnapshotListsAtMost200RunningRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const running = 250
		p := fanoutdebug.New(fanoutdebug.WithMaxRuns(1000))
		obs := p.Observer("crowd")
		release := make(chan struct{})
		var runs sync.WaitGroup
		for range running {
			runs.Go(func() {
				_, _ = fanout.Run(context.Background(), []fanout.Task[int]{
					fanout.NewTask("a", func(context.Context) (int, error) { <-release; return 1, nil }),
				}, fanout.WithObserver(obs))
			})
		}
		synctest.Wait()
		s := p.Snapshot()
		assert.Len(t, s.Runs, 200)
		assert.Equal(t, running-200, s.Hidden)
		assert.Zero(t, s.Untracked, "all are followed")
		assert.Equal(t, uint64(running), s.Runs[0].ID, "the newest first")
		close(release)
		runs.Wait()
	})
}
