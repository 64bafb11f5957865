// Package fanoutnats runs fanout tasks on worker processes through NATS
// JetStream, so that one keyed fan-out spreads over many machines while
// fanout.Run, its limits, timeouts, retries, hedging and aggregators keep
// working unchanged.
//
// A [Client] turns a named remote call into an ordinary [fanout.Task] with
// [Remote]; a [Worker] registers typed handlers with [Handle] and serves
// them. Arguments and results travel as JSON ([WithCodec] for others).
//
//	c, _ := fanoutnats.NewClient(ctx, nc)
//	b := c.Batch() // one per run: cancelling the run purges its tasks
//	tasks := []fanout.Task[Score]{
//		fanoutnats.Remote[Query, Score](b, "score", "Fe2O3", Query{...}),
//	}
//	rs, err := fanout.Run(ctx, tasks, fanout.WithTaskTimeout(30*time.Second))
//
//	w, _ := fanoutnats.NewWorker(ctx, nc)
//	fanoutnats.Handle(w, "score", score) // func(context.Context, Query) (Score, error)
//	err := w.Serve(ctx)
//
// # Design
//
// Tasks go to a work-queue stream (default FANOUT, subjects
// PREFIX.task.TENANT.NAME.BATCH.KEY) that every worker pulls from through
// one shared durable consumer: each task is handed to one worker at a
// time and removed when acknowledged. The key's subject token is the key
// itself when it is plain letters, digits, '-' and '_', else its base64url
// form (a hash for long keys); the raw key travels in the Fanout-Key
// header (Go-quoted when it holds control characters), and is limited to
// [MaxKeyLen] bytes.
//
// Replies are stored: a worker publishes the result to
// PREFIX.reply.TENANT.CLIENT.BATCH.KEY, which the client subscribes to and
// the replies stream (FANOUT_REPLIES) captures, stored as
// PREFIX.reply.TENANT.BATCH.KEY, and acknowledges the task only once the
// reply is stored. A client that reconnects reads the replies it missed
// from the stream; a client that restarted resumes a batch by its ID
// ([Client.ResumeBatch]); a task redelivered after its reply was stored is
// acknowledged without running again. The replies stream keeps replies
// for [WithReplyRetention]. For in-process runs, [OpenJournal] gives a
// [fanout.Journal] in a JetStream key-value bucket that the processes of
// a fleet share.
//
// The task's deadline (its context's, as [fanout.WithTaskTimeout] sets
// it) travels in the Fanout-Deadline header; the worker runs the handler
// under it, with cause [fanout.ErrTaskTimeout], and does not start a task
// whose deadline passed while it was queued. Clocks of clients and workers
// are assumed to agree to well within the deadlines used.
//
// A worker asks for exactly as many tasks as it has free slots, with idle
// heartbeats, so it never holds a task it cannot start, and a pull
// request lost with its server (a consumer leader that died, a server that
// restarted) is noticed within about a second and sent again. While a
// handler runs, its worker sends in-progress heartbeats every third of
// AckWait. A worker that dies stops sending them, and JetStream gives the
// task to another worker after AckWait ([WithAckWait]). If a stalled worker
// was only slow and replies after all, the client keeps the first reply of
// each attempt and drops the others, counting them in [Stats.Duplicates]:
// a key never gets two Results. A task delivered [WithMaxDeliver] times
// without a reply becomes [ErrMaxDeliveries] for its key, from JetStream's
// max-deliveries advisory. JetStream sends that advisory when it next tries
// to deliver the task, which needs some worker with a free slot: a fleet
// stalled entirely sends none, and the run's own deadline (or the client's
// [WithResultTimeout]) is the backstop. A run with neither waits as long
// as the fleet does; see [Remote].
//
// A worker stopped through its Serve context hands its running tasks back
// at once (a negative acknowledgement), so they do not wait out AckWait;
// a handler that returns a result all the same has it stored, not run
// again.
//
// When a task's context ends, the attempt returns at once and the client
// removes its task from the queue in the background, and tells workers to
// stop it on PREFIX.cancel.TENANT.BATCH.ATTEMPT. When the whole run stops
// — fail-fast, an aggregator that decided, a run timeout, the caller's
// context — the first task to notice waits for the batch's publishes in
// flight to land, purges the batch's queued tasks with one
// subject-filtered purge and cancels its running ones on
// PREFIX.cancel.TENANT.BATCH, and the run returns only once that is done,
// unless the server cannot be reached within 2 s: the client then purges
// in the background, and workers skip the batch's tasks all the same.
//
// A server that lost the streams or the consumer (memory storage, a
// restart) gets them created again by clients and workers; clients then
// send again the tasks it lost ([Stats.Republished]).
//
// Handler errors keep their kind across the wire (see [RemoteError] and
// [Code]): a timeout matches fanout.ErrTaskTimeout, a [backoff.Permanent]
// error comes back permanent, a panic comes back as a *fanout.PanicError
// with the worker's stack, a runtime.Goexit as [fanout.ErrGoexit] (once,
// not redelivered), and a RetryAfter delay is kept, so the core's
// retry policy decides as it would locally. Arguments or results over the
// server's max_payload, and keys over [MaxKeyLen], fail with [ErrTooLarge].
//
// # Fleet
//
// While Serve runs, a worker reports its status as it starts, every
// [WithStatusInterval] (default 5 s) and, as a goodbye, when it stops:
// its name, slots, slots in use and counters on PREFIX.status.WORKER
// and, for each tenant with tasks running on it, how many of each of the
// tenant's batches it runs on PREFIX.running.TENANT.WORKER. They are
// plain NATS messages, never stored. [Client.Fleet] listens to them from
// its first call on and returns the workers, the client's batches with
// their queued and running tasks, and the client's counters: what a
// status page, such as the debug module's, shows of a fleet.
//
// # Tenants
//
// Every subject carries the client's tenant ([WithTenant]), so subject
// permissions keep tenants from reading each other's results; a worker
// answers a task only on the reply subject its task's subject allows.
// Workers serve every tenant under their prefix, so every tenant may hear
// their status reports, but only of its own batches. The README gives a
// server configuration with users and permissions.
//
// # Connecting
//
// [Connect] dials a list of servers and passes any nats.Option through
// (credentials file, nkey, user and password, TLS). NewClient and
// NewWorker look the streams and consumer up and create them only if they
// do not exist (with [WithReplicas] on a cluster), so that any number of
// clients and workers may start at once; or, with [WithBind], only use
// operator-provisioned ones. An existing stream or consumer is never
// updated: its own settings stay, and one that cannot work (not a work
// queue, subjects that miss the tasks, acks not explicit, ...) is an error
// naming what differs. The sub-package embedded starts an in-process server for
// tests, examples and single-machine use; it is separate so that programs
// connecting to a real cluster do not link the server.
//
// Clients, batches, workers and journals are safe for concurrent use.
// Measured overhead is in BENCHMARKS.md: a remote task costs about 1.1×
// a hand-written JetStream round trip doing the same steps, alone and at
// throughput.
package fanoutnats
