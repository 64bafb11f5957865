package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

func TestMergeMap(t *testing.T) {
	boom := errors.New("boom")
	m, err := fanout.Gather(context.Background(), []fanout.Task[int]{
		value("a", 1), failing[int]("b", boom), value("c", 3),
	}, fanout.MergeMap[int]())
	assert.Equal(t, map[string]int{"a": 1, "c": 3}, m)
	assert.EqualError(t, err, `fanout: task "b": boom`)
}

func TestVote(t *testing.T) {
	t.Run("decides as soon as no other outcome can win, and cancels the rest", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var cancelled atomic.Int32
			answer := func(key, text string, d time.Duration) fanout.Task[string] {
				return fanout.Task[string]{Key: key, Do: func(ctx context.Context) (string, error) {
					select {
					case <-time.After(d):
						return text, nil
					case <-ctx.Done():
						cancelled.Add(1)
						return "", ctx.Err()
					}
				}}
			}
			start := time.Now()
			tally, err := fanout.Gather(context.Background(), []fanout.Task[string]{
				answer("s1", "The answer is B.", time.Second),
				answer("s2", "b", 2*time.Second),
				answer("s3", "A", 3*time.Second),
				answer("s4", "B!", 4*time.Second),
				answer("s5", "A", 10*time.Second),
			}, fanout.Vote(parseChoice))
			require.NoError(t, err)
			assert.Equal(t, 4*time.Second, time.Since(start), "after s4, B has 3 of 5: A cannot catch up")
			assert.Equal(t, fanout.Tally[string]{
				Winner: "B", Votes: 3, Total: 4, Share: 0.75,
				Counts:  map[string]float64{"A": 1, "B": 3},
				Decided: true, Stopped: 1,
			}, tally)
			assert.Equal(t, int32(1), cancelled.Load())
		})
	})
	t.Run("decides before the next task can start", func(t *testing.T) {
		var calls atomic.Int32
		tasks := make([]fanout.Task[string], 5)
		for i := range tasks {
			tasks[i] = fanout.Task[string]{Key: fmt.Sprint("s", i), Do: func(context.Context) (string, error) {
				calls.Add(1)
				return "A", nil
			}}
		}
		tally, err := fanout.Gather(context.Background(), tasks, fanout.Vote(parseChoice), fanout.WithLimit(1))
		require.NoError(t, err)
		assert.Equal(t, int32(3), calls.Load(), "three votes decide five; the last two never start")
		assert.Equal(t, 2, tally.Stopped)
	})
	t.Run("breaks ties for the earliest task in input order", func(t *testing.T) {
		for range 20 {
			tally, err := fanout.Gather(context.Background(), []fanout.Task[string]{
				value("x", "A"), value("y", "B"), value("z", "B"), value("w", "A"),
			}, fanout.Vote(parseChoice))
			require.NoError(t, err)
			assert.Equal(t, "A", tally.Winner)
			assert.Equal(t, 0.5, tally.Share)
			assert.False(t, tally.Decided)
		}
	})
	t.Run("failures cast no vote", func(t *testing.T) {
		tally, err := fanout.Gather(context.Background(), []fanout.Task[string]{
			value("x", "A"), failing[string]("y", errors.New("down")), failing[string]("z", errors.New("down")),
		}, fanout.Vote(parseChoice))
		require.NoError(t, err)
		assert.Equal(t, "A", tally.Winner)
		assert.Equal(t, 1.0, tally.Share)
		assert.Equal(t, 2, tally.Failed)
	})
	t.Run("no successful vote is an error naming the failures", func(t *testing.T) {
		_, err := fanout.Gather(context.Background(), []fanout.Task[string]{
			failing[string]("x", errors.New("down")),
		}, fanout.Vote(parseChoice))
		assert.EqualError(t, err, "fanout: vote: no key succeeded: task \"x\": down")
	})
}

func TestWeightedVote(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		weighted := func(key, choice string, d time.Duration, w float64) fanout.Task[string] {
			t := sleeping(key, d, choice)
			t.Weight = w
			return t
		}
		tasks := []fanout.Task[string]{
			weighted("expert", "A", 3*time.Second, 3), weighted("n1", "B", time.Second, 1), weighted("n2", "B", 2*time.Second, 1),
		}
		tally, err := fanout.Gather(context.Background(), tasks, fanout.WeightedVote(parseChoice))
		require.NoError(t, err)
		assert.Equal(t, "A", tally.Winner, "B's 2 votes could still be overtaken by the expert's 3")
		assert.Equal(t, 3.0, tally.Votes)
		assert.Equal(t, 0.6, tally.Share)
		assert.False(t, tally.Decided)

		plain, err := fanout.Gather(context.Background(), tasks, fanout.Vote(parseChoice))
		require.NoError(t, err)
		assert.Equal(t, "B", plain.Winner, "Vote ignores weights")
		assert.True(t, plain.Decided)
		assert.Equal(t, 1, plain.Stopped)

		// Over a lazy source the vote never sees the tasks up front: each
		// Result carries its task's weight.
		lazy, err := fanout.GatherSeq(context.Background(), slices.Values(tasks), fanout.WeightedVote(parseChoice), fanout.WithLimit(3))
		require.NoError(t, err)
		assert.Equal(t, "A", lazy.Winner, "GatherSeq counts the expert's 3 votes")
		assert.Equal(t, 3.0, lazy.Votes)
		assert.Equal(t, 5.0, lazy.Total)

		g, err := fanout.NewGroup[string](context.Background())
		require.NoError(t, err)
		for _, task := range tasks {
			require.NoError(t, g.GoTask(task))
		}
		grouped, err := fanout.GatherGroup(g, fanout.WeightedVote(parseChoice))
		require.NoError(t, err)
		assert.Equal(t, "A", grouped.Winner, "GatherGroup counts the expert's 3 votes")
		assert.Equal(t, 5.0, grouped.Total)
	})
}

// parseChoice maps a free-text answer to the letter it names.
func parseChoice(s string) string {
	for _, f := range strings.Fields(strings.ToUpper(s)) {
		f = strings.Trim(f, ".!")
		if f == "A" || f == "B" {
			return f
		}
	}
	return "?"
}

func TestReduce(t *testing.T) {
	sum, err := fanout.Gather(context.Background(), []fanout.Task[int]{
		value("a", 1), value("b", 2), failing[int]("c", errors.New("x")), value("d", 4),
	}, fanout.Reduce(0, func(acc int, r fanout.Result[int]) int {
		if r.Err != nil {
			return acc + 100
		}
		return acc + r.Value
	}))
	require.NoError(t, err)
	assert.Equal(t, 107, sum)
}

func TestFirst(t *testing.T) {
	t.Run("the first success wins and the rest are cancelled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			r, err := fanout.Gather(context.Background(), []fanout.Task[string]{
				sleeping("slow", time.Hour, "s"),
				{Key: "broken", Do: func(context.Context) (string, error) { return "", errors.New("down") }},
				sleeping("mirror", 2*time.Second, "m"),
			}, fanout.First[string]())
			require.NoError(t, err)
			assert.Equal(t, "mirror", r.Key)
			assert.Equal(t, "m", r.Value)
			assert.Equal(t, 2*time.Second, time.Since(start))
		})
	})
	t.Run("no success is an error", func(t *testing.T) {
		_, err := fanout.Gather(context.Background(), []fanout.Task[string]{failing[string]("a", errors.New("down"))}, fanout.First[string]())
		assert.EqualError(t, err, "fanout: First: no key succeeded: task \"a\": down")
	})
}

func TestQuorum(t *testing.T) {
	t.Run("stops at k successes", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			rs, err := fanout.Gather(context.Background(), []fanout.Task[int]{
				sleeping("r1", time.Second, 1), sleeping("r2", 3*time.Second, 2),
				sleeping("r3", 2*time.Second, 3), sleeping("r4", time.Hour, 4),
			}, fanout.Quorum[int](2))
			require.NoError(t, err)
			assert.Equal(t, 2*time.Second, time.Since(start))
			require.Len(t, rs, 2)
			assert.Equal(t, "r1", rs[0].Key)
			assert.Equal(t, "r3", rs[1].Key)
		})
	})
	t.Run("stops as soon as k can no longer be reached", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			down := errors.New("down")
			_, err := fanout.Gather(context.Background(), []fanout.Task[int]{
				failing[int]("r1", down), failing[int]("r2", down), sleeping("r3", time.Hour, 3),
			}, fanout.Quorum[int](2))
			assert.ErrorIs(t, err, down)
			assert.ErrorContains(t, err, "fanout: quorum of 2 not reached, 0 succeeded")
			assert.Zero(t, time.Since(start))
		})
	})
}

func TestCollect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		summary, err := fanout.Gather(context.Background(), []fanout.Task[string]{
			sleeping("metal", 3*time.Second, "strong"),
			sleeping("polymer", time.Second, "light"),
			failing[string]("wood", errors.New("no data")),
		}, fanout.Collect(func(_ context.Context, rs []fanout.Result[string]) (string, error) {
			var parts []string
			for _, r := range rs {
				if r.Err != nil {
					parts = append(parts, r.Key+"=error")
					continue
				}
				parts = append(parts, r.Key+"="+r.Value)
			}
			return strings.Join(parts, ","), nil
		}))
		require.NoError(t, err)
		assert.Equal(t, "metal=strong,polymer=light,wood=error", summary, "in input order")
	})
}

// decideAt is a user aggregator: it decides after n results and records
// every Result it is given.
type decideAt struct {
	n    int
	seen []fanout.Result[int]
}

func (d *decideAt) Add(r fanout.Result[int]) bool {
	d.seen = append(d.seen, r)
	return len(d.seen) >= d.n
}

func (d *decideAt) Result(context.Context) (int, error) { return len(d.seen), nil }

func TestGatherAccountsForEveryKeyAfterDeciding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tasks := []fanout.Task[int]{sleeping("a", time.Second, 1)}
		for i := range 5 {
			tasks = append(tasks, sleeping(fmt.Sprint("slow", i), time.Hour, i))
		}
		agg := &decideAt{n: 1}
		n, err := fanout.Gather(context.Background(), tasks, agg, fanout.WithLimit(3))
		require.NoError(t, err)
		assert.Equal(t, 6, n, "every key reached Add")
		for _, r := range agg.seen[1:] {
			assert.ErrorIs(t, r.Err, fanout.ErrStopped, r.Key)
		}
	})
}

func TestGatherNilAggregator(t *testing.T) {
	_, err := fanout.Gather[int, int](context.Background(), []fanout.Task[int]{value("a", 1)}, nil)
	assert.EqualError(t, err, "fanout: Gather: nil Aggregator")
}

func TestGatherRejectsBadAggregatorsBeforeAnyTaskStarts(t *testing.T) {
	t.Run("Quorum of zero", func(t *testing.T) {
		rejected(t, fanout.Quorum[int](0), "fanout: Quorum(0): k must be between 1 and the 2 tasks")
	})
	t.Run("Quorum of more than the tasks", func(t *testing.T) {
		rejected(t, fanout.Quorum[int](3), "fanout: Quorum(3): k must be between 1 and the 2 tasks")
	})
	t.Run("Vote without pick", func(t *testing.T) {
		rejected(t, fanout.Vote[int, int](nil), "fanout: Vote: nil pick")
	})
	t.Run("WeightedVote without pick", func(t *testing.T) {
		rejected(t, fanout.WeightedVote[int, int](nil), "fanout: WeightedVote: nil pick")
	})
	t.Run("Reduce without fn", func(t *testing.T) {
		rejected(t, fanout.Reduce[int, int](0, nil), "fanout: Reduce: nil fn")
	})
	t.Run("Collect without fn", func(t *testing.T) {
		rejected(t, fanout.Collect[int, int](nil), "fanout: Collect: nil fn")
	})
}

// rejected asserts that Gather refuses agg with want before starting any
// of its two tasks.
func rejected[R any](t *testing.T, agg fanout.Aggregator[int, R], want string) {
	t.Helper()
	var started atomic.Int32
	task := func(key string) fanout.Task[int] {
		return fanout.Task[int]{Key: key, Do: func(context.Context) (int, error) { started.Add(1); return 1, nil }}
	}
	_, err := fanout.Gather(context.Background(), []fanout.Task[int]{task("a"), task("b")}, agg)
	assert.EqualError(t, err, want)
	assert.Zero(t, started.Load(), "no task started")
}
