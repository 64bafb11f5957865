package fanoutnats_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// calls counts Do calls by key.
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func newCalls() *calls { return &calls{n: map[string]int{}} }

func (c *calls) add(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[key]++
	return c.n[key]
}

func (c *calls) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

func TestJournalIsSharedByTheProcessesOfAFleet(t *testing.T) {
	e := newEnv(t)
	keys := []string{"plain", "with.dots and spaces", strings.Repeat("long-", 30), "日本語", "fails"}
	seen := newCalls()
	tasks := func() []fanout.Task[string] {
		var ts []fanout.Task[string]
		for _, k := range keys {
			ts = append(ts, fanout.Task[string]{Key: k, Do: func(context.Context) (string, error) {
				if seen.add(k) == 1 && k == "fails" {
					return "", errors.New("flaky")
				}
				return "v:" + k, nil
			}})
		}
		return ts
	}
	open := func() *fanoutnats.Journal { // each on a connection of its own, as another process would
		j, err := fanoutnats.OpenJournal(context.Background(), e.conn(), "run-1", testOpts()...)
		require.NoError(t, err)
		return j
	}

	rs, err := fanout.Run(context.Background(), tasks(), fanout.WithJournal(open()))
	require.Error(t, err)
	assert.Equal(t, len(keys)-1, rs.Succeeded())

	// Another process reruns: the successes come from the journal, the
	// failure runs again.
	rs, err = fanout.Run(context.Background(), tasks(), fanout.WithJournal(open()))
	require.NoError(t, err)
	for _, k := range keys {
		r, _ := rs.Get(k)
		assert.Equal(t, "v:"+k, r.Value)
		assert.Equal(t, k != "fails", r.Replayed, k)
		assert.Equal(t, map[bool]int{true: 2, false: 1}[k == "fails"], seen.get(k), k)
	}

	// Another run has its own entries, and a cleared run starts afresh.
	other, err := fanoutnats.OpenJournal(context.Background(), e.conn(), "run-2", testOpts()...)
	require.NoError(t, err)
	_, ok, err := other.Lookup(context.Background(), "plain")
	require.NoError(t, err)
	assert.False(t, ok)
	j := open()
	require.NoError(t, j.Clear(context.Background()))
	_, ok, err = j.Lookup(context.Background(), "plain")
	require.NoError(t, err)
	assert.False(t, ok)
}

func TestOpenJournalRefusesBadNamesAndMissingBuckets(t *testing.T) {
	e := newEnv(t)
	_, err := fanoutnats.OpenJournal(context.Background(), e.conn(), "a.b")
	assert.ErrorContains(t, err, `fanoutnats: OpenJournal: run "a.b" must be letters, digits, '-' or '_'`)
	_, err = fanoutnats.OpenJournal(context.Background(), e.conn(), "r", fanoutnats.WithBind())
	assert.ErrorContains(t, err, `fanoutnats: WithBind: key-value bucket "FANOUT_JOURNAL" does not exist`)
}
