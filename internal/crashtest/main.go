// Command crashtest is the child process of the core's crash tests: a
// fanout.Run of -n keys with a FileJournal, meant to be killed with
// SIGKILL part-way and run again.
//
// Each Do waits -delay (the paid call), then appends its key and a newline
// to the -calls file, synced, before it returns: the test reads that file
// to kill the run after some calls and to see which keys were called
// after their success was recorded. When the run ends, every Result is
// printed to stdout as one line of JSON, in input order.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gofanout/fanout"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	journalPath := flag.String("journal", "", "journal file")
	callsPath := flag.String("calls", "", "file each Do appends its key to")
	n := flag.Int("n", 200, "keys")
	limit := flag.Int("limit", 8, "tasks at once")
	delay := flag.Duration("delay", 5*time.Millisecond, "each call's duration")
	valueSize := flag.Int("value-size", 1500, "bytes of each value, so that a batch of records spans pages")
	flag.Parse()

	calls, err := os.OpenFile(*callsPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer calls.Close()
	j, err := fanout.OpenFileJournal(*journalPath)
	if err != nil {
		return err
	}
	defer j.Close()

	tasks := make([]fanout.Task[string], *n)
	for i := range tasks {
		key := fmt.Sprintf("k%03d", i)
		tasks[i] = fanout.Task[string]{Key: key, Do: func(context.Context) (string, error) {
			time.Sleep(*delay)
			if _, err := calls.WriteString(key + "\n"); err != nil {
				return "", err
			}
			if err := calls.Sync(); err != nil {
				return "", err
			}
			return key + strings.Repeat(".", *valueSize), nil
		}}
	}
	rs, err := fanout.Run(context.Background(), tasks, fanout.WithJournal(j), fanout.WithLimit(*limit))
	enc := json.NewEncoder(os.Stdout)
	for _, r := range rs.All() {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return err
}
