package fanoutopenai_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"

	"github.com/gofanout/fanout"
	fanoutopenai "github.com/gofanout/fanout/openai"
)

// The figure of issue 11: 200 calls of 500 tokens each (a 1 600-byte
// prompt and max_completion_tokens 100, as the fake counts them) against
// a budget of 25 000 tokens per 2 s window, 32 calls at a time, fanout
// making up to 4 attempts per key. 50 calls fit in a window, so no way of
// calling can finish all 200 in less than 8 s of budget.
const (
	throughputCalls    = 200
	throughputTokens   = 500
	throughputBudget   = 25_000
	throughputWindow   = 2 * time.Second
	throughputLimit    = 32
	throughputMaxTries = 4
)

// throughputFloor is the time the budget needs for every call's tokens.
var throughputFloor = time.Duration(throughputCalls*throughputTokens/throughputBudget) * throughputWindow

// throughputCounts is what one run of the figure measured.
type throughputCounts struct {
	succeeded, hits, tooMany, maxHits int
	wall                              time.Duration
}

// runThroughput runs the figure with fanoutopenai's glue (Chat, Limits)
// or with none (the SDK's call as it comes, with its own two retries),
// limit calls at a time.
func runThroughput(tb testing.TB, glue bool, limit int) throughputCounts {
	api := newFakeAPI(tb)
	api.setService(func(key string) time.Duration {
		var i int
		fmt.Sscanf(key, "k%d", &i)
		if i%25 == 7 {
			return 400 * time.Millisecond // a slow tail: 4% of the calls
		}
		return 20 * time.Millisecond
	})
	client := api.client()
	limits := fanoutopenai.NewLimits()
	opts := []fanout.Option{fanout.WithLimit(limit), fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: throughputMaxTries})}
	if glue {
		opts = append(opts, fanout.WithRateLimit(limits))
	}
	tasks := make([]fanout.Task[*openai.ChatCompletion], throughputCalls)
	for i := range tasks {
		key := fmt.Sprintf("k%03d", i)
		p := sizedParams(key, 4*(throughputTokens-100), 100)
		do := fanoutopenai.Chat(client, p, fanoutopenai.WithLimits(limits))
		if !glue {
			do = func(ctx context.Context) (*openai.ChatCompletion, error) { return client.Chat.Completions.New(ctx, p) }
		}
		tasks[i] = fanout.Task[*openai.ChatCompletion]{Key: key, Tokens: throughputTokens, Do: do}
	}
	api.setBudget(throughputBudget, 10_000, throughputWindow)
	start := time.Now()
	rs, _ := fanout.Run(context.Background(), tasks, opts...)
	wall := time.Since(start)
	s := api.stats()
	return throughputCounts{succeeded: rs.Succeeded(), hits: s.total, tooMany: s.tooMany, maxHits: s.maxHits, wall: wall}
}

func TestThroughputUnderATokenBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 7 s")
	}
	c := runThroughput(t, true, throughputLimit)
	t.Logf("succeeded %d, hits %d, 429s %d, max hits per key %d, wall %v (floor %v)",
		c.succeeded, c.hits, c.tooMany, c.maxHits, c.wall.Round(time.Millisecond), throughputFloor)
	assert.Equal(t, throughputCalls, c.succeeded, "every call succeeds")
	assert.LessOrEqual(t, c.maxHits, throughputMaxTries, "the server sees a key at most MaxAttempts times")
	assert.LessOrEqual(t, float64(c.tooMany), 0.05*float64(c.hits), "429s are at most 5%% of the requests")
	assert.LessOrEqual(t, c.wall, throughputFloor*115/100, "within 15%% of the budget's floor")
}

// BenchmarkThroughput compares the figure with the glue and without it,
// 32 calls at a time (a first wave that fits in a window) and all 200 at
// once (one that does not: Limits knows nothing before the first answer).
func BenchmarkThroughput(b *testing.B) {
	for _, glue := range []bool{true, false} {
		name := "glue=fanoutopenai"
		if !glue {
			name = "glue=none"
		}
		b.Run(name, func(b *testing.B) {
			for _, limit := range []int{throughputLimit, throughputCalls} {
				b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
					var c throughputCounts
					for b.Loop() {
						c = runThroughput(b, glue, limit)
					}
					b.ReportMetric(float64(c.succeeded), "succeeded")
					b.ReportMetric(float64(c.hits), "hits")
					b.ReportMetric(float64(c.tooMany), "429s")
					b.ReportMetric(float64(c.maxHits), "max-hits/key")
					b.ReportMetric(c.wall.Seconds(), "wall-s")
				})
			}
		})
	}
}
