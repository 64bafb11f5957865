// Command resume shows a fan-out of paid calls that survives a crash:
// every key's Result is recorded in a journal file as it completes, so a
// rerun after `kill -9` returns the recorded ones without calling again
// and pays only for the rest.
//
// It summarises -n product pages with a simulated model (offline: each
// call waits -latency, ±50% by page, and reports the tokens it used and
// what they cost), -limit at a time, through fanout.Run with a
// fanout.FileJournal:
//
//	go run ./resume -kill-after 40   # starts afresh; SIGKILLs itself after 40 paid calls
//	go run ./resume                  # resumes: pays only for the pages not recorded
//	go run ./resume                  # again: everything from the journal, nothing paid
//
// The calls in flight when the process dies were paid for but not
// recorded, so the rerun pays for those again: at most -limit of them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/gofanout/fanout"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h: the usage is printed
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// centsPerToken is the simulated model's price: $6 per million tokens.
const centsPerToken = 600.0 / 1e6

// Summary is what the model returns for a page; the journal keeps it as
// JSON.
type Summary struct {
	Page  string `json:"page"`
	Text  string `json:"text"`
	Words int    `json:"words"`
}

func run(ctx context.Context, args []string, out io.Writer) error {
	flags := flag.NewFlagSet("resume", flag.ContinueOnError)
	path := flags.String("journal", filepath.Join(os.TempDir(), "fanout-resume.journal"), "journal file")
	killAfter := flags.Int("kill-after", 0, "start afresh, and kill this process with SIGKILL after this many paid calls")
	fresh := flags.Bool("fresh", false, "delete the journal first")
	n := flags.Int("n", 100, "product pages to summarise")
	limit := flags.Int("limit", 8, "calls at once")
	latency := flags.Duration("latency", 40*time.Millisecond, "simulated latency of a call (±50% by page)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *fresh || *killAfter > 0 {
		if err := os.Remove(*path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	j, err := fanout.OpenFileJournal(*path)
	if err != nil {
		return err
	}
	defer j.Close()

	fmt.Fprintf(out, "summarising %d product pages, %d at a time; the journal %s holds %d results\n", *n, *limit, *path, j.Len())
	m := &model{latency: *latency, killAfter: int64(*killAfter), journal: j, out: out}
	rs, err := fanout.Run(ctx, pages(*n, m), fanout.WithJournal(j), fanout.WithLimit(*limit))
	if rs == nil {
		return err // bad input, such as a negative -limit: nothing ran
	}
	report(out, rs)
	return err
}

func pages(n int, m *model) []fanout.Task[Summary] {
	tasks := make([]fanout.Task[Summary], n)
	for i := range tasks {
		page := fmt.Sprintf("page-%03d", i)
		tasks[i] = fanout.Task[Summary]{Key: page, Do: func(ctx context.Context) (Summary, error) {
			return m.summarise(ctx, page)
		}}
	}
	return tasks
}

// model is the simulated paid model. It kills the process after
// killAfter calls, if set, as a crash would.
type model struct {
	latency   time.Duration
	killAfter int64
	journal   *fanout.FileJournal
	out       io.Writer
	paid      atomic.Int64
}

func (m *model) summarise(ctx context.Context, page string) (Summary, error) {
	h := fnv.New32a()
	h.Write([]byte(page))
	seed := h.Sum32()
	wait := m.latency/2 + time.Duration(seed%1000)*m.latency/1000
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		return Summary{}, context.Cause(ctx)
	}
	tokens := 600 + int64(seed%1800)
	fanout.Spend(ctx, fanout.Cost{Tokens: tokens, Cents: float64(tokens) * centsPerToken})
	if m.paid.Add(1) == m.killAfter {
		m.crash()
	}
	words := 20 + int(seed%60)
	return Summary{Page: page, Text: fmt.Sprintf("%s: a %d-word summary", page, words), Words: words}, nil
}

// crash kills the process with SIGKILL (TerminateProcess on Windows): no
// deferred function runs, nothing is flushed or closed.
func (m *model) crash() {
	fmt.Fprintf(m.out, "crash: SIGKILL after %d paid calls, with %d results recorded in the journal\n", m.killAfter, m.journal.Len())
	self, err := os.FindProcess(os.Getpid())
	if err == nil {
		err = self.Kill()
	}
	panic(fmt.Sprintf("resume: the process survived its SIGKILL: %v", err))
}

func report(out io.Writer, rs *fanout.Results[Summary]) {
	var replayed, called int
	var saved, spent float64
	for _, r := range rs.All() {
		if r.Replayed {
			replayed++
			saved += r.Cost.Cents
		} else if r.Attempts > 0 {
			called++
			spent += r.Cost.Cents
		}
	}
	fmt.Fprintf(out, "%d of %d pages summarised\n", rs.Succeeded(), rs.Len())
	fmt.Fprintf(out, "  from the journal: %3d (%d calls and %.1f¢ not paid again)\n", replayed, replayed, saved)
	fmt.Fprintf(out, "  called now:       %3d (%.1f¢)\n", called, spent)
	if failed := rs.Len() - rs.Succeeded(); failed > 0 {
		fmt.Fprintf(out, "  failed:           %3d (run again to retry them)\n", failed)
	}
}
