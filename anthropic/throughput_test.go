package fanoutanthropic_test

import (
	"context"
	"hash/fnv"
	"strconv"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gofanout/fanout"
	fanoutanthropic "github.com/gofanout/fanout/anthropic"
)

// The scenario of issue 11: 200 calls of about 500 tokens each (480 in,
// 20 out) against a budget of 25 000 tokens per 2 s, refilled
// continuously, under fanout.WithRetry(MaxAttempts: 4). The budget's own
// floor is 200 × 500 / 25 000 × 2 s = 8 s (less the first full bucket,
// which the server hands out at once: 6 s).
const (
	issueCalls   = 200
	issueTokens  = 500
	issueBudget  = 25_000
	issueWindow  = 2 * time.Second
	issueAttempt = 4
)

var issueFloor = time.Duration(issueCalls * issueTokens / issueBudget * int(issueWindow))

// throughput is what one run of the scenario measured.
type throughput struct {
	succeeded, hits, tooMany, maxPerKey int
	wall                                time.Duration
}

// The glue of runIssue11.
const (
	glueFull    = "fanoutanthropic" // Message, fed to a Limits the run waits on
	glueMessage = "message-only"    // Message alone: no SDK retries, errors classified
	glueNone    = "none"            // the SDK as it comes: its two retries, errors as they are
)

// runIssue11 runs the scenario once against a fresh fake, with glue.
func runIssue11(ctx context.Context, glue string) (throughput, error) {
	f := newFakeAPI()
	defer f.Close()
	f.tokens = newBucket(issueBudget, issueWindow)
	f.requests = newBucket(4_000, time.Minute)
	f.latency = func(key string, _ int) time.Duration { // 20–60 ms, a tail of 1 in 10 at 300 ms
		h := fnv.New32a()
		h.Write([]byte(key))
		if h.Sum32()%10 == 0 {
			return 300 * time.Millisecond
		}
		return time.Duration(20+h.Sum32()%40) * time.Millisecond
	}
	client := f.client()
	limits := &fanoutanthropic.Limits{}

	tasks := make([]fanout.Task[*anthropic.Message], issueCalls)
	for i := range tasks {
		key := "k" + strconv.Itoa(i)
		params := ask(key, issueTokens-int(f.output))
		tasks[i] = fanout.Task[*anthropic.Message]{Key: key, Tokens: issueTokens}
		switch glue {
		case glueFull:
			tasks[i].Do = fanoutanthropic.Message(client, params, fanoutanthropic.WithLimits(limits))
		case glueMessage:
			tasks[i].Do = fanoutanthropic.Message(client, params)
		default:
			tasks[i].Do = func(ctx context.Context) (*anthropic.Message, error) { return client.Messages.New(ctx, params) }
		}
	}
	opts := []fanout.Option{fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: issueAttempt})}
	if glue == glueFull {
		opts = append(opts, fanout.WithRateLimit(limits))
	}
	start := time.Now()
	rs, err := fanout.Run(ctx, tasks, opts...)
	m := throughput{wall: time.Since(start)}
	if rs == nil {
		return m, err
	}
	m.succeeded = rs.Succeeded()
	m.hits, m.tooMany, m.maxPerKey = f.count()
	return m, nil
}

// TestIssue11 is the issue's acceptance figure: every call succeeds, no
// key reaches the server more than MaxAttempts times, at most 5% of the
// hits are 429s, and the run takes at most 1.15 × the budget's floor.
func TestIssue11(t *testing.T) {
	m, err := runIssue11(t.Context(), glueFull)
	require.NoError(t, err)
	t.Logf("%d/%d succeeded in %v: %d hits, %d 429s (%.1f%%), at most %d hits per key",
		m.succeeded, issueCalls, m.wall.Round(time.Millisecond), m.hits, m.tooMany,
		100*float64(m.tooMany)/float64(m.hits), m.maxPerKey)
	assert.Equal(t, issueCalls, m.succeeded)
	assert.LessOrEqual(t, m.maxPerKey, issueAttempt, "hits per key")
	assert.LessOrEqual(t, float64(m.tooMany), 0.05*float64(m.hits), "429s")
	assert.LessOrEqual(t, m.wall, issueFloor*115/100, "wall time")
}

// BenchmarkThroughput measures the scenario of TestIssue11 with the glue,
// with Message alone (no Limits), and without any: the SDK called as it
// comes (its own two retries, errors as they are) under the same
// fanout.Run and WithRetry.
func BenchmarkThroughput(b *testing.B) {
	for _, glue := range []string{glueFull, glueMessage, glueNone} {
		b.Run("glue="+glue, func(b *testing.B) {
			var sum throughput
			n := 0
			for b.Loop() {
				m, err := runIssue11(b.Context(), glue)
				if err != nil {
					b.Fatal(err)
				}
				sum.succeeded += m.succeeded
				sum.hits += m.hits
				sum.tooMany += m.tooMany
				sum.maxPerKey = max(sum.maxPerKey, m.maxPerKey)
				sum.wall += m.wall
				n++
			}
			b.ReportMetric(float64(sum.succeeded)/float64(n), "succeeded")
			b.ReportMetric(float64(sum.hits)/float64(n), "hits")
			b.ReportMetric(float64(sum.tooMany)/float64(n), "429s")
			b.ReportMetric(float64(sum.maxPerKey), "max-hits/key")
			b.ReportMetric(sum.wall.Seconds()/float64(n), "wall-s")
		})
	}
}
