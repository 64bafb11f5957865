package main

import (
	"flag"
	"os"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestMain lets the test binary stand in for the demo's worker processes:
// coordinate re-executes os.Args[0] with -worker.
func TestMain(m *testing.M) {
	if slices.Contains(os.Args[1:], "-worker") {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func TestEveryKeySurvivesAKilledWorkerProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	rep, err := coordinate(settings{workers: 2, tasks: 12, kill: true, replicas: 1})
	rep.print()
	require.NoError(t, err)
	require.NotNil(t, rep.results)
	assert.Equal(t, 12, rep.results.Len())
	assert.Equal(t, 12, rep.results.Succeeded())
	assert.Equal(t, 2, rep.workers)
	assert.Contains(t, rep.killed, "worker-1 (pid ", "a worker process was killed mid-run")
	assert.Positive(t, rep.stats.Redelivered, "the killed worker's tasks were redelivered: %+v", rep.stats)
	assert.Zero(t, rep.stats.Duplicates)
	assert.Zero(t, rep.stats.MaxDelivers)
}

func TestWorkerProcessesGetTheStreamShapingFlags(t *testing.T) {
	s, err := parseFlags([]string{"-replicas", "3"}, flag.ContinueOnError)
	require.NoError(t, err)
	w, err := parseFlags(s.workerArgs("nats://a:4222,nats://b:4222", "worker-2"), flag.ContinueOnError)
	require.NoError(t, err)
	assert.True(t, w.worker)
	assert.Equal(t, "nats://a:4222,nats://b:4222", w.url)
	assert.Equal(t, "worker-2", w.name)
	assert.Equal(t, 3, w.replicas, "workers create the consumer with the coordinator's replicas")
}
