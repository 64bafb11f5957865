package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gofanout/fanout/examples/material/advisor"
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
	s, err := parseFlags([]string{"-workers", "2"}, flag.ContinueOnError)
	require.NoError(t, err)
	rep, err := coordinate(s)
	var out bytes.Buffer
	rep.print(&out)
	t.Log("\n" + out.String())
	require.NoError(t, err)
	require.NotNil(t, rep.results)

	samples := advisor.Samples()
	keys := len(samples) * len(advisor.Families)
	assert.Equal(t, keys, rep.results.Len())
	assert.Equal(t, keys, rep.results.Succeeded())
	for _, key := range []string{"drone-arm/composite", "door-seal/elastomer", "kiln-support/ceramic", "gate-hinge/wood"} {
		_, ok := rep.results.Get(key)
		assert.True(t, ok, key)
	}
	assert.Equal(t, 2, rep.workers)
	assert.Contains(t, rep.killed, "worker-1 (pid ", "a worker process was killed mid-run")
	assert.Positive(t, rep.stats.Redelivered, "the killed worker's tasks were redelivered: %+v", rep.stats)
	assert.Zero(t, rep.stats.Duplicates)
	assert.Zero(t, rep.stats.MaxDelivers)
	assert.Contains(t, out.String(), "-> COMPOSITE (confidence 0.67)")
	assertSameAsInProcess(t, rep.parts)
}

// assertSameAsInProcess checks each part's verdict and analyses against
// the in-process recommender's for the same part.
func assertSameAsInProcess(t *testing.T, parts []partRun) {
	t.Helper()
	local := advisor.Recommender{Analyst: advisor.TableAnalyst{}, Judge: advisor.TableJudge{}, Timeout: time.Second}
	require.Len(t, parts, len(advisor.Samples()))
	for i, name := range advisor.Samples() {
		p, err := advisor.LoadPart(name)
		require.NoError(t, err)
		want, err := local.Recommend(context.Background(), p)
		require.NoError(t, err)
		got := parts[i]
		assert.Equal(t, p, got.part, name)
		require.NoError(t, got.err, name)
		assert.Equal(t, want.Verdict, got.verdict, name)
		require.Len(t, got.answers, len(want.Analyses), name)
		for j, a := range want.Analyses {
			require.NoError(t, got.answers[j].Err, "%s/%s", name, a.Key)
			assert.Equal(t, a.Value, got.answers[j].Value.Analysis, "%s/%s", name, a.Key)
		}
	}
}

func TestWorkerProcessesGetTheStreamShapingFlags(t *testing.T) {
	s, err := parseFlags([]string{"-replicas", "3", "-latency", "40ms"}, flag.ContinueOnError)
	require.NoError(t, err)
	w, err := parseFlags(s.workerArgs("nats://a:4222,nats://b:4222", "worker-2"), flag.ContinueOnError)
	require.NoError(t, err)
	assert.True(t, w.worker)
	assert.Equal(t, "nats://a:4222,nats://b:4222", w.url)
	assert.Equal(t, "worker-2", w.name)
	assert.Equal(t, 3, w.replicas, "workers create the consumer with the coordinator's replicas")
	assert.Equal(t, 40*time.Millisecond, w.latency, "workers simulate the analysts' latency asked for")
}

func TestAnUnknownPartFailsBeforeAnyWorkerStarts(t *testing.T) {
	rep, err := coordinate(settings{part: "no-such-part", workers: 2})
	assert.ErrorContains(t, err, "no sample part")
	assert.Nil(t, rep.results)
	assert.Zero(t, rep.workers)
}
