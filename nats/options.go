package fanoutnats

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Option configures a [Client] or a [Worker]. Clients and workers that
// work together must agree on the prefix, stream, consumer and codec.
type Option func(*config)

type config struct {
	prefix        string
	tenant        string
	stream        string
	consumer      string
	replicas      int
	storage       jetstream.StorageType
	bind          bool
	ackWait       time.Duration
	maxDeliver    int
	codec         Codec
	concurrency   int
	resultTimeout time.Duration
	retention     time.Duration
	name          string
	status        time.Duration // a worker's status interval; 0: no reports
	heartbeat     time.Duration // 0: ackWait/3; negative: none (tests)
	errs          []error
}

func newConfig(opts []Option) (*config, error) {
	c := &config{
		prefix:      "fanout",
		tenant:      "default",
		stream:      "FANOUT",
		consumer:    "workers",
		replicas:    1,
		storage:     jetstream.FileStorage,
		ackWait:     30 * time.Second,
		maxDeliver:  5,
		codec:       JSON{},
		concurrency: 8,
		retention:   24 * time.Hour,
		status:      DefaultStatusInterval,
	}
	for _, opt := range opts {
		if opt == nil {
			c.invalid("nil Option")
			continue
		}
		opt(c)
	}
	if len(c.errs) > 0 {
		return nil, c.errs[0]
	}
	return c, nil
}

func (c *config) invalid(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("fanoutnats: "+format, args...))
}

// WithPrefix sets the first token of every subject used (default
// "fanout"): tasks go to PREFIX.task.>, replies to PREFIX.reply.>, cancels
// to PREFIX.cancel.>, workers' status reports to PREFIX.status.> and
// PREFIX.running.>. Distinct prefixes (with distinct streams) keep
// independent deployments, and their fleets, apart on one cluster.
func WithPrefix(p string) Option {
	return func(c *config) {
		if !validToken(p) {
			c.invalid("WithPrefix(%q): prefix must be one subject token of letters, digits, '-' or '_'", p)
			return
		}
		c.prefix = p
	}
}

// WithTenant sets a client's tenant (default "default"), the token after
// the kind in every subject it uses: its tasks go to PREFIX.task.TENANT.>,
// their replies to PREFIX.reply.TENANT.>, its cancels to
// PREFIX.cancel.TENANT.>. Granting each tenant's NATS user only its own
// subjects keeps tenants from reading or forging each other's results
// (see the README for a server configuration). A worker serves every
// tenant and answers a task only on its own tenant's reply subject.
// Workers ignore this option.
func WithTenant(t string) Option {
	return func(c *config) {
		if !validToken(t) {
			c.invalid("WithTenant(%q): tenant must be one subject token of letters, digits, '-' or '_'", t)
			return
		}
		c.tenant = t
	}
}

// WithReplyRetention sets how long the replies stream keeps a reply
// (default 24 h): how long after a crash a batch can still be resumed
// with [Client.ResumeBatch] without running its finished keys again. It
// applies when the replies stream is created; an existing stream keeps
// its own MaxAge.
func WithReplyRetention(d time.Duration) Option {
	return func(c *config) {
		if d < time.Second {
			c.invalid("WithReplyRetention(%v): must be at least 1s", d)
			return
		}
		c.retention = d
	}
}

// WithStream names the work-queue stream (default "FANOUT"). The replies
// stream is named after it, NAME_REPLIES.
func WithStream(name string) Option {
	return func(c *config) {
		if !validToken(name) {
			c.invalid("WithStream(%q): invalid stream name", name)
			return
		}
		c.stream = name
	}
}

// WithConsumer names the durable consumer the workers share (default
// "workers").
func WithConsumer(name string) Option {
	return func(c *config) {
		if !validToken(name) {
			c.invalid("WithConsumer(%q): invalid consumer name", name)
			return
		}
		c.consumer = name
	}
}

// WithReplicas sets the streams' and consumer's replicas when they are
// created (default 1; use 3 on a three-node cluster). A stream or consumer
// that exists already keeps its own replicas.
func WithReplicas(n int) Option {
	return func(c *config) {
		if n < 1 || n > 5 {
			c.invalid("WithReplicas(%d): replicas must be 1 to 5", n)
			return
		}
		c.replicas = n
	}
}

// WithMemoryStorage keeps the task and replies streams in memory rather
// than on disk: faster, but a server that restarts loses them. Clients
// and workers then create them again, and clients send their unanswered
// tasks again (see [Stats.Republished]). Like [WithReplicas] it applies
// only when a stream is created.
func WithMemoryStorage() Option {
	return func(c *config) { c.storage = jetstream.MemoryStorage }
}

// WithBind only uses existing streams and consumer, provisioned by an
// operator, and never creates them: NewClient and NewWorker then fail,
// naming what is missing, if they do not exist, and a Worker's Serve
// returns an error if they disappear. Without it they are created when
// missing, again after a server lost them; an existing stream or consumer
// is never changed either way.
func WithBind() Option {
	return func(c *config) { c.bind = true }
}

// WithAckWait sets how long a task may go without an acknowledgement or
// heartbeat before JetStream redelivers it to another worker (default
// 30 s). Workers send in-progress heartbeats every third of it while a
// handler runs, so it bounds how long a crashed worker holds a task, not
// how long a task may run. It applies when the consumer is created; an
// existing consumer keeps its own AckWait.
func WithAckWait(d time.Duration) Option {
	return func(c *config) {
		if d < 50*time.Millisecond {
			c.invalid("WithAckWait(%v): must be at least 50ms", d)
			return
		}
		c.ackWait = d
	}
}

// WithMaxDeliver caps how many times JetStream delivers one task (default
// 5). A task that exhausts its deliveries fails with [ErrMaxDeliveries].
// It applies when the consumer is created; an existing consumer keeps its
// own MaxDeliver.
func WithMaxDeliver(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.invalid("WithMaxDeliver(%d): must be at least 1", n)
			return
		}
		c.maxDeliver = n
	}
}

// WithCodec encodes arguments and results with codec instead of JSON.
func WithCodec(codec Codec) Option {
	return func(c *config) {
		if codec == nil {
			c.invalid("WithCodec(nil)")
			return
		}
		c.codec = codec
	}
}

// WithConcurrency sets how many handlers a worker runs at once (default 8).
func WithConcurrency(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.invalid("WithConcurrency(%d): must be at least 1", n)
			return
		}
		c.concurrency = n
	}
}

// WithResultTimeout is the client's backstop: a remote task with no reply
// d after it was sent fails with [ErrNoReply], whatever its context says.
// By default (and with d = 0) there is none beyond the task's context and
// [ErrMaxDeliveries], so a run with no deadline can wait forever on a
// fleet with no free worker or on a lost reply (see [Remote]); set it, or
// give the run a deadline, whenever that must not happen.
func WithResultTimeout(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.invalid("WithResultTimeout(%v): must not be negative", d)
			return
		}
		c.resultTimeout = d
	}
}

// WithName names a worker in replies, errors and its status reports
// (default: a random id).
func WithName(name string) Option {
	return func(c *config) { c.name = name }
}

// DefaultStatusInterval is how often a worker reports its status unless
// [WithStatusInterval] says otherwise.
const DefaultStatusInterval = 5 * time.Second

// WithStatusInterval sets how often a worker publishes its status report
// while Serve runs (default [DefaultStatusInterval]), which clients read
// with [Client.Fleet]. A worker also reports when Serve starts, and says
// goodbye when it ends; a client forgets a worker that missed three of
// its reports in a row. d = 0 turns the reports off: the worker then
// publishes nothing beyond its replies, and no Fleet lists it. A negative
// d, or one under 10 ms, is an error. Clients ignore this option.
func WithStatusInterval(d time.Duration) Option {
	return func(c *config) {
		if d < 0 || 0 < d && d < minStatusInterval {
			c.invalid("WithStatusInterval(%v): must be 0 (no reports) or at least %v", d, minStatusInterval)
			return
		}
		c.status = d
	}
}

// minStatusInterval keeps a worker from flooding its clients with reports.
const minStatusInterval = 10 * time.Millisecond

// Codec encodes task arguments and results. It must be safe for
// concurrent use.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default [Codec], encoding/json.
type JSON struct{}

// Marshal encodes v as JSON.
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes JSON data into v.
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
