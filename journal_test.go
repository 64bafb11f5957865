package fanout_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

func TestJournal(t *testing.T) {
	t.Run("a rerun calls Do only for the keys without a recorded success", func(t *testing.T) {
		j := fanout.NewMemoryJournal()
		var calls atomic.Int32
		flakyOnce := map[string]bool{"b": true}
		tasks := func() []fanout.Task[string] {
			var ts []fanout.Task[string]
			for _, k := range []string{"a", "b", "c"} {
				ts = append(ts, fanout.Task[string]{Key: k, Do: func(ctx context.Context) (string, error) {
					calls.Add(1)
					fanout.Spend(ctx, fanout.Cost{Tokens: 10})
					if flakyOnce[k] {
						flakyOnce[k] = false
						return "", errors.New("down")
					}
					return "v" + k, nil
				}})
			}
			return ts
		}
		_, err := fanout.Run(context.Background(), tasks(), fanout.WithJournal(j), fanout.WithLimit(1))
		require.Error(t, err)
		require.Equal(t, int32(3), calls.Load())

		rs, err := fanout.Run(context.Background(), tasks(), fanout.WithJournal(j), fanout.WithLimit(1))
		require.NoError(t, err)
		assert.Equal(t, int32(4), calls.Load(), "only b ran again")
		assert.Equal(t, map[string]string{"a": "va", "b": "vb", "c": "vc"}, rs.Values())
		a, _ := rs.Get("a")
		assert.True(t, a.Replayed)
		assert.Equal(t, fanout.Cost{Tokens: 10}, a.Cost, "the recorded cost comes back")
		b, _ := rs.Get("b")
		assert.False(t, b.Replayed)
	})
	t.Run("a journal that cannot look up runs nothing", func(t *testing.T) {
		var calls atomic.Int32
		rs, err := fanout.Run(context.Background(), []fanout.Task[int]{{Key: "a", Do: func(context.Context) (int, error) {
			calls.Add(1)
			return 1, nil
		}}}, fanout.WithJournal(brokenJournal{}))
		require.Error(t, err)
		assert.Zero(t, calls.Load())
		r, _ := rs.Get("a")
		assert.EqualError(t, r.Err, "fanout: journal: disk gone")
	})
	t.Run("skipped keys are not recorded", func(t *testing.T) {
		j := fanout.NewMemoryJournal()
		_, _ = fanout.Run(context.Background(), []fanout.Task[int]{failing[int]("a", errors.New("x")), value("b", 2)},
			fanout.WithJournal(j), fanout.WithFailFast(), fanout.WithLimit(1))
		_, ok, _ := j.Lookup(context.Background(), "b")
		assert.False(t, ok)
		e, ok, _ := j.Lookup(context.Background(), "a")
		require.True(t, ok)
		assert.Equal(t, fanout.Entry{Err: "x", Kind: "error", Attempts: 1}, e)
	})
}

type brokenJournal struct{}

func (brokenJournal) Lookup(context.Context, string) (fanout.Entry, bool, error) {
	return fanout.Entry{}, false, errors.New("disk gone")
}
func (brokenJournal) Record(context.Context, string, fanout.Entry) error {
	return errors.New("disk gone")
}
