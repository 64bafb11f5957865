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
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gofanout/fanout"
)

// DefaultMinAnalyses is the number of analyses a [Recommender] needs
// before it asks the judge, unless its MinAnalyses says otherwise: half
// the families.
const DefaultMinAnalyses = 3

// DefaultMaxAttempts is the attempts a [Recommender] makes of each call
// unless its Retry says otherwise: enough to ride out a 429 followed by a
// 529, and one more.
const DefaultMaxAttempts = 4

// Recommender sends a part to one analyst per family at once, then lets
// a judge compare what they found. Its one method is [Recommender.Recommend].
type Recommender struct {
	Analyst Analyst
	Judge   Judge
	// Timeout bounds each attempt of each call, the judge's included; a
	// late analyst becomes that family's error, and the judge decides
	// without it. Zero means no bound.
	Timeout time.Duration
	// MinAnalyses is the fewest successful analyses the judge may decide
	// from; with fewer, Recommend does not call the judge and returns a
	// [*TooFewAnalysesError]. Zero (or less) means [DefaultMinAnalyses].
	MinAnalyses int
	// Retry is the retry policy of every call, the analysts' and the
	// judge's alike. A zero MaxAttempts means [DefaultMaxAttempts].
	Retry fanout.RetryPolicy
}

// Recommendation is a verdict with what went into it.
type Recommendation struct {
	Verdict                            // zero when Recommend returns an error
	Analyses []fanout.Result[Analysis] // one per family, in Families order
	// Judgement is the judge's call: its attempts, elapsed time, cost and
	// error. Its Key is empty if the judge was not called.
	Judgement fanout.Result[Verdict]
	FanOut    time.Duration // wall time of the parallel analyses
}

// Sequential is how long the analyses would have taken one after another.
func (r Recommendation) Sequential() time.Duration {
	var sum time.Duration
	for _, a := range r.Analyses {
		sum += a.Elapsed
	}
	return sum
}

// Succeeded returns how many analyses succeeded.
func (r Recommendation) Succeeded() int {
	n := 0
	for _, a := range r.Analyses {
		if a.OK() {
			n++
		}
	}
	return n
}

// Cost is what the analyses and the judge reported through fanout.Spend.
func (r Recommendation) Cost() fanout.Cost {
	c := r.Judgement.Cost
	for _, a := range r.Analyses {
		c = c.Add(a.Cost)
	}
	return c
}

// Recommend runs the analysts in parallel, then, if at least MinAnalyses
// of them succeeded, the judge on their results; each call is retried as
// Retry says. Whatever happens after the analysts ran, the Recommendation
// holds their Results, so the work paid for is never lost: with too few
// analyses the error is a [*TooFewAnalysesError] and the judge is never
// called; when the judge fails, the error says so and wraps the judge's.
func (rc Recommender) Recommend(ctx context.Context, p Part) (Recommendation, error) {
	start := time.Now()
	analyses, err := fanout.Run(ctx, rc.analysts(p), rc.options()...)
	if analyses == nil {
		return Recommendation{}, err
	}
	rec := Recommendation{Analyses: analyses.All(), FanOut: time.Since(start)}
	if rec.Succeeded() < rc.minAnalyses() {
		return rec, rc.tooFew(p, analyses)
	}
	judged, err := fanout.Run(ctx, []fanout.Task[Verdict]{{
		Key: "judge",
		Do:  func(ctx context.Context) (Verdict, error) { return rc.Judge.Judge(ctx, p, rec.Analyses) },
	}}, rc.options()...)
	if judged == nil {
		return rec, err
	}
	rec.Judgement = judged.All()[0]
	if err := rec.Judgement.Err; err != nil {
		return rec, fmt.Errorf("material: no verdict for the %s: the judge failed after %s: %w",
			p.Name, attempts(rec.Judgement.Attempts), err)
	}
	rec.Verdict = rec.Judgement.Value
	return rec, nil
}

func (rc Recommender) analysts(p Part) []fanout.Task[Analysis] {
	tasks := make([]fanout.Task[Analysis], len(Families))
	for i, f := range Families {
		tasks[i] = fanout.Task[Analysis]{
			Key: f.Name,
			Do:  func(ctx context.Context) (Analysis, error) { return rc.Analyst.Analyze(ctx, p, f.Name) },
		}
	}
	return tasks
}

// options are those of every call: the analysts' and the judge's.
func (rc Recommender) options() []fanout.Option {
	policy := rc.Retry
	policy.MaxAttempts = cmp.Or(policy.MaxAttempts, DefaultMaxAttempts)
	return []fanout.Option{fanout.WithTaskTimeout(rc.Timeout), fanout.WithRetry(policy)}
}

func (rc Recommender) minAnalyses() int {
	if rc.MinAnalyses < 1 {
		return DefaultMinAnalyses
	}
	return rc.MinAnalyses
}

func (rc Recommender) tooFew(p Part, analyses *fanout.Results[Analysis]) *TooFewAnalysesError {
	e := &TooFewAnalysesError{Part: p.Name, Succeeded: analyses.Succeeded(), Total: analyses.Len(),
		Need: rc.minAnalyses(), Err: analyses.Err()}
	for _, r := range analyses.All() {
		if !r.OK() {
			e.Failed = append(e.Failed, r.Key)
		}
	}
	return e
}

// TooFewAnalysesError is the error of [Recommender.Recommend] when fewer
// analyses succeeded than its MinAnalyses: the judge was not asked, since
// a verdict from so little would sound just as sure as one from all.
type TooFewAnalysesError struct {
	Part      string
	Succeeded int      // analyses that succeeded
	Total     int      // analyses asked for: one per family
	Need      int      // the Recommender's MinAnalyses
	Failed    []string // the families without an analysis, in Families order
	// Err joins the *fanout.TaskError of each failed family, so that
	// errors.Is and errors.As reach why they failed.
	Err error
}

// Error says how many analyses succeeded, how many were needed, and which
// families failed.
func (e *TooFewAnalysesError) Error() string {
	return fmt.Sprintf("material: no verdict for the %s: %d of %d analyses succeeded, %d needed to judge (failed: %s)",
		e.Part, e.Succeeded, e.Total, e.Need, strings.Join(e.Failed, ", "))
}

// Unwrap returns Err.
func (e *TooFewAnalysesError) Unwrap() error { return e.Err }

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}
