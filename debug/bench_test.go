package fanoutdebug_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/gofanout/fanout"
	fanoutdebug "github.com/gofanout/fanout/debug"
)

// BenchmarkObserver is what the page's Observer adds to each task: a Run
// of 1 000 trivial tasks under WithLimit(8) with no observer, with an
// Observer whose hooks are all nil (the core's own cost of watching a
// run), and with the page's.
func BenchmarkObserver(b *testing.B) {
	const n = 1000
	tasks := make([]fanout.Task[int], n)
	for i := range tasks {
		tasks[i] = fanout.NewTask(strconv.Itoa(i), func(context.Context) (int, error) { return i, nil })
	}
	page := fanoutdebug.New()
	for _, bc := range []struct {
		name string
		opts []fanout.Option
	}{
		{"observer=none", nil},
		{"observer=empty", []fanout.Option{fanout.WithObserver(&fanout.Observer{})}},
		{"observer=page", []fanout.Option{fanout.WithObserver(page.Observer("bench"))}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			opts := append([]fanout.Option{fanout.WithLimit(8)}, bc.opts...)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := fanout.Run(b.Context(), tasks, opts...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/task")
		})
	}
}

// BenchmarkRead is what one poll of the page costs the process: the JSON
// of every run with 50 finished runs kept, and of a run with 1 000 keys in
// flight.
func BenchmarkRead(b *testing.B) {
	page := fanoutdebug.New()
	obs := page.Observer("bench")
	for range 50 {
		tasks := make([]fanout.Task[int], 100)
		for i := range tasks {
			tasks[i] = fanout.NewTask(strconv.Itoa(i), func(context.Context) (int, error) { return i, nil })
		}
		_, _ = fanout.Run(b.Context(), tasks, fanout.WithObserver(obs))
	}
	release := make(chan struct{})
	tasks := make([]fanout.Task[int], 1000)
	started := make(chan struct{}, len(tasks))
	for i := range tasks {
		tasks[i] = fanout.NewTask(strconv.Itoa(i), func(context.Context) (int, error) {
			started <- struct{}{}
			<-release
			return i, nil
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = fanout.Run(context.Background(), tasks, fanout.WithObserver(obs))
	}()
	for range tasks {
		<-started
	}
	defer func() { close(release); <-done }()
	running := page.Snapshot().Runs[0].ID

	for _, path := range []string{"/api", fmt.Sprintf("/api/run?id=%d", running)} {
		b.Run("GET "+path[:min(len(path), 8)], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				page.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
				if rec.Code != 200 {
					b.Fatal(rec.Code, rec.Body.String())
				}
			}
		})
	}
}
