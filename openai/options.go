package fanoutopenai

import (
	"errors"
	"fmt"
	"time"

	"github.com/openai/openai-go/v3/option"
)

// An Option configures [Chat], [Response] or [RunBatch]. Each says which
// of them it applies to; the others ignore it. Options are plain values:
// one built once may be passed to any number of calls.
type Option func(*config)

type config struct {
	prices      Prices
	limits      *Limits
	reqOpts     []option.RequestOption
	callOpts    []option.RequestOption // of Chat and Response: reqOpts and more
	maxRequests int                    // per batch file
	maxBytes    int                    // per batch file
	pollFirst   time.Duration
	pollMax     time.Duration
	errs        []error
}

// The Batch API's limits per input file: the defaults of
// [WithBatchLimits], and the most it accepts.
const (
	MaxBatchRequests = 50_000
	MaxBatchBytes    = 200_000_000
)

// How often to ask whether a batch is done: batches take minutes to
// hours, so the poll starts at 5 s and slows to once a minute.
const (
	defaultPollFirst = 5 * time.Second
	defaultPollMax   = time.Minute
)

func newConfig(opts []Option) (*config, error) {
	c := &config{
		maxRequests: MaxBatchRequests,
		maxBytes:    MaxBatchBytes,
		pollFirst:   defaultPollFirst,
		pollMax:     defaultPollMax,
	}
	for _, o := range opts {
		if o == nil {
			c.invalid("nil Option")
			continue
		}
		o(c)
	}
	return c, errors.Join(c.errs...)
}

func (c *config) invalid(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("openai: "+format, args...))
}

// WithPrices makes [Chat] and [Response] report the cost of each call in
// cents through fanout.Spend, beside its tokens, and [RunBatch] set each
// key's Result.Cost at the Batch API's half price. Without it only tokens
// are reported.
func WithPrices(p Prices) Option {
	return func(c *config) {
		if p.Input < 0 || p.CachedInput < 0 || p.Output < 0 {
			c.invalid("WithPrices(%+v): prices must not be negative", p)
			return
		}
		c.prices = p
	}
}

// WithLimits makes [Chat] and [Response] feed l the x-ratelimit-* headers
// of every response they get, success or error. Pass the same l to
// fanout.WithRateLimit so that the tasks wait on it. (Or feed l from every
// request of a client with option.WithMiddleware(l.Middleware()).)
func WithLimits(l *Limits) Option {
	return func(c *config) {
		if l == nil {
			c.invalid("WithLimits(nil): limits must not be nil")
			return
		}
		c.limits = l
	}
}

// WithRequestOptions adds SDK request options (a header, a timeout per
// request, ...) to every request [Chat], [Response] and [RunBatch] make,
// after their own: option.WithMaxRetries(2) here turns the SDK's retries
// back on, for instance, and fanout's MaxAttempts then no longer bounds
// the requests a key makes.
func WithRequestOptions(opts ...option.RequestOption) Option {
	return func(c *config) { c.reqOpts = append(c.reqOpts, opts...) }
}

// WithBatchLimits caps each input file of [RunBatch] at requests requests
// and bytes bytes of JSONL; larger input is split into several batches.
// The defaults, and the most the API accepts, are [MaxBatchRequests] and
// [MaxBatchBytes].
func WithBatchLimits(requests, bytes int) Option {
	return func(c *config) {
		if requests < 1 || requests > MaxBatchRequests || bytes < 1 || bytes > MaxBatchBytes {
			c.invalid("WithBatchLimits(%d, %d): want 1 to %d requests and 1 to %d bytes",
				requests, bytes, MaxBatchRequests, MaxBatchBytes)
			return
		}
		c.maxRequests, c.maxBytes = requests, bytes
	}
}

// WithPollInterval sets how often [RunBatch] asks whether a batch is done:
// first after first, then less and less often (×1.5 each time, with a
// little jitter), at most every max. The default is 5 s growing to a
// minute.
func WithPollInterval(first, max time.Duration) Option {
	return func(c *config) {
		if first <= 0 || max < first {
			c.invalid("WithPollInterval(%v, %v): want 0 < first <= max", first, max)
			return
		}
		c.pollFirst, c.pollMax = first, max
	}
}
