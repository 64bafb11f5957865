package fanoutnats

import (
	"context"
	"time"
)

// WithoutHeartbeatForTest stops a worker from sending in-progress
// heartbeats, so that tests can make JetStream redeliver a running task.
func WithoutHeartbeatForTest() Option {
	return func(c *config) { c.heartbeat = -1 }
}

// ErrCancelledForTest is the cause a handler sees when its client
// cancels it.
var ErrCancelledForTest = errCancelled

// EnqueueForTest publishes a task with the given deadline and does not
// wait for its reply, as a client that died would leave it.
func EnqueueForTest(ctx context.Context, c *Client, name, key string, args any, deadline time.Time) error {
	body, err := c.cfg.codec.Marshal(args)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	m := c.taskMsg(dctx, c.Batch(), "test-"+key, name, key, body)
	_, err = c.js.PublishMsg(ctx, m)
	return err
}
