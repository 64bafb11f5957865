package main

import (
	"os"
	"slices"
	"testing"

	fanoutnats "github.com/gofanout/fanout/nats"
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
	opts := []fanoutnats.Option{fanoutnats.WithAckWait(ackWait)}
	if err := coordinate("", 2, 12, true, opts); err != nil {
		t.Fatal(err)
	}
}
