package main

import (
	"fmt"
	"strings"
)

// targetTable checks the core's performance targets against the medians
// of set, as a markdown table.
func targetTable(set *benchSet) string {
	var b strings.Builder
	b.WriteString("| target | scenario | measured | limit | met |\n|---|---|---:|---:|:---:|\n")
	row := func(target, scenario, measured string, value, limit float64, ok bool) {
		if !ok {
			fmt.Fprintf(&b, "| %s | %s | – | %s | no data |\n", target, scenario, num(limit))
			return
		}
		met := "yes"
		if value > limit {
			met = fmt.Sprintf("**no** (%+.1f%% over)", 100*(value/limit-1))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", target, scenario, measured, num(limit), met)
	}
	ratio := func(impl, base, scenario string) (float64, string, bool) {
		v, ok1 := set.median(impl, scenario, "ns/task")
		w, ok2 := set.median(base, scenario, "ns/task")
		return v / w, fmt.Sprintf("%.2f× (%s / %s ns)", v/w, num(v), num(w)), ok1 && ok2
	}
	for _, n := range []string{"1000", "100000"} {
		sc := "body=trivial/n=" + n + "/l=8/timeout=false"
		r, s, ok := ratio("Fanout", "Floor", sc)
		row("dispatch time, × floor", sc, s, r, 2, ok)
		if _, s, ok := ratio("Fanout", "FloorKeyed", sc); ok {
			fmt.Fprintf(&b, "| (not a target) dispatch time, × keyed floor | %s | %s | – | – |\n", sc, s)
		}
		a, ok := set.median("Fanout", sc, "allocs/task")
		row("allocs/task, no timeout", sc, fmt.Sprintf("%.3f", a), a, 0.2, ok)
	}
	for _, n := range []string{"1000", "100000"} {
		sc := "body=trivial/n=" + n + "/l=8/timeout=true"
		r, s, ok := ratio("Fanout", "Handrolled", sc)
		row("time with timeouts, × hand-rolled", sc, s, r, 0.5, ok)
		a, ok := set.median("Fanout", sc, "allocs/task")
		row("allocs/task with timeouts", sc, fmt.Sprintf("%.3f", a), a, 3, ok)
	}
	fan, ok1 := set.median("SleepTarget", "impl=fanout/n=1000/l=100", "ns/op")
	seq, ok2 := set.median("SleepTarget", "impl=sequential/n=10/l=1", "ns/op")
	row("1 000 × 1 ms at l = 100, × 10 sequential 1 ms", "SleepTarget",
		fmt.Sprintf("%.3f× (%.2f / %.2f ms)", fan/seq, fan/1e6, seq/1e6), fan/seq, 1.10, ok1 && ok2)
	return b.String()
}
