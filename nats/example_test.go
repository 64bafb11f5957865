package fanoutnats_test

import (
	"context"
	"fmt"
	"os"
	"strings"

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
