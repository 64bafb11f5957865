package main

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestResumeAfterSIGKILL(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGKILL on Windows")
	}
	bin := build(t)
	journal := filepath.Join(t.TempDir(), "resume.journal")
	args := []string{"-journal", journal, "-latency", "10ms"}

	out, err := exec.Command(bin, append(args, "-kill-after", "40")...).Output()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "output:\n%s", out)
	assert.Equal(t, "signal: killed", exit.Error())
	assert.Contains(t, string(out), "crash: SIGKILL after 40 paid calls")

	out, err = exec.Command(bin, args...).Output()
	require.NoError(t, err)
	resumed := parseSummary(t, out)
	assert.Equal(t, 100, resumed.succeeded)
	assert.Equal(t, 100, resumed.replayed+resumed.called)
	assert.LessOrEqual(t, resumed.replayed, 40, "no more than the calls paid before the crash")
	assert.GreaterOrEqual(t, resumed.replayed, 40-8, "no fewer than those paid but the ones in flight")

	out, err = exec.Command(bin, args...).Output()
	require.NoError(t, err)
	again := parseSummary(t, out)
	assert.Equal(t, summary{succeeded: 100, replayed: 100, saved: again.saved}, again, "nothing paid the third time")
	assert.InDelta(t, again.saved, resumed.saved+resumed.spent, 0.2, "what the pages cost in all")
}

// TestResumeAfterTwoKills kills the rerun too, while its calls are in
// flight, and checks that the journal it held open still gives back every
// result of the first run, and that a third run pays only for the rest.
func TestResumeAfterTwoKills(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGKILL on Windows")
	}
	bin := build(t)
	journal := filepath.Join(t.TempDir(), "resume.journal")
	args := []string{"-journal", journal, "-latency", "10ms"}

	out, err := exec.Command(bin, append(args, "-kill-after", "40")...).Output()
	require.Error(t, err, "the first run kills itself:\n%s", out)
	recorded := regexp.MustCompile(`with (\d+) results recorded`).FindSubmatch(out)
	require.NotNil(t, recorded, "output:\n%s", out)

	// The second run's calls never end: it is killed with the journal
	// open and its calls in flight, once it has said what the journal held.
	second := exec.Command(bin, "-journal", journal, "-latency", "1h")
	stdout, err := second.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, second.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	held := regexp.MustCompile(`holds (\d+) results`).FindStringSubmatch(line)
	require.NotNil(t, held, line)
	assert.GreaterOrEqual(t, atoi(t, []byte(held[1])), atoi(t, recorded[1]), "the results recorded before the crash, at least")
	require.NoError(t, second.Process.Kill())
	assert.EqualError(t, second.Wait(), "signal: killed")

	out, err = exec.Command(bin, args...).Output()
	require.NoError(t, err, "the journal opens again after the second kill:\n%s", out)
	third := parseSummary(t, out)
	assert.Equal(t, 100, third.succeeded)
	assert.Equal(t, atoi(t, []byte(held[1])), third.replayed, "every result recorded before the first kill, none since")
	assert.Equal(t, 100, third.replayed+third.called)
}

func atoi(t *testing.T, b []byte) int {
	t.Helper()
	n, err := strconv.Atoi(string(b))
	require.NoError(t, err)
	return n
}

func TestBadFlagsAreAnError(t *testing.T) {
	journal := filepath.Join(t.TempDir(), "resume.journal")
	var out bytes.Buffer
	err := run(t.Context(), []string{"-journal", journal, "-limit", "-1"}, &out)
	assert.ErrorContains(t, err, "limit")
	assert.NotContains(t, out.String(), "pages summarised", "nothing ran")
}

func TestHelpIsNotAnError(t *testing.T) {
	out, err := exec.Command(build(t), "-h").CombinedOutput()
	require.NoError(t, err, "-h exits 0:\n%s", out)
	assert.Contains(t, string(out), "-kill-after int")
	assert.NotContains(t, string(out), "help requested")
}

func build(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the example with")
	}
	bin := filepath.Join(t.TempDir(), "resume")
	out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)
	return bin
}

type summary struct {
	succeeded, replayed, called int
	saved, spent                float64
}

var summaryLines = regexp.MustCompile(`(\d+) of 100 pages summarised\n` +
	`  from the journal: +(\d+) \(\d+ calls and ([\d.]+)¢ not paid again\)\n` +
	`  called now: +(\d+) \(([\d.]+)¢\)\n$`)

func parseSummary(t *testing.T, out []byte) summary {
	t.Helper()
	m := summaryLines.FindSubmatch(out)
	require.NotNil(t, m, "no summary in:\n%s", out)
	atoi := func(b []byte) int { n, _ := strconv.Atoi(string(b)); return n }
	atof := func(b []byte) float64 { f, _ := strconv.ParseFloat(string(b), 64); return f }
	return summary{succeeded: atoi(m[1]), replayed: atoi(m[2]), saved: atof(m[3]), called: atoi(m[4]), spent: atof(m[5])}
}
