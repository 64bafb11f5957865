package fanout_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

func openJournal(t *testing.T, path string) *fanout.FileJournal {
	t.Helper()
	j, err := fanout.OpenFileJournal(path)
	require.NoError(t, err)
	return j
}

func closeJournal(t *testing.T, j *fanout.FileJournal) {
	t.Helper()
	require.NoError(t, j.Close())
}

func lookupEntry(t *testing.T, j *fanout.FileJournal, key string) (fanout.Entry, bool) {
	t.Helper()
	e, ok, err := j.Lookup(t.Context(), key)
	require.NoError(t, err)
	return e, ok
}

func TestFileJournal(t *testing.T) {
	t.Run("entries come back after a reopen, the last record for a key winning", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "j")
		j := openJournal(t, path)
		first := fanout.Entry{Value: []byte(`"one"`), Attempts: 1, Cost: fanout.Cost{Tokens: 7, Cents: 0.25}}
		failed := fanout.Entry{Err: "fanout: task timed out", Kind: "timeout", Attempts: 3}
		last := fanout.Entry{Value: []byte(`"two"`), Attempts: 2}
		require.NoError(t, j.Record(t.Context(), "a", first))
		require.NoError(t, j.Record(t.Context(), "b", failed))
		require.NoError(t, j.Record(t.Context(), "a", last))
		closeJournal(t, j)

		j = openJournal(t, path)
		defer closeJournal(t, j)
		assert.Equal(t, 2, j.Len())
		a, _ := lookupEntry(t, j, "a")
		assert.Equal(t, last, a)
		b, _ := lookupEntry(t, j, "b")
		assert.Equal(t, failed, b)
		_, ok := lookupEntry(t, j, "c")
		assert.False(t, ok)
	})
	t.Run("a rerun in a new process returns the recorded successes without calling Do", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "j")
		var calls atomic.Int32
		tasks := []fanout.Task[string]{
			{Key: "a", Do: func(ctx context.Context) (string, error) {
				calls.Add(1)
				fanout.Spend(ctx, fanout.Cost{Cents: 2})
				return "va", nil
			}},
			{Key: "b", Do: func(context.Context) (string, error) {
				if calls.Add(1) == 2 {
					return "", errors.New("down")
				}
				return "vb", nil
			}},
		}
		for range 2 {
			j := openJournal(t, path)
			_, _ = fanout.Run(t.Context(), tasks, fanout.WithJournal(j), fanout.WithLimit(1))
			closeJournal(t, j)
		}
		j := openJournal(t, path)
		defer closeJournal(t, j)
		rs, err := fanout.Run(t.Context(), tasks, fanout.WithJournal(j))
		require.NoError(t, err)
		assert.Equal(t, int32(3), calls.Load(), "a once, b twice")
		assert.Equal(t, map[string]string{"a": "va", "b": "vb"}, rs.Values())
		a, _ := rs.Get("a")
		assert.True(t, a.Replayed)
		assert.Equal(t, fanout.Cost{Cents: 2}, a.Cost)
	})
	t.Run("Lookup and Record copy values", func(t *testing.T) {
		j := openJournal(t, filepath.Join(t.TempDir(), "j"))
		defer closeJournal(t, j)
		v := []byte("abc")
		require.NoError(t, j.Record(t.Context(), "a", fanout.Entry{Value: v}))
		v[0] = 'x'
		e, _ := lookupEntry(t, j, "a")
		e.Value[1] = 'x'
		e, _ = lookupEntry(t, j, "a")
		assert.Equal(t, "abc", string(e.Value))
	})
	t.Run("a file that is not a journal is refused and left as it is", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "notes.txt")
		require.NoError(t, os.WriteFile(path, []byte("my notes"), 0o600))
		_, err := fanout.OpenFileJournal(path)
		assert.EqualError(t, err, "fanout: "+path+" is not a fanout journal")
		data, _ := os.ReadFile(path)
		assert.Equal(t, "my notes", string(data))
	})
	t.Run("a journal whose creation a crash cut short starts empty", func(t *testing.T) {
		for _, give := range []string{"", "FANO", "\x00\x00\x00\x00\x00\x00\x00\x00"} {
			path := filepath.Join(t.TempDir(), "j")
			require.NoError(t, os.WriteFile(path, []byte(give), 0o600))
			j := openJournal(t, path)
			assert.Zero(t, j.Len())
			require.NoError(t, j.Record(t.Context(), "a", fanout.Entry{}))
			closeJournal(t, j)
			j = openJournal(t, path)
			assert.Equal(t, 1, j.Len(), "after %q", give)
			closeJournal(t, j)
		}
	})
	t.Run("a second open of the same file fails until the first is closed", func(t *testing.T) {
		if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
			t.Skip("the file is locked with flock(2)")
		}
		path := filepath.Join(t.TempDir(), "j")
		j := openJournal(t, path)
		_, err := fanout.OpenFileJournal(path)
		assert.EqualError(t, err, "fanout: "+path+": in use: another FileJournal has it open")
		closeJournal(t, j)
		closeJournal(t, openJournal(t, path))
	})
	t.Run("Lookup, Record and Close fail after Close", func(t *testing.T) {
		j := openJournal(t, filepath.Join(t.TempDir(), "j"))
		closeJournal(t, j)
		_, _, err := j.Lookup(t.Context(), "a")
		assert.ErrorIs(t, err, os.ErrClosed)
		assert.ErrorIs(t, j.Record(t.Context(), "a", fanout.Entry{}), os.ErrClosed)
		assert.ErrorIs(t, j.Close(), os.ErrClosed)
	})
	t.Run("concurrent Records share fsyncs", func(t *testing.T) {
		const n = 64
		path := filepath.Join(t.TempDir(), "j")
		j := openJournal(t, path)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				assert.NoError(t, j.Record(t.Context(), fmt.Sprint(i), fanout.Entry{Value: []byte(fmt.Sprint(i))}))
				_, ok := lookupEntry(t, j, fmt.Sprint(i))
				assert.True(t, ok, "visible once Record returns")
			})
		}
		close(start)
		wg.Wait()
		syncs := fanout.FileJournalSyncs(j)
		assert.Less(t, syncs, int64(n))
		t.Logf("%d records, %d fsyncs", n, syncs)
		closeJournal(t, j)

		j = openJournal(t, path)
		defer closeJournal(t, j)
		for i := range n {
			e, _ := lookupEntry(t, j, fmt.Sprint(i))
			assert.Equal(t, fmt.Sprint(i), string(e.Value))
		}
	})
}

func TestFileJournalTornRecord(t *testing.T) {
	for _, tt := range []struct {
		name     string
		give     func(data []byte, last int) []byte // corrupts data, whose last record starts at last
		wantLast bool                               // the last record is still read back
	}{
		{
			name: "cut in the middle of the last record, then garbage",
			give: func(data []byte, last int) []byte {
				return append(data[:last+(len(data)-last)/2:last+(len(data)-last)/2], "\x17garbage\xff\x00 from a torn write"...)
			},
		},
		{
			name: "cut inside the last record's header",
			give: func(data []byte, last int) []byte { return data[:last+5] },
		},
		{
			name: "a bit of the last record's value flipped",
			give: func(data []byte, _ int) []byte { data[len(data)-1] ^= 1; return data },
		},
		{
			name: "the last record's length beyond the end of the file",
			give: func(data []byte, last int) []byte {
				binary.LittleEndian.PutUint32(data[last:], 1<<31)
				return data
			},
		},
		{
			name: "the last record's length one byte short",
			give: func(data []byte, last int) []byte {
				binary.LittleEndian.PutUint32(data[last:], binary.LittleEndian.Uint32(data[last:])-1)
				return data
			},
		},
		{
			name:     "zeros after the last record, as a power loss can leave",
			give:     func(data []byte, _ int) []byte { return append(data, make([]byte, 4096)...) },
			wantLast: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j")
			j := openJournal(t, path)
			require.NoError(t, j.Record(t.Context(), "a", fanout.Entry{Value: []byte(`"va"`), Attempts: 1}))
			require.NoError(t, j.Record(t.Context(), "b", fanout.Entry{Err: "down", Kind: "error", Attempts: 2}))
			info, err := os.Stat(path)
			require.NoError(t, err)
			require.NoError(t, j.Record(t.Context(), "c", fanout.Entry{Value: []byte(`"a value long enough to cut"`)}))
			closeJournal(t, j)
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, tt.give(data, int(info.Size())), 0o600))

			j = openJournal(t, path)
			a, _ := lookupEntry(t, j, "a")
			assert.Equal(t, fanout.Entry{Value: []byte(`"va"`), Attempts: 1}, a)
			b, _ := lookupEntry(t, j, "b")
			assert.Equal(t, fanout.Entry{Err: "down", Kind: "error", Attempts: 2}, b)
			_, ok := lookupEntry(t, j, "c")
			assert.Equal(t, tt.wantLast, ok, "the last record read back")
			require.NoError(t, j.Record(t.Context(), "d", fanout.Entry{Value: []byte(`"vd"`)}))
			closeJournal(t, j)

			j = openJournal(t, path)
			defer closeJournal(t, j)
			d, _ := lookupEntry(t, j, "d")
			assert.Equal(t, `"vd"`, string(d.Value), "appended after the torn record, which is gone")
			assert.Equal(t, map[bool]int{true: 4, false: 3}[tt.wantLast], j.Len())
		})
	}
}
