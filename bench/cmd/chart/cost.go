package main

import (
	"fmt"
	"math"
	"strconv"
)

// costScenarios are the scenarios of the cost chart: the dispatch cost
// (trivial body) at the targets' n and l, with and without per-task
// timeouts, and one with a CPU body.
var costScenarios = []string{
	"body=trivial/n=1000/l=8/timeout=false",
	"body=trivial/n=1000/l=8/timeout=true",
	"body=trivial/n=100000/l=8/timeout=false",
	"body=trivial/n=1000/l=n/timeout=false",
	"body=cpu1us/n=1000/l=8/timeout=false",
}

// costChart draws, for each scenario, one horizontal bar per
// implementation: its median ns/task, labelled with the ratio to the
// floor. The axis is logarithmic, since the costs span two decades.
func costChart(set *benchSet, scenarios []string) *svg {
	const left, right, top, barH, gap, groupGap = 110.0, 110.0, 50.0, 14.0, 2.0, 34.0
	var impls []string
	for _, impl := range set.impls {
		if _, ok := set.median(impl, scenarios[0], "ns/task"); ok {
			impls = append(impls, impl)
		}
	}
	groupH := float64(len(impls))*(barH+gap) + groupGap
	width := 820.0
	height := top + groupH*float64(len(scenarios)) + 30
	s := newSVG(int(width), int(height))
	s.text(width/2, 22, "middle", `font-size="15" font-weight="bold"`, "Per-task cost by library (median ns/task, log scale; label: × the floor of the same run)")

	lo, hi := math.Inf(1), 0.0
	for _, sc := range scenarios {
		for _, impl := range impls {
			if v, ok := set.median(impl, sc, "ns/task"); ok {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	plotW := width - left - right
	xOf := func(v float64) float64 { return left + plotW*math.Log10(v/lo)/math.Log10(hi/lo) }

	bottom := height - 30
	for d := lo; d <= hi*1.001; d *= 10 {
		s.line(xOf(d), top-6, xOf(d), bottom, "#ddd", 1, "")
		s.text(xOf(d), bottom+16, "middle", `fill="#555"`, strconv.FormatFloat(d, 'f', -1, 64)+" ns")
	}
	for g, sc := range scenarios {
		y := top + float64(g)*groupH
		s.text(left, y+2, "start", `font-weight="bold"`, sc)
		floor, hasFloor := set.median("Floor", sc, "ns/task")
		for i, impl := range impls {
			v, ok := set.median(impl, sc, "ns/task")
			by := y + 8 + float64(i)*(barH+gap)
			s.text(left-6, by+barH-3, "end", "", impl)
			if !ok {
				continue
			}
			s.rect(left, by, xOf(v)-left, barH, palette[i%len(palette)])
			label := fmt.Sprintf("%.0f ns", v)
			if hasFloor {
				label += fmt.Sprintf("  %.1f×", v/floor)
			}
			s.text(xOf(v)+4, by+barH-3, "start", `fill="#333"`, label)
		}
	}
	return s
}
