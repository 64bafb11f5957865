package fanout_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gofanout/fanout"
)

// BenchmarkJournal is what a journal adds to each task of a Run: 1 000
// tasks at limit 32, trivial or taking 1 ms, with no journal, a
// MemoryJournal, a FileJournal (an fsync on the local disk, shared by the
// records that arrive together), and the same FileJournal with its
// Records made one at a time, so that each pays a whole fsync: the
// baseline group commit is measured against. Each iteration records into
// a new, empty journal; opening and closing it is not timed.
func BenchmarkJournal(b *testing.B) {
	const n, limit = 1000, 32
	tasks := map[string]func(context.Context) (int, error){
		"trivial": trivial,
		"1ms": func(context.Context) (int, error) {
			time.Sleep(time.Millisecond)
			return 1, nil
		},
	}
	for _, task := range []string{"trivial", "1ms"} {
		ts := make([]fanout.Task[int], n)
		for i := range ts {
			ts[i] = fanout.Task[int]{Key: fmt.Sprint(i), Do: tasks[task]}
		}
		for _, journal := range []string{"none", "memory", "file", "file-one-sync-per-record"} {
			b.Run(fmt.Sprintf("task=%s/journal=%s", task, journal), func(b *testing.B) {
				var syncs int64
				dir := b.TempDir()
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					b.StopTimer()
					var opts []fanout.Option
					var fj *fanout.FileJournal
					switch journal {
					case "memory":
						opts = append(opts, fanout.WithJournal(fanout.NewMemoryJournal()))
					case "file", "file-one-sync-per-record":
						var err error
						if fj, err = fanout.OpenFileJournal(filepath.Join(dir, fmt.Sprint(i))); err != nil {
							b.Fatal(err)
						}
						var j fanout.Journal = fj
						if journal == "file-one-sync-per-record" {
							j = &oneAtATime{Journal: fj}
						}
						opts = append(opts, fanout.WithJournal(j))
					}
					b.StartTimer()
					if _, err := fanout.Run(context.Background(), ts, append(opts, fanout.WithLimit(limit))...); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if fj != nil {
						syncs += fanout.FileJournalSyncs(fj)
						if err := fj.Close(); err != nil {
							b.Fatal(err)
						}
						os.Remove(filepath.Join(dir, fmt.Sprint(i)))
					}
					b.StartTimer()
				}
				perTask(b, n)
				if syncs > 0 {
					b.ReportMetric(float64(b.N*n)/float64(syncs), "records/fsync")
				}
			})
		}
	}
}

// oneAtATime lets one Record at a time through to its Journal.
type oneAtATime struct {
	fanout.Journal
	mu sync.Mutex
}

func (o *oneAtATime) Record(ctx context.Context, key string, e fanout.Entry) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.Journal.Record(ctx, key, e)
}
