package fanoutnats

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// errNilConn is the error of a constructor given no connection.
var errNilConn = errors.New("fanoutnats: nil *nats.Conn")

// errMissing is the error of a stream or consumer that [WithBind] needs
// and that does not exist.
var errMissing = errors.New("fanoutnats: WithBind")

// taskSubjects is the subject filter of every task message.
func (c *config) taskSubjects() string { return c.prefix + ".task.>" }

// replySubjects is what the replies stream captures: P.reply.T.C.B.K.
func (c *config) replySubjects() string { return c.prefix + ".reply.*.*.*.*" }

func (c *config) repliesStream() string { return c.stream + "_REPLIES" }

// replyTransform stores P.reply.T.C.B.K as P.reply.T.B.K: the client that
// sent the task does not matter to a later reader, such as a client that
// resumes the batch after a crash.
func (c *config) replyTransform() *jetstream.SubjectTransformConfig {
	return &jetstream.SubjectTransformConfig{
		Source:      c.replySubjects(),
		Destination: c.prefix + ".reply.{{wildcard(1)}}.{{wildcard(3)}}.{{wildcard(4)}}",
	}
}

func (c *config) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.stream,
		Description: "fanout tasks (work queue)",
		Subjects:    []string{c.taskSubjects()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     c.storage,
		Replicas:    c.replicas,
		Duplicates:  2 * time.Minute,
		AllowDirect: true,
	}
}

func (c *config) repliesConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:             c.repliesStream(),
		Description:      "fanout replies",
		Subjects:         []string{c.replySubjects()},
		SubjectTransform: c.replyTransform(),
		Retention:        jetstream.LimitsPolicy,
		MaxAge:           c.retention,
		Storage:          c.storage,
		Replicas:         c.replicas,
		AllowDirect:      true,
	}
}

func (c *config) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       c.consumer,
		Description:   "fanout workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.ackWait,
		MaxDeliver:    c.maxDeliver,
		FilterSubject: c.taskSubjects(),
		MaxAckPending: -1,
		Replicas:      c.replicas,
	}
}

// openStream looks the task stream up and, unless [WithBind] forbids it,
// creates it if it does not exist. An existing stream is never updated:
// updating a stream while workers create consumers on it races inside
// nats-server, and it would overwrite what an operator provisioned. The
// stream found is checked instead, and any difference that would break
// fanoutnats is reported.
func openStream(ctx context.Context, js jetstream.JetStream, c *config) (jetstream.Stream, error) {
	return open(ctx, js, c, c.streamConfig(), func(sc jetstream.StreamConfig) []string {
		return streamProblems(sc, c.taskSubjects(), c.replySubjects())
	})
}

// openReplies opens the replies stream as openStream opens the tasks'.
func openReplies(ctx context.Context, js jetstream.JetStream, c *config) (jetstream.Stream, error) {
	return open(ctx, js, c, c.repliesConfig(), func(sc jetstream.StreamConfig) []string {
		return repliesProblems(sc, c)
	})
}

func open(ctx context.Context, js jetstream.JetStream, c *config, want jetstream.StreamConfig,
	problems func(jetstream.StreamConfig) []string) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if c.bind {
			return nil, fmt.Errorf("%w: stream %q does not exist; provision it with subjects %q (see the README)",
				errMissing, want.Name, want.Subjects)
		}
		s, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another client or worker created it meanwhile, with a
			// different configuration: use theirs.
			s, err = js.Stream(ctx, want.Name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: open stream %q: %w", want.Name, err)
	}
	if p := problems(s.CachedInfo().Config); len(p) > 0 {
		return nil, fmt.Errorf("fanoutnats: stream %q is not usable as it is (fanoutnats never changes an existing stream): %s",
			want.Name, strings.Join(p, "; "))
	}
	return s, nil
}

// streamProblems lists what keeps an existing stream from serving as the
// task queue.
func streamProblems(sc jetstream.StreamConfig, tasks, replies string) []string {
	var p []string
	if sc.Retention != jetstream.WorkQueuePolicy {
		p = append(p, fmt.Sprintf("retention is %v, want WorkQueue", sc.Retention))
	}
	if !slices.ContainsFunc(sc.Subjects, func(s string) bool { return subjectCovers(s, tasks) }) {
		p = append(p, fmt.Sprintf("subjects %q do not cover %q", sc.Subjects, tasks))
	}
	if slices.ContainsFunc(sc.Subjects, func(s string) bool { return subjectCovers(s, replies) }) {
		p = append(p, fmt.Sprintf("subjects %q capture the replies %q too", sc.Subjects, replies))
	}
	return append(p, flagProblems(sc,
		flag{sc.DenyDelete, "deny_delete (cancelled tasks are deleted)"},
		flag{sc.DenyPurge, "deny_purge (a cancelled run purges its tasks)"})...)
}

// repliesProblems lists what keeps an existing stream from keeping the
// replies.
func repliesProblems(sc jetstream.StreamConfig, c *config) []string {
	var p []string
	if sc.Retention != jetstream.LimitsPolicy {
		p = append(p, fmt.Sprintf("retention is %v, want Limits", sc.Retention))
	}
	if !slices.ContainsFunc(sc.Subjects, func(s string) bool { return subjectCovers(s, c.replySubjects()) }) {
		p = append(p, fmt.Sprintf("subjects %q do not cover %q", sc.Subjects, c.replySubjects()))
	}
	if want := c.replyTransform(); sc.SubjectTransform == nil || *sc.SubjectTransform != *want {
		p = append(p, fmt.Sprintf("subject transform is %v, want %q to %q", sc.SubjectTransform, want.Source, want.Destination))
	}
	if !sc.AllowDirect {
		p = append(p, "allow_direct is off (clients read their replies with direct gets)")
	}
	return append(p, flagProblems(sc)...)
}

type flag struct {
	set  bool
	name string
}

func flagProblems(sc jetstream.StreamConfig, more ...flag) []string {
	var p []string
	for _, f := range append([]flag{
		{sc.Sealed, "sealed"},
		{sc.NoAck, "no_ack (publishes need acknowledgements)"},
	}, more...) {
		if f.set {
			p = append(p, "it is "+f.name)
		}
	}
	return p
}

// openConsumer looks the workers' durable consumer up and, unless
// [WithBind] forbids it, creates it if it does not exist. Like the stream,
// an existing consumer is used as it is, never updated, once checked.
func openConsumer(ctx context.Context, s jetstream.Stream, c *config) (jetstream.Consumer, error) {
	cons, err := s.Consumer(ctx, c.consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if c.bind {
			return nil, fmt.Errorf("%w: consumer %q of stream %q does not exist; provision a durable pull consumer with explicit acks",
				errMissing, c.consumer, c.stream)
		}
		cons, err = s.CreateConsumer(ctx, c.consumerConfig())
		if errors.Is(err, jetstream.ErrConsumerExists) {
			cons, err = s.Consumer(ctx, c.consumer)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fanoutnats: open consumer %q of stream %q: %w", c.consumer, c.stream, err)
	}
	if problems := consumerProblems(cons.CachedInfo().Config, c.taskSubjects()); len(problems) > 0 {
		return nil, fmt.Errorf("fanoutnats: consumer %q of stream %q is not usable as it is (fanoutnats never changes an existing consumer): %s",
			c.consumer, c.stream, strings.Join(problems, "; "))
	}
	return cons, nil
}

// consumerProblems lists what keeps an existing consumer from serving the
// workers. Push consumers are refused by the client library already.
func consumerProblems(cc jetstream.ConsumerConfig, tasks string) []string {
	var p []string
	if cc.AckPolicy != jetstream.AckExplicitPolicy {
		p = append(p, fmt.Sprintf("ack policy is %v, want AckExplicit", cc.AckPolicy))
	}
	filters := cc.FilterSubjects
	if cc.FilterSubject != "" {
		filters = append(filters, cc.FilterSubject)
	}
	if len(filters) > 0 && !slices.ContainsFunc(filters, func(f string) bool { return subjectCovers(f, tasks) }) {
		p = append(p, fmt.Sprintf("filter subjects %q do not cover %q", filters, tasks))
	}
	return p
}

// subjectCovers reports whether every subject that subject (which may hold
// wildcards) matches is also matched by pattern.
func subjectCovers(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" {
			return i < len(st)
		}
		if i >= len(st) || st[i] == ">" || p != "*" && p != st[i] {
			return false
		}
	}
	return len(pt) == len(st)
}
