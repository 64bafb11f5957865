package fanoutanthropic

import (
	"errors"
	"fmt"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
)

// An Option configures [Message] and [RunBatch]. Each says which of the
// two it applies to; the other ignores it. Options are plain values: one
// built once may be passed to any number of calls.
type Option func(*config)

type config struct {
	limits   *Limits
	prices   Prices
	count    func(anthropic.Usage) int
	requests []option.RequestOption

	batchRequests int           // most requests in one batch
	batchBytes    int           // most bytes in one batch's creation request
	pollFirst     time.Duration // first wait between polls of a batch
	pollMax       time.Duration // longest wait between polls

	errs []error
}

// The Message Batches API's limits on one batch.
const (
	MaxBatchRequests = 100_000
	MaxBatchBytes    = 256 << 20
)

func newConfig(opts []Option) (*config, error) {
	c := &config{
		count:         RateLimitedTokens,
		batchRequests: MaxBatchRequests,
		batchBytes:    MaxBatchBytes,
		pollFirst:     5 * time.Second,
		pollMax:       time.Minute,
	}
	for _, o := range opts {
		o(c)
	}
	return c, errors.Join(c.errs...)
}

// errZeroClient is the error of a client made without anthropic.NewClient,
// which has no base URL, no key and no HTTP client: every request would
// fail, so none is made.
var errZeroClient = errors.New("fanoutanthropic: the client has no options: make it with anthropic.NewClient")

func (c *config) invalid(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("fanoutanthropic: "+format, args...))
}

// WithLimits makes [Message] feed l the rate-limit headers of every
// response, success or error, so that the runs waiting on l (through
// fanout.WithRateLimit) hold back until the server's budgets have room.
// RunBatch ignores it: batches have limits of their own.
func WithLimits(l *Limits) Option {
	return func(c *config) {
		if l == nil {
			c.invalid("WithLimits(nil)")
			return
		}
		c.limits = l
	}
}

// WithPrices prices usage: [Message] reports the cents of each call with
// fanout.Spend, beside its tokens, and [RunBatch] sets each Result's
// Cost at the batch price, half of p. Without it only tokens are
// reported.
func WithPrices(p Prices) Option {
	return func(c *config) {
		if !p.valid() {
			c.invalid("WithPrices(%+v): prices must not be negative", p)
			return
		}
		c.prices = p
	}
}

// WithTokenCount sets which tokens of a call's usage count, for
// fanout.Spend, fanout.Settle and RunBatch's Cost.Tokens, in place of
// [RateLimitedTokens]. Task.Tokens should estimate the same count.
func WithTokenCount(count func(anthropic.Usage) int) Option {
	return func(c *config) {
		if count == nil {
			c.invalid("WithTokenCount(nil)")
			return
		}
		c.count = count
	}
}

// WithRequestOptions adds SDK request options to every request [Message]
// or [RunBatch] makes, after its own: option.WithMaxRetries(2) here turns
// the SDK's retries back on, for instance.
func WithRequestOptions(opts ...option.RequestOption) Option {
	return func(c *config) { c.requests = append(c.requests, opts...) }
}

// WithBatchLimits caps the size of one batch of [RunBatch]: at most
// requests requests and bytes bytes of JSON in the request that creates
// it. RunBatch splits larger input into several batches. The defaults, and
// the most the API accepts, are [MaxBatchRequests] and [MaxBatchBytes].
func WithBatchLimits(requests, bytes int) Option {
	return func(c *config) {
		if requests < 1 || requests > MaxBatchRequests || bytes < 1 || bytes > MaxBatchBytes {
			c.invalid("WithBatchLimits(%d, %d): want 1 to %d requests and 1 to %d bytes",
				requests, bytes, MaxBatchRequests, MaxBatchBytes)
			return
		}
		c.batchRequests, c.batchBytes = requests, bytes
	}
}

// WithPollInterval sets how [RunBatch] polls a batch until it ends: first
// after first, then at growing intervals (×1.5, with jitter) up to max.
// The default, 5 s up to a minute, suits batches that take minutes to
// hours.
func WithPollInterval(first, max time.Duration) Option {
	return func(c *config) {
		if first <= 0 || max < first {
			c.invalid("WithPollInterval(%v, %v): want 0 < first <= max", first, max)
			return
		}
		c.pollFirst, c.pollMax = first, max
	}
}
