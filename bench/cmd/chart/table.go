package main

import (
	"fmt"
	"strings"
)

// markdownTables writes two tables over every scenario: each
// implementation's median ns/task as a ratio to the floor of the same
// file (with the floor's own ns/task first), then median allocs/task.
func markdownTables(set *benchSet) string {
	var b strings.Builder
	var impls []string
	for _, impl := range set.impls {
		if impl != "Floor" && hasScenarioData(set, impl) {
			impls = append(impls, impl)
		}
	}
	var scenarios []string
	for _, sc := range set.scenarios {
		if _, ok := set.median("Floor", sc, "ns/task"); ok {
			scenarios = append(scenarios, sc)
		}
	}
	header := func(first string) {
		fmt.Fprintf(&b, "| scenario | %s | %s |\n", first, strings.Join(impls, " | "))
		fmt.Fprintf(&b, "|---|---:|%s\n", strings.Repeat("---:|", len(impls)))
	}

	b.WriteString("Median ns/task of the floor, and of each implementation as a multiple of the floor (lower is better):\n\n")
	header("Floor ns/task")
	for _, sc := range scenarios {
		floor, _ := set.median("Floor", sc, "ns/task")
		fmt.Fprintf(&b, "| %s | %s |", sc, num(floor))
		for _, impl := range impls {
			if v, ok := set.median(impl, sc, "ns/task"); ok {
				fmt.Fprintf(&b, " %.2f× |", v/floor)
			} else {
				b.WriteString(" – |")
			}
		}
		b.WriteString("\n")
	}

	b.WriteString("\nMedian allocs/task (every allocation of the process during the runs, divided by the tasks):\n\n")
	header("Floor")
	for _, sc := range scenarios {
		fmt.Fprintf(&b, "| %s |", sc)
		for _, impl := range append([]string{"Floor"}, impls...) {
			if v, ok := set.median(impl, sc, "allocs/task"); ok {
				fmt.Fprintf(&b, " %s |", num(v))
			} else {
				b.WriteString(" – |")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func hasScenarioData(set *benchSet, impl string) bool {
	for _, sc := range set.scenarios {
		if _, ok := set.median(impl, sc, "ns/task"); ok {
			return true
		}
	}
	return false
}

// num formats v with about three significant figures.
func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
