package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	fanoutdebug "github.com/gofanout/fanout/debug"
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

func TestTheDebugPageShowsTheFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	s, err := parseFlags([]string{"-workers", "2", "-kill=false", "-latency", "300ms", "-debug-addr", "127.0.0.1:0"},
		flag.ContinueOnError)
	require.NoError(t, err)
	debug, err := serveDebug(s.debugAddr)
	require.NoError(t, err)
	defer debug.close()
	s.page = debug.page
	web := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

	// Watch the page while the run goes, as someone with a browser would.
	type sighting struct{ workers, queued, running bool }
	seen := make(chan sighting, 1)
	stop := make(chan struct{})
	go func() {
		var got sighting
		defer func() { seen <- got }()
		for {
			if f, ok := natsFleet(web, debug.url); ok {
				got.workers = got.workers || workersAre(f.Workers, map[string]int{"worker-1": 2, "worker-2": 2})
				if len(f.Batches) == 1 {
					got.queued = got.queued || f.Batches[0].Queued > 0
					got.running = got.running || f.Batches[0].Running > 0
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	rep, err := coordinate(s)
	close(stop)
	require.NoError(t, err)
	got := <-seen
	assert.True(t, got.workers, "the page listed both worker processes with their slots")
	assert.True(t, got.queued, "the page showed the batch's tasks queued")
	assert.True(t, got.running, "the page showed the batch's tasks running")

	after, ok := natsFleet(web, debug.url)
	require.True(t, ok)
	assert.Empty(t, after.Workers, "the client closed with the run: it listens no more")
	assert.Empty(t, after.Batches, "nothing waits")
	assert.Equal(t, int64(rep.results.Len()), after.Replies)
	assert.Equal(t, rep.stats.Sent, after.Sent)
}

// natsFleet reads the page's JSON endpoint and returns its "nats" fleet.
func natsFleet(web *http.Client, url string) (fanoutdebug.Fleet, bool) {
	resp, err := web.Get(url + "api")
	if err != nil {
		return fanoutdebug.Fleet{}, false
	}
	defer resp.Body.Close()
	var snap fanoutdebug.Snapshot
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&snap) != nil {
		return fanoutdebug.Fleet{}, false
	}
	for _, f := range snap.Fleets {
		if f.Name == "nats" && f.Error == "" {
			return f.Fleet, true
		}
	}
	return fanoutdebug.Fleet{}, false
}

// workersAre reports whether workers are those named in slots, with
// those slots.
func workersAre(workers []fanoutdebug.FleetWorker, slots map[string]int) bool {
	if len(workers) != len(slots) {
		return false
	}
	for _, w := range workers {
		if slots[w.Name] != w.Slots {
			return false
		}
	}
	return true
}
