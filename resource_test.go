package fanout_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/gofanout/fanout"
)

// perResource counts the tasks in flight per resource, and the most ever.
type perResource struct {
	mu      sync.Mutex
	now     map[string]int
	most    map[string]int
	all     int
	mostAll int
	started map[string][]time.Duration
	begin   time.Time
}

func newPerResource() *perResource {
	return &perResource{now: map[string]int{}, most: map[string]int{}, started: map[string][]time.Duration{}, begin: time.Now()}
}

func (p *perResource) task(key, resource string, d time.Duration) fanout.Task[int] {
	return fanout.Task[int]{Key: key, Resource: resource, Do: func(context.Context) (int, error) {
		p.mu.Lock()
		p.now[resource]++
		p.all++
		p.most[resource] = max(p.most[resource], p.now[resource])
		p.mostAll = max(p.mostAll, p.all)
		p.started[resource] = append(p.started[resource], time.Since(p.begin))
		p.mu.Unlock()
		time.Sleep(d)
		p.mu.Lock()
		p.now[resource]--
		p.all--
		p.mu.Unlock()
		return 1, nil
	}}
}

func TestResourceLimits(t *testing.T) {
	hosts := func(p *perResource) []fanout.Task[int] {
		var tasks []fanout.Task[int]
		for i := range 12 { // host a first in input order: it must not hold up b and c
			tasks = append(tasks, p.task(fmt.Sprint("a", i), "a", time.Second))
		}
		for i := range 6 {
			tasks = append(tasks, p.task(fmt.Sprint("b", i), "b", time.Second), p.task(fmt.Sprint("c", i), "c", time.Second))
		}
		return tasks
	}
	t.Run("n at once overall, m per resource, no head-of-line blocking", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newPerResource()
			_, err := fanout.Run(context.Background(), hosts(p), fanout.WithLimit(6), fanout.WithResourceLimit(2))
			require.NoError(t, err)
			assert.Equal(t, map[string]int{"a": 2, "b": 2, "c": 2}, p.most)
			assert.Equal(t, 6, p.mostAll)
			assert.Equal(t, time.Duration(0), p.started["b"][0], "b started at once, though a came first")
			assert.Equal(t, 6*time.Second, time.Since(p.begin), "12 of a, 2 at a time")
		})
	})
	t.Run("a Group keeps the same limits", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newPerResource()
			g, err := fanout.NewGroup[int](context.Background(), fanout.WithLimit(6), fanout.WithResourceLimit(2),
				fanout.ForResource("c", fanout.WithLimit(1)))
			require.NoError(t, err)
			for _, task := range hosts(p) {
				require.NoError(t, g.GoTask(task))
			}
			_, err = g.Wait()
			require.NoError(t, err)
			assert.Equal(t, map[string]int{"a": 2, "b": 2, "c": 1}, p.most)
			assert.Equal(t, time.Duration(0), p.started["c"][0])
		})
	})
	t.Run("a lazy source takes its resource's room in turn", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newPerResource()
			seq, err := fanout.StreamSeq(context.Background(), slices.Values(hosts(p)), fanout.WithLimit(6), fanout.WithResourceLimit(3))
			require.NoError(t, err)
			n := 0
			for range seq {
				n++
			}
			assert.Equal(t, 24, n)
			assert.Equal(t, 3, p.most["a"])
		})
	})
	t.Run("Priority orders the starts among the resources with room", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newPerResource()
			tasks := []fanout.Task[int]{p.task("low", "x", time.Second), p.task("high", "x", time.Second)}
			tasks[1].Priority = 5
			var order []string
			obs := &fanout.Observer{TaskStart: func(_ context.Context, key string) { order = append(order, key) }}
			_, err := fanout.Run(context.Background(), tasks, fanout.WithResourceLimit(1), fanout.WithObserver(obs))
			require.NoError(t, err)
			assert.Equal(t, []string{"high", "low"}, order)
		})
	})
	t.Run("each resource waits on its own rate", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newPerResource()
			var tasks []fanout.Task[int]
			for i := range 5 {
				tasks = append(tasks, p.task(fmt.Sprint("s", i), "small", 0), p.task(fmt.Sprint("l", i), "large", 0))
			}
			_, err := fanout.Run(context.Background(), tasks,
				fanout.ForResource("small", fanout.WithRequestLimit(rate.NewLimiter(10, 1))),
				fanout.ForResource("large", fanout.WithRequestLimit(rate.NewLimiter(1, 1))))
			require.NoError(t, err)
			assert.Equal(t, 400*time.Millisecond, slices.Max(p.started["small"]))
			assert.Equal(t, 4*time.Second, slices.Max(p.started["large"]))
		})
	})
	t.Run("a task that calls Goexit gives its resource's room back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := newPerResource()
			exit := fanout.Task[int]{Key: "exit", Resource: "a", Do: func(context.Context) (int, error) { runtime.Goexit(); return 0, nil }}
			rs, _ := fanout.Run(context.Background(), []fanout.Task[int]{exit, p.task("next", "a", time.Second)},
				fanout.WithResourceLimit(1))
			r, _ := rs.Get("next")
			assert.NoError(t, r.Err)
		})
	})
	t.Run("bad resource options are refused", func(t *testing.T) {
		tests := []struct {
			give fanout.Option
			want string
		}{
			{fanout.ForResource("", fanout.WithLimit(1)), `fanout: ForResource: empty resource name`},
			{fanout.ForResource("m", fanout.WithRetry(fanout.RetryPolicy{})), `fanout: ForResource("m"): only WithLimit, WithRateLimit and WithRequestLimit apply to a resource`},
			{fanout.ForResource("m", fanout.WithLimit(-1)), `fanout: WithLimit(-1): limit must not be negative`},
			{fanout.WithResourceLimit(0), `fanout: WithResourceLimit(0): limit must be positive`},
		}
		for _, tt := range tests {
			_, err := fanout.Run(context.Background(), []fanout.Task[int]{value("a", 1)}, tt.give)
			assert.EqualError(t, err, tt.want)
		}
	})
}
