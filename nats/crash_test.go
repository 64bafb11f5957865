package fanoutnats_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gofanout/fanout"
	fanoutnats "github.com/gofanout/fanout/nats"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The crash tests start this test binary again as a client process
// (crashChildEnv set to MODE,URL,NAME,LOG), kill it with SIGKILL mid-run,
// and rerun in the test's own process.
const crashChildEnv = "FANOUTNATS_CRASH_CHILD"

const crashKeys = 200

func crashKey(i int) string { return fmt.Sprint("k", i) }

// runCrashChild runs the child's part and returns its exit code; it is
// killed long before it ends.
func runCrashChild(spec string) int {
	mode, rest, _ := strings.Cut(spec, ",")
	url, rest, _ := strings.Cut(rest, ",")
	name, logPath, _ := strings.Cut(rest, ",")
	nc, err := fanoutnats.Connect([]string{url})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	var tasks []fanout.Task[int]
	var opts []fanout.Option
	switch mode {
	case "remote":
		c, err := fanoutnats.NewClient(ctx, nc, testOpts()...)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		b, _ := c.ResumeBatch(name) // a batch named up front, as a job scheduler would
		for i := range crashKeys {
			tasks = append(tasks, fanoutnats.Remote[int, int](b, "pay", crashKey(i), i))
		}
	case "journal":
		j, err := fanoutnats.OpenJournal(ctx, nc, name, testOpts()...)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for i := range crashKeys {
			tasks = append(tasks, fanout.Task[int]{Key: crashKey(i), Do: func(context.Context) (int, error) {
				fmt.Fprintln(log, crashKey(i)) // about to pay
				time.Sleep(2 * time.Millisecond)
				return i * i, nil
			}})
		}
		opts = append(opts, fanout.WithJournal(j))
	}
	_, _ = fanout.Run(ctx, tasks, append(opts, fanout.WithLimit(8))...)
	return 0
}

// startCrashChild starts the child and returns a func that kills it with
// SIGKILL and waits until it is gone.
func startCrashChild(t *testing.T, spec string) (kill func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+spec)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	killed := false
	kill = func() {
		if !killed {
			killed = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(kill)
	return kill
}

func TestResumedBatchRunsNoFinishedKeyAgainAfterAClientCrash(t *testing.T) {
	e := newEnv(t)
	paid := newCalls()
	// Past a quarter of the keys, handlers wait until the rerun has
	// adopted a task, so that the crash leaves tasks queued and running.
	gate := make(chan struct{})
	e.worker(func(w *fanoutnats.Worker) {
		fanoutnats.Handle(w, "pay", func(ctx context.Context, n int) (int, error) {
			info, _ := fanoutnats.TaskFromContext(ctx)
			paid.add(info.Key)
			if total(paid) > crashKeys/4 {
				<-gate
			}
			return n * n, nil
		})
	}, fanoutnats.WithConcurrency(4))
	const batch = "nightly-42"
	kill := startCrashChild(t, "remote,"+e.srv.URL()+","+batch+",")
	require.Eventually(t, func() bool { return total(paid) > crashKeys/4 && e.queued() > 4 }, 30*time.Second, time.Millisecond)
	kill()
	before := total(paid)

	c := e.client()
	released := make(chan struct{})
	defer func() { <-released }()
	go func() {
		defer close(released)
		defer close(gate)
		for deadline := time.Now().Add(30 * time.Second); c.Stats().Adopted == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}()
	b, err := c.ResumeBatch(batch)
	require.NoError(t, err)
	var tasks []fanout.Task[int]
	for i := range crashKeys {
		tasks = append(tasks, fanoutnats.Remote[int, int](b, "pay", crashKey(i), i))
	}
	rs, err := fanout.Run(context.Background(), tasks, fanout.WithLimit(8), fanout.WithTimeout(60*time.Second))
	require.NoError(t, err)
	for i := range crashKeys {
		v, err := rs.Value(crashKey(i))
		require.NoError(t, err)
		require.Equal(t, i*i, v)
		assert.Equal(t, 1, paid.get(crashKey(i)), "key %s paid for once across both runs", crashKey(i))
	}
	st := c.Stats()
	t.Logf("%d keys paid before the crash; resumed %+v", before, st)
	assert.Positive(t, st.Resumed, "finished keys came from the replies stream")
	assert.Positive(t, st.Adopted, "queued and running keys were waited for")
	assert.Less(t, st.Sent, int64(crashKeys), "only the unfinished keys were sent")
	require.Eventually(t, func() bool { return e.queued() == 0 }, 10*time.Second, 5*time.Millisecond)
}

func TestJournalRerunCallsNoRecordedKeyAfterAProcessCrash(t *testing.T) {
	e := newEnv(t)
	logPath := t.TempDir() + "/calls"
	const run = "crash-run"
	kill := startCrashChild(t, "journal,"+e.srv.URL()+","+run+","+logPath)
	require.Eventually(t, func() bool { return len(readCalls(t, logPath)) >= crashKeys/4 }, 30*time.Second, time.Millisecond)
	kill()

	j, err := fanoutnats.OpenJournal(context.Background(), e.conn(), run, testOpts()...)
	require.NoError(t, err)
	recorded := map[string]bool{}
	for i := range crashKeys {
		entry, ok, err := j.Lookup(context.Background(), crashKey(i))
		require.NoError(t, err)
		recorded[crashKey(i)] = ok && entry.OK()
	}
	child := readCalls(t, logPath)
	rerun := newCalls()
	var tasks []fanout.Task[int]
	for i := range crashKeys {
		tasks = append(tasks, fanout.Task[int]{Key: crashKey(i), Do: func(context.Context) (int, error) {
			rerun.add(crashKey(i))
			return i * i, nil
		}})
	}
	rs, err := fanout.Run(context.Background(), tasks, fanout.WithJournal(j), fanout.WithLimit(8))
	require.NoError(t, err)
	replayed := 0
	for i := range crashKeys {
		k := crashKey(i)
		r, _ := rs.Get(k)
		require.Equal(t, i*i, r.Value, k)
		if recorded[k] {
			replayed++
			assert.True(t, r.Replayed, k)
			assert.Zero(t, rerun.get(k), "key %s was recorded: its Do is not called again", k)
		} else {
			assert.Equal(t, 1, rerun.get(k), k)
		}
		assert.LessOrEqual(t, child[k], 1, k)
	}
	t.Logf("%d keys called before the crash, %d recorded and replayed", len(child), replayed)
	assert.Positive(t, replayed)
}

func total(c *calls) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.n {
		n += v
	}
	return n
}

// readCalls reads the child's log of Do calls, by key.
func readCalls(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	defer f.Close()
	n := map[string]int{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if line := s.Text(); line != "" {
			n[line]++
		}
	}
	return n
}
