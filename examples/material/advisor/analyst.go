package advisor

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Analysis is one specialist's verdict on a part.
type Analysis struct {
	Family       string   `json:"family"`
	Suitability  float64  `json:"suitability"` // 0–10; 0 when disqualified
	Disqualified []string `json:"disqualified,omitempty"`
	Pros         []string `json:"pros,omitempty"`
	Cons         []string `json:"cons,omitempty"`
	Summary      string   `json:"summary"`
}

// Outcome is the analysis in one line: why the family was ruled out, or
// its score out of 10 and summary.
func (a Analysis) Outcome() string {
	if len(a.Disqualified) > 0 {
		return "ruled out: " + strings.Join(a.Disqualified, "; ")
	}
	return fmt.Sprintf("%4.1f/10  %s", a.Suitability, a.Summary)
}

// An Analyst judges how well one material family suits a part.
type Analyst interface {
	Analyze(ctx context.Context, p Part, family string) (Analysis, error)
}

// TableAnalyst scores a family from its typical properties (Families)
// against the part's requirements: hard limits disqualify, the rest is a
// weighted score. It works offline; Latency, if set, simulates the time a
// remote analyst would take, spread ±50% by family so branches differ.
type TableAnalyst struct {
	Latency time.Duration
}

// Analyze implements Analyst.
func (a TableAnalyst) Analyze(ctx context.Context, p Part, name string) (Analysis, error) {
	f, ok := family(name)
	if !ok {
		return Analysis{}, backoff.Permanent(fmt.Errorf("material: no properties for family %q", name))
	}
	if err := a.wait(ctx, name); err != nil {
		return Analysis{}, err
	}
	return score(p, f), nil
}

func (a TableAnalyst) wait(ctx context.Context, name string) error {
	if a.Latency <= 0 {
		return nil
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	spread := float64(h.Sum32()%1000)/1000 - 0.5 // -0.5 … +0.5, the same each run
	t := time.NewTimer(a.Latency + time.Duration(spread*float64(a.Latency)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// criterion is one soft quality, scored 0–1.
type criterion struct {
	name   string
	weight float64
	score  float64
}

// score judges family f for part p.
func score(p Part, f Family) Analysis {
	a := Analysis{Family: f.Name}
	a.Disqualified = disqualifications(p.Needs, f)
	crits := criteria(p.Needs, f)
	var sum, weights float64
	for _, c := range crits {
		sum += c.weight * c.score
		weights += c.weight
		switch {
		case c.weight == 0:
		case c.score >= 0.7:
			a.Pros = append(a.Pros, fmt.Sprintf("%s (%.2f)", c.name, c.score))
		case c.score < 0.4:
			a.Cons = append(a.Cons, fmt.Sprintf("%s (%.2f)", c.name, c.score))
		}
	}
	if len(a.Disqualified) > 0 {
		a.Summary = fmt.Sprintf("%s (%s) is ruled out: %s.", f.Name, f.Grade, strings.Join(a.Disqualified, "; "))
		return a
	}
	if weights > 0 {
		a.Suitability = round1(10 * sum / weights)
	}
	a.Summary = fmt.Sprintf("%s (%s) meets every limit and scores %.1f/10.", f.Name, f.Grade, a.Suitability)
	return a
}

// disqualifications lists the hard limits family f breaks.
func disqualifications(r Requirements, f Family) []string {
	var out []string
	if r.MinTensile > 0 && f.Tensile < r.MinTensile {
		out = append(out, fmt.Sprintf("strength %.0f MPa is below the %.0f MPa needed", f.Tensile, r.MinTensile))
	}
	if r.MinModulus > 0 && f.Modulus < r.MinModulus {
		out = append(out, fmt.Sprintf("stiffness %.3g GPa is below the %.3g GPa needed", f.Modulus, r.MinModulus))
	}
	if r.MaxModulus > 0 && f.Modulus > r.MaxModulus {
		out = append(out, fmt.Sprintf("stiffness %.3g GPa is too stiff to flex (at most %.3g GPa)", f.Modulus, r.MaxModulus))
	}
	if f.MaxTemp < r.ServiceTemp {
		out = append(out, fmt.Sprintf("serves up to %.0f °C, the part runs at %.0f °C", f.MaxTemp, r.ServiceTemp))
	}
	if r.MaxCostPerKg > 0 && f.CostPerKg > r.MaxCostPerKg {
		out = append(out, fmt.Sprintf("costs $%.1f/kg, over the $%.1f/kg allowed", f.CostPerKg, r.MaxCostPerKg))
	}
	if r.ImpactLoads && f.Brittle {
		out = append(out, "brittle under impact loads")
	}
	return out
}

// criteria scores the soft qualities, each against the best family.
func criteria(r Requirements, f Family) []criterion {
	best := func(prop func(Family) float64) float64 {
		return slices.Max(mapFamilies(prop))
	}
	light := 0.5*(f.Modulus/f.Density)/best(func(g Family) float64 { return g.Modulus / g.Density }) +
		0.5*(f.Tensile/f.Density)/best(func(g Family) float64 { return g.Tensile / g.Density })
	cheapest := slices.Min(mapFamilies(func(g Family) float64 { return g.CostPerKg }))
	durable := 1.0
	switch {
	case r.Outdoor && r.Corrosive:
		durable = min(f.Corrosion, f.UV)
	case r.Outdoor:
		durable = (f.Corrosion + f.UV) / 2
	case r.Corrosive:
		durable = f.Corrosion
	}
	headroom := 1.0
	if r.MinTensile > 0 {
		headroom = clamp((f.Tensile/r.MinTensile - 1) / 2)
	}
	// A quarter of the service temperature (at least 50 °C) above it is
	// margin enough.
	hot := clamp((f.MaxTemp - r.ServiceTemp) / max(r.ServiceTemp/4, 50))
	w := r.Weights
	return []criterion{
		{"light and stiff", w.Light, clamp(light)},
		{"cheap", w.Cheap, cheapest / f.CostPerKg},
		{"weathers well", w.Durable, durable},
		{"easy to make", w.Makeable, f.Manufacture},
		{"strength to spare", w.HeadRoom, headroom},
		{"heat to spare", w.HotMargin, hot},
	}
}

func mapFamilies(prop func(Family) float64) []float64 {
	out := make([]float64, len(Families))
	for i, f := range Families {
		out[i] = prop(f)
	}
	return out
}

func clamp(x float64) float64 { return min(max(x, 0), 1) }

func round1(x float64) float64 { return float64(int(x*10+0.5)) / 10 }
