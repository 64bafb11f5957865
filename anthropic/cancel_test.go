package fanoutanthropic_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// TestCancellationClosesTheRequest checks that whatever stops a call (the
// run's deadline, an aggregator that has decided, a hedge that lost, a
// consumer that stopped ranging) reaches the server: the handler of the
// request sees its context done, so the server stops generating and the
// connection is freed.
func TestCancellationClosesTheRequest(t *testing.T) {
	const slow = 30 * time.Second // a request cut short never waits this long
	// slowKeys makes the keys slow, and the others answer only once every
	// slow key's request has reached the server, so that there is a
	// request in flight to close.
	slowKeys := func(f *fakeAPI, slowOnes ...string) {
		f.latency = func(key string, _ int) time.Duration {
			if slices.Contains(slowOnes, key) {
				return slow
			}
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if !slices.ContainsFunc(slowOnes, func(k string) bool { return f.hitsOf(k) == 0 }) {
					break
				}
			}
			return 0
		}
	}
	tasksOf := func(f *fakeAPI, keys ...string) []fanout.Task[*anthropic.Message] {
		client := f.client()
		var tasks []fanout.Task[*anthropic.Message]
		for _, k := range keys {
			tasks = append(tasks, fanout.Task[*anthropic.Message]{Key: k, Do: fanoutanthropic.Message(client, ask(k, 10))})
		}
		return tasks
	}

	t.Run("the run's timeout", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		slowKeys(f, "a", "b")
		rs, err := fanout.Run(t.Context(), tasksOf(f, "a", "b"), fanout.WithTimeout(300*time.Millisecond))
		require.Error(t, err)
		for _, r := range rs.All() {
			assert.ErrorIs(t, r.Err, fanout.ErrRunTimeout)
		}
		assert.Empty(t, f.waitCancelled(5*time.Second, "a", "b"))
	})

	t.Run("a task's timeout", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		slowKeys(f, "a")
		_, err := fanout.Run(t.Context(), tasksOf(f, "a"), fanout.WithTaskTimeout(300*time.Millisecond))
		assert.ErrorIs(t, err, fanout.ErrTaskTimeout)
		assert.Empty(t, f.waitCancelled(5*time.Second, "a"))
	})

	t.Run("First has its winner", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		slowKeys(f, "s1", "s2")
		win, err := fanout.Gather(t.Context(), tasksOf(f, "s1", "fast", "s2"), fanout.First[*anthropic.Message]())
		require.NoError(t, err)
		assert.Equal(t, "fast", win.Key)
		assert.Empty(t, f.waitCancelled(5*time.Second, "s1", "s2"))
	})

	t.Run("a Vote has decided", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		slowKeys(f, "v4", "v5")
		f.answer = func(string) string { return "Yes." }
		pick := func(m *anthropic.Message) string { return strings.TrimSuffix(m.Content[0].Text, ".") }
		tally, err := fanout.Gather(t.Context(), tasksOf(f, "v1", "v4", "v2", "v5", "v3"), fanout.Vote(pick))
		require.NoError(t, err)
		assert.Equal(t, "Yes", tally.Winner)
		assert.True(t, tally.Decided)
		assert.Empty(t, f.waitCancelled(5*time.Second, "v4", "v5"))
	})

	t.Run("a hedge lost", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		f.latency = func(_ string, hit int) time.Duration {
			if hit == 1 {
				return slow
			}
			return 0
		}
		rs, err := fanout.Run(t.Context(), tasksOf(f, "h"), fanout.WithHedge(fanout.HedgePolicy{Delay: 50 * time.Millisecond}))
		require.NoError(t, err)
		r, _ := rs.Get("h")
		assert.Equal(t, 1, r.Hedges)
		assert.Empty(t, f.waitCancelled(5*time.Second, "h"), "the first copy's request is closed")
	})

	t.Run("the Stream's consumer stopped", func(t *testing.T) {
		f := newFakeAPI()
		defer f.Close()
		slowKeys(f, "s1", "s2")
		seq, err := fanout.Stream(t.Context(), tasksOf(f, "s1", "s2", "fast"))
		require.NoError(t, err)
		for r := range seq {
			assert.Equal(t, "fast", r.Key)
			break
		}
		assert.Empty(t, f.waitCancelled(5*time.Second, "s1", "s2"))
	})
}
