package fanoutnats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Connect dials the NATS servers at urls (any of them; the client learns
// the rest of the cluster) with reconnection that never gives up, then
// applies opts: pass nats.UserCredentials for a .creds file,
// nats.NkeyOptionFromSeed for an nkey, nats.UserInfo for a user and
// password, nats.RootCAs / nats.ClientCert for TLS, and so on. The caller
// owns the connection and closes it after the clients and workers using it.
func Connect(urls []string, opts ...nats.Option) (*nats.Conn, error) {
	if len(urls) == 0 {
		return nil, errors.New("fanoutnats: Connect needs at least one server URL")
	}
	all := append([]nats.Option{
		nats.Name("fanout"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
	}, opts...)
	nc, err := nats.Connect(strings.Join(urls, ","), all...)
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: connect to %v: %w", urls, err)
	}
	return nc, nil
}

func (c *config) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.stream,
		Description: "fanout tasks (work queue)",
		Subjects:    []string{c.prefix + ".task.>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     c.storage,
		Replicas:    c.replicas,
		Duplicates:  2 * time.Minute,
	}
}

func (c *config) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       c.consumer,
		Description:   "fanout workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.ackWait,
		MaxDeliver:    c.maxDeliver,
		FilterSubject: c.prefix + ".task.>",
		MaxAckPending: -1,
		Replicas:      c.replicas,
	}
}

// openStream creates or updates the task stream, or with WithBind checks
// that it exists and is a work queue over the task subjects.
func openStream(ctx context.Context, js jetstream.JetStream, c *config) (jetstream.Stream, error) {
	if !c.bind {
		s, err := js.CreateOrUpdateStream(ctx, c.streamConfig())
		if err != nil {
			return nil, fmt.Errorf("fanoutnats: create or update stream %q: %w", c.stream, err)
		}
		return s, nil
	}
	s, err := js.Stream(ctx, c.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("fanoutnats: WithBind: stream %q does not exist; provision it with subjects %q and work-queue retention", c.stream, c.prefix+".task.>")
	}
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: bind stream %q: %w", c.stream, err)
	}
	info := s.CachedInfo()
	if info.Config.Retention != jetstream.WorkQueuePolicy {
		return nil, fmt.Errorf("fanoutnats: WithBind: stream %q has %v retention, want work-queue", c.stream, info.Config.Retention)
	}
	return s, nil
}

// openConsumer creates or updates the workers' durable consumer, or with
// WithBind checks that it exists.
func openConsumer(ctx context.Context, s jetstream.Stream, c *config) (jetstream.Consumer, error) {
	if !c.bind {
		cons, err := s.CreateOrUpdateConsumer(ctx, c.consumerConfig())
		if err != nil {
			return nil, fmt.Errorf("fanoutnats: create or update consumer %q: %w", c.consumer, err)
		}
		return cons, nil
	}
	cons, err := s.Consumer(ctx, c.consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("fanoutnats: WithBind: consumer %q of stream %q does not exist; provision a durable pull consumer with explicit acks", c.consumer, c.stream)
	}
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: bind consumer %q: %w", c.consumer, err)
	}
	return cons, nil
}
