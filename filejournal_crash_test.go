package fanout_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
)

// The crash tests run internal/crashtest, a fanout.Run of crashKeys keys
// with a FileJournal, as a real child process, kill it with SIGKILL once
// its side log shows some calls done, and run it again to the end.

const (
	crashKeys  = 200
	crashLimit = 8
)

func TestFileJournalSurvivesSIGKILL(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGKILL on Windows")
	}
	bin := buildCrashtest(t)
	for _, tt := range []struct {
		name  string
		kills []int // side-log lines after which each run is killed
	}{
		{name: "killed once, then run to the end", kills: []int{60}},
		{name: "killed twice, then run to the end", kills: []int{30, 110}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := crashRun{t: t, bin: bin, dir: t.TempDir()}
			var recorded []string // keys whose success was recorded at the last kill
			for _, after := range tt.kills {
				callsBefore := c.calls()
				c.startAndKill(after)
				callsAtKill := c.calls()
				now := c.recorded()
				assert.Subset(t, now, recorded, "a recorded success is never lost")
				assert.Empty(t, intersect(callsAtKill[len(callsBefore):], recorded),
					"no Do called after its key's success was recorded")
				assert.LessOrEqual(t, len(difference(unique(callsAtKill[len(callsBefore):]), now)), crashLimit,
					"only the calls in flight at the kill are unrecorded")
				t.Logf("killed after %d calls of its own: %d keys recorded in all, %d of its calls lost in flight",
					len(callsAtKill)-len(callsBefore), len(now), len(difference(unique(callsAtKill[len(callsBefore):]), now)))
				recorded = now
			}
			callsAtLastKill := c.calls()
			results := c.runToEnd()

			rerun := c.calls()[len(callsAtLastKill):]
			assert.Empty(t, intersect(rerun, recorded), "no Do called after its key's success was recorded")
			assert.Len(t, rerun, crashKeys-len(recorded), "the rerun calls each key not recorded once")
			assert.Equal(t, allCrashKeys(), keysOf(results, func(fanout.Result[string]) bool { return true }),
				"one Result per key, in input order")
			assert.Equal(t, allCrashKeys(), keysOf(results, fanout.Result[string].OK), "every key succeeded")
			assert.Equal(t, recorded, keysOf(results, func(r fanout.Result[string]) bool { return r.Replayed }),
				"the rerun replays exactly the keys recorded before the kill")
			for _, r := range results {
				assert.Equal(t, r.Key+strings.Repeat(".", 1500), r.Value, "value of %s", r.Key)
			}
		})
	}
}

// buildCrashtest builds internal/crashtest into a temporary directory.
func buildCrashtest(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goTool = filepath.Join(root, "bin", "go")
		} else {
			t.Skip("no go command to build the child with")
		}
	}
	bin := filepath.Join(t.TempDir(), "crashtest")
	out, err := exec.Command(goTool, "build", "-o", bin, "./internal/crashtest").CombinedOutput()
	require.NoError(t, err, "go build ./internal/crashtest:\n%s", out)
	return bin
}

// crashRun is one journal and one side log, run by the child again and
// again.
type crashRun struct {
	t   *testing.T
	bin string
	dir string
}

func (c crashRun) command() *exec.Cmd {
	return exec.Command(c.bin, "-n", fmt.Sprint(crashKeys), "-limit", fmt.Sprint(crashLimit),
		"-journal", filepath.Join(c.dir, "run.journal"), "-calls", filepath.Join(c.dir, "calls.log"))
}

// startAndKill starts the child and kills it with SIGKILL once the side
// log holds at least after lines, and fails if the run ended first.
func (c crashRun) startAndKill(after int) {
	cmd := c.command()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(c.t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for len(c.calls()) < after {
		select {
		case err := <-exited:
			c.t.Fatalf("the child ended before %d calls (%d so far): %v\n%s", after, len(c.calls()), err, stderr.String())
		case <-deadline:
			require.NoError(c.t, cmd.Process.Kill())
			<-exited
			c.t.Fatalf("the child made %d calls in 10s, not %d", len(c.calls()), after)
		case <-tick.C:
		}
	}
	require.NoError(c.t, cmd.Process.Signal(syscall.SIGKILL))
	err := <-exited
	var exit *exec.ExitError
	require.ErrorAs(c.t, err, &exit, "stderr:\n%s", stderr.String())
	status, ok := exit.Sys().(syscall.WaitStatus)
	require.True(c.t, ok && status.Signaled() && status.Signal() == syscall.SIGKILL,
		"the child ended by itself (%v) before the kill", err)
	require.Less(c.t, len(c.recorded()), crashKeys, "the kill came after the run had recorded every key")
}

// runToEnd runs the child to completion and returns its Results.
func (c crashRun) runToEnd() []fanout.Result[string] {
	cmd := c.command()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(c.t, err, "stderr:\n%s", stderr.String())
	var results []fanout.Result[string]
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r fanout.Result[string]
		require.NoError(c.t, json.Unmarshal(sc.Bytes(), &r))
		results = append(results, r)
	}
	require.NoError(c.t, sc.Err())
	return results
}

// calls returns the keys in the side log, in the order Do was called.
func (c crashRun) calls() []string {
	data, err := os.ReadFile(filepath.Join(c.dir, "calls.log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(c.t, err)
	// A line being written when the run is killed may be incomplete.
	lines := strings.Split(string(data), "\n")
	return lines[:len(lines)-1]
}

// recorded returns the keys whose success the journal holds, sorted.
func (c crashRun) recorded() []string {
	path := filepath.Join(c.dir, "run.journal")
	before, err := os.Stat(path)
	require.NoError(c.t, err)
	j, err := fanout.OpenFileJournal(path)
	require.NoError(c.t, err)
	defer func() {
		require.NoError(c.t, j.Close())
		if after, err := os.Stat(path); err == nil && after.Size() < before.Size() {
			c.t.Logf("the kill tore a record: %d bytes cut from the journal", before.Size()-after.Size())
		}
	}()
	var keys []string
	for _, k := range allCrashKeys() {
		e, ok, err := j.Lookup(context.Background(), k)
		require.NoError(c.t, err)
		if ok && e.OK() {
			keys = append(keys, k)
		}
	}
	return keys
}

func allCrashKeys() []string {
	keys := make([]string, crashKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%03d", i)
	}
	return keys
}

func keysOf(rs []fanout.Result[string], match func(fanout.Result[string]) bool) []string {
	var keys []string
	for _, r := range rs {
		if match(r) {
			keys = append(keys, r.Key)
		}
	}
	return keys
}

// intersect returns the keys of a that are in b.
func intersect(a, b []string) []string {
	var both []string
	for _, k := range a {
		if slices.Contains(b, k) {
			both = append(both, k)
		}
	}
	return both
}

// difference returns the keys of a that are not in b.
func difference(a, b []string) []string {
	var only []string
	for _, k := range a {
		if !slices.Contains(b, k) {
			only = append(only, k)
		}
	}
	return only
}

func unique(keys []string) []string {
	keys = slices.Clone(keys)
	slices.Sort(keys)
	return slices.Compact(keys)
}
