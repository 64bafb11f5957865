// Package advisor recommends a material family for a part, the way the
// "parallelization" pattern of LLM agents does it: one [Analyst] per
// family in [Families] studies the part at once, through fanout, then a
// [Judge] compares their findings and picks one.
//
// It works offline: [TableAnalyst] scores a family from a table of
// typical properties against the part's [Requirements], and [TableJudge]
// picks the best-scoring family that no limit rules out. Anything else
// that implements Analyst and Judge (a language model, a remote worker)
// plugs into the same [Recommender]. [LoadPart] reads the shipped sample
// parts, listed by [Samples], or a spec file of your own.
package advisor

import (
	"context"
	"time"

	"github.com/gofanout/fanout"
)

// Recommender sends a part to one analyst per family at once, then lets
// a judge compare what they found.
type Recommender struct {
	Analyst Analyst
	Judge   Judge
	// Timeout bounds each analyst's attempt; a late analyst becomes that
	// family's error, and the judge decides without it.
	Timeout time.Duration
}

// Recommendation is a verdict with what went into it.
type Recommendation struct {
	Verdict
	Analyses []fanout.Result[Analysis] // one per family, in Families order
	FanOut   time.Duration             // wall time of the parallel analyses
	Judging  time.Duration             // wall time of the aggregation step
}

// Sequential is how long the analyses would have taken one after another.
func (r Recommendation) Sequential() time.Duration {
	var sum time.Duration
	for _, a := range r.Analyses {
		sum += a.Elapsed
	}
	return sum
}

// Recommend runs the analysts in parallel and the judge on their results.
func (rc Recommender) Recommend(ctx context.Context, p Part) (Recommendation, error) {
	tasks := make([]fanout.Task[Analysis], len(Families))
	for i, f := range Families {
		tasks[i] = fanout.Task[Analysis]{
			Key: f.Name,
			Do:  func(ctx context.Context) (Analysis, error) { return rc.Analyst.Analyze(ctx, p, f.Name) },
		}
	}
	var rec Recommendation
	start := time.Now()
	judge := fanout.Collect(func(ctx context.Context, results []fanout.Result[Analysis]) (Recommendation, error) {
		rec.FanOut = time.Since(start)
		rec.Analyses = results
		v, err := rc.Judge.Judge(ctx, p, results)
		rec.Verdict = v
		rec.Judging = time.Since(start) - rec.FanOut
		return rec, err
	})
	return fanout.Gather(ctx, tasks, judge,
		fanout.WithTaskTimeout(rc.Timeout),
		fanout.WithRetry(fanout.RetryPolicy{MaxAttempts: 2}))
}
