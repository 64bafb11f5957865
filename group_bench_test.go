package fanout_test

import (
	"context"
	"sync"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/gofanout/fanout"
)

// BenchmarkGroup is the cost of a Group per task: NewGroup, a Go per
// task and Wait, under WithLimit(benchLimit). With add=caller the caller
// adds every task, as Run is given them; with add=tasks each task adds the
// next two of a binary tree, as a crawl adds the links it finds.
// BenchmarkErrgroupMap and BenchmarkRun are its baselines: run them
// together.
func BenchmarkGroup(b *testing.B) {
	eachSize(b, "add=caller/", func(b *testing.B, tasks []fanout.Task[int]) {
		ctx := context.Background()
		g, err := fanout.NewGroup[int](ctx, fanout.WithLimit(benchLimit))
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range tasks {
			if err := g.Go(t.Key, t.Do); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := g.Wait(); err != nil {
			b.Fatal(err)
		}
	})
	eachSize(b, "add=tasks/", func(b *testing.B, tasks []fanout.Task[int]) {
		n := len(tasks)
		ctx := context.Background()
		g, err := fanout.NewGroup[int](ctx, fanout.WithLimit(benchLimit))
		if err != nil {
			b.Fatal(err)
		}
		var add func(i int)
		add = func(i int) {
			if err := g.Go(tasks[i].Key, func(context.Context) (int, error) {
				for _, child := range []int{2*i + 1, 2*i + 2} {
					if child < n {
						add(child)
					}
				}
				return 1, nil
			}); err != nil {
				b.Fatal(err)
			}
		}
		add(0)
		if rs, err := g.Wait(); err != nil || rs.Len() != n {
			b.Fatal(rs.Len(), err)
		}
	})
}

// BenchmarkErrgroupMap is the errgroup code a Group replaces when the
// caller adds every task: SetLimit(benchLimit), each task's value or
// error into maps by key behind a mutex. It is BenchmarkHandRolled
// without the per-task timeout, which a Group without WithTaskTimeout
// does not set either.
func BenchmarkErrgroupMap(b *testing.B) {
	eachSize(b, "", func(b *testing.B, tasks []fanout.Task[int]) {
		n := len(tasks)
		ctx := context.Background()
		var mu sync.Mutex
		vals := make(map[string]int, n)
		errs := make(map[string]error)
		var g errgroup.Group
		g.SetLimit(benchLimit)
		for _, t := range tasks {
			g.Go(func() error {
				v, err := t.Do(ctx)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs[t.Key] = err
				} else {
					vals[t.Key] = v
				}
				return nil
			})
		}
		_ = g.Wait()
	})
}
