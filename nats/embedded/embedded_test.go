package embedded_test

import (
	"strings"
	"testing"

	"github.com/gofanout/fanout/nats/embedded"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStartServesJetStreamOnLoopback(t *testing.T) {
	srv, err := embedded.Start(t.TempDir(), embedded.WithMaxPayload(4096))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.HasPrefix(srv.URL(), "nats://127.0.0.1:") {
		t.Errorf("URL %q is not on 127.0.0.1", srv.URL())
	}
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.MaxPayload(); got != 4096 {
		t.Errorf("MaxPayload = %d, want 4096", got)
	}
	if !srv.Server().JetStreamEnabled() {
		t.Error("JetStream is off")
	}
}
