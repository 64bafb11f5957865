// Command lazy checks that fanout.StreamSeq runs a lazy source of tasks in
// memory bounded by the limit, not by the task count: it streams 10 000 000
// trivial tasks, 8 at a time, and reports the peak heap, sampled with
// runtime/metrics, and the peak RSS of the process. The same tasks held
// in a slice would take over 1 GiB before the first one ran.
//
// Usage:
//
//	go run ./cmd/lazy [-tasks 10000000] [-limit 8]
package main

import (
	"context"
	"flag"
	"fmt"
	"iter"
	"log"
	"os"
	"runtime/metrics"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gofanout/fanout"
)

// heapObjects is the runtime/metrics sample of the bytes held by heap
// objects, live or not yet swept.
const heapObjects = "/memory/classes/heap/objects:bytes"

// peakHeap samples heapObjects every millisecond until stop is closed,
// and returns the highest value seen.
func peakHeap(stop <-chan struct{}) uint64 {
	s := []metrics.Sample{{Name: heapObjects}}
	var peak uint64
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		metrics.Read(s)
		peak = max(peak, s[0].Value.Uint64())
		select {
		case <-stop:
			return peak
		case <-t.C:
		}
	}
}

func source(n int) iter.Seq[fanout.Task[int]] {
	return func(yield func(fanout.Task[int]) bool) {
		for i := range n {
			t := fanout.Task[int]{Key: strconv.Itoa(i), Do: func(context.Context) (int, error) { return i, nil }}
			if !yield(t) {
				return
			}
		}
	}
}

func main() {
	tasks := flag.Int("tasks", 10_000_000, "tasks the source yields")
	limit := flag.Int("limit", 8, "tasks in flight")
	flag.Parse()

	stop := make(chan struct{})
	var peak uint64
	var wg sync.WaitGroup
	wg.Go(func() { peak = peakHeap(stop) })

	start := time.Now()
	seq, err := fanout.StreamSeq(context.Background(), source(*tasks), fanout.WithLimit(*limit))
	if err != nil {
		log.Fatal(err)
	}
	results, failed := 0, 0
	for r := range seq {
		results++
		if r.Err != nil {
			failed++
		}
	}
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()

	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	const mib = 1 << 20
	fmt.Printf("StreamSeq: %d tasks, limit %d: %d results, %d failed, in %v (%.0f ns/task)\n",
		*tasks, *limit, results, failed, elapsed.Round(time.Millisecond), float64(elapsed.Nanoseconds())/float64(*tasks))
	fmt.Printf("peak heap objects: %.1f MiB (target < 64 MiB); peak RSS: %.1f MiB\n",
		float64(peak)/mib, float64(ru.Maxrss*1024)/mib)
	if results != *tasks || failed != 0 || peak >= 64*mib {
		os.Exit(1)
	}
}
