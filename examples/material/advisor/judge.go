package advisor

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cenkalti/backoff/v4"

	"github.com/gofanout/fanout"
)

// Verdict is the aggregation step's answer: the material to use, how sure
// it is, and why.
type Verdict struct {
	Material   string  `json:"material"`
	Confidence float64 `json:"confidence"` // 0–1
	Rationale  string  `json:"rationale"`
}

// String gives the material, the confidence and the rationale.
func (v Verdict) String() string {
	return fmt.Sprintf("%s (confidence %.2f): %s", strings.ToUpper(v.Material), v.Confidence, v.Rationale)
}

// A Judge compares the analysts' Results, one per family and in the
// families' order, failures included, and picks a material.
type Judge interface {
	Judge(ctx context.Context, p Part, analyses []fanout.Result[Analysis]) (Verdict, error)
}

// TableJudge picks the best-scoring family that no limit rules out. Its
// confidence is half the winner's score and half its lead over the
// runner-up (a lead of 3 points or more counts in full).
type TableJudge struct{}

// Judge implements Judge.
func (TableJudge) Judge(_ context.Context, p Part, results []fanout.Result[Analysis]) (Verdict, error) {
	var ok []Analysis
	var out, missing []string
	for _, r := range results {
		switch {
		case r.Err != nil:
			missing = append(missing, fmt.Sprintf("%s (no analysis: %v)", r.Key, r.Err))
		case len(r.Value.Disqualified) > 0:
			out = append(out, r.Key)
		default:
			ok = append(ok, r.Value)
		}
	}
	if len(ok) == 0 {
		why := "ruled out: " + strings.Join(out, ", ")
		if len(missing) > 0 {
			why += "; not heard from: " + strings.Join(missing, ", ")
		}
		// Permanent: the same analyses would rule out the same families.
		return Verdict{}, backoff.Permanent(fmt.Errorf("no family suits the %s (%s)", p.Name, why))
	}
	slices.SortStableFunc(ok, func(a, b Analysis) int { return cmp.Compare(b.Suitability, a.Suitability) })
	best := ok[0]
	second := 0.0
	var rationale strings.Builder
	fmt.Fprintf(&rationale, "%s scores %.1f/10", best.Family, best.Suitability)
	if len(best.Pros) > 0 {
		fmt.Fprintf(&rationale, " (%s)", strings.Join(best.Pros, ", "))
	}
	if len(ok) > 1 {
		second = ok[1].Suitability
		fmt.Fprintf(&rationale, ", ahead of %s at %.1f", ok[1].Family, second)
	} else {
		rationale.WriteString(" and is the only family that meets every limit")
	}
	if len(out) > 0 {
		fmt.Fprintf(&rationale, "; %d of %d families ruled out", len(out), len(results))
	}
	if len(missing) > 0 {
		fmt.Fprintf(&rationale, "; not heard from: %s", strings.Join(missing, ", "))
	}
	rationale.WriteString(".")
	confidence := 0.5*best.Suitability/10 + 0.5*min(1, (best.Suitability-second)/3)
	if len(missing) > 0 {
		confidence *= float64(len(results)-len(missing)) / float64(len(results))
	}
	return Verdict{Material: best.Family, Confidence: round2(confidence), Rationale: rationale.String()}, nil
}

func round2(x float64) float64 { return float64(int(x*100+0.5)) / 100 }
