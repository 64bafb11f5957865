package fanoutnats_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/gofanout/fanout/nats/embedded"
)

// Remote tasks run on a worker through an embedded server; the run reads
// like any other fanout.Run.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "fanoutnats-example-")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(dir)
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	nc, err := fanoutnats.Connect([]string{srv.URL()})
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	// The worker side, usually another process.
	w, err := fanoutnats.NewWorker(ctx, nc)
	if err != nil {
		panic(err)
	}
	fanoutnats.Handle(w, "shout", func(_ context.Context, s string) (string, error) {
		return strings.ToUpper(s) + "!", nil
	})
	wctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- w.Serve(wctx) }()
	defer func() { stop(); <-served }()

	// The client side.
	c, err := fanoutnats.NewClient(ctx, nc)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	b := c.Batch()
	var tasks []fanout.Task[string]
	for _, word := range []string{"fan", "out", "nats"} {
		tasks = append(tasks, fanoutnats.Remote[string, string](b, "shout", word, word))
	}
	rs, err := fanout.Run(ctx, tasks, fanout.WithLimit(2))
	if err != nil {
		panic(err)
	}
	for _, r := range rs.All() {
		fmt.Println(r.Key, "->", r.Value)
	}
	// Output:
	// fan -> FAN!
	// out -> OUT!
	// nats -> NATS!
}

// A client's Fleet lists the workers from their status reports, its own
// batches with tasks queued or running, and its counters: what a status
// page shows.
func ExampleClient_Fleet() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "fanoutnats-example-")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(dir)
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	nc, err := fanoutnats.Connect([]string{srv.URL()})
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	c, err := fanoutnats.NewClient(ctx, nc)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	c.Fleet() // listen now, to hear the workers' first reports

	w, err := fanoutnats.NewWorker(ctx, nc, fanoutnats.WithName("w1"), fanoutnats.WithConcurrency(4),
		fanoutnats.WithStatusInterval(100*time.Millisecond))
	if err != nil {
		panic(err)
	}
	fanoutnats.Handle(w, "shout", func(_ context.Context, s string) (string, error) {
		return strings.ToUpper(s) + "!", nil
	})
	wctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- w.Serve(wctx) }()
	defer func() { stop(); <-served }()

	if _, err := fanout.Run(ctx, []fanout.Task[string]{fanoutnats.Remote[string, string](c, "shout", "hi", "hi")}); err != nil {
		panic(err)
	}
	f := c.Fleet()
	for len(f.Workers) == 0 || f.Workers[0].Stats.Succeeded == 0 { // the next report
		time.Sleep(10 * time.Millisecond)
		f = c.Fleet()
	}
	for _, w := range f.Workers {
		fmt.Printf("%s: %d of %d slots in use, %d succeeded\n", w.Name, w.InUse, w.Slots, w.Stats.Succeeded)
	}
	fmt.Printf("batches waiting: %d; sent %d, replies %d, late %d\n", len(f.Batches), f.Stats.Sent, f.Stats.Replies, f.Stats.Late)
	// Output:
	// w1: 0 of 4 slots in use, 1 succeeded
	// batches waiting: 0; sent 1, replies 1, late 0
}
