// Command chart draws the charts of BENCHMARKS.md as hand-written SVG,
// and prints the ratio tables:
//
//	go run ./cmd/chart -bench bench-peers.txt -cost cost.svg -md tables.md -targets targets.md
//	go run ./cmd/chart -tail tail.csv -cdf tail.svg
//
// -bench reads `go test -bench` output (any -count; the median of the
// runs is used) and -cost draws the per-task cost of each library in a
// few scenarios; -md writes, for every scenario, each implementation's
// median ns/task as a ratio to the floor measured in the same file, and
// its allocs/task; -targets checks the core's targets. -tail reads the CSV of cmd/tail and -cdf draws its
// latency distributions.
package main

import (
	"flag"
	"log"
	"os"
)

func main() {
	benchPath := flag.String("bench", "", "go test -bench output to read")
	costPath := flag.String("cost", "", "write the per-task cost chart here (needs -bench)")
	mdPath := flag.String("md", "", "write the markdown ratio tables here (needs -bench)")
	targetsPath := flag.String("targets", "", "write the markdown check of the core's targets here (needs -bench)")
	tailPath := flag.String("tail", "", "CSV written by cmd/tail")
	cdfPath := flag.String("cdf", "", "write the latency CDF chart here (needs -tail)")
	flag.Parse()

	if *benchPath != "" {
		f, err := os.Open(*benchPath)
		if err != nil {
			log.Fatal(err)
		}
		set, err := parseBench(f)
		f.Close()
		if err != nil {
			log.Fatal(err)
		}
		if *costPath != "" {
			must(writeFile(*costPath, costChart(set, costScenarios).String()))
		}
		if *mdPath != "" {
			must(writeFile(*mdPath, markdownTables(set)))
		}
		if *targetsPath != "" {
			must(writeFile(*targetsPath, targetTable(set)))
		}
	}
	if *tailPath != "" && *cdfPath != "" {
		f, err := os.Open(*tailPath)
		if err != nil {
			log.Fatal(err)
		}
		curves, err := parseTail(f)
		f.Close()
		if err != nil {
			log.Fatal(err)
		}
		must(writeFile(*cdfPath, cdfChart(curves).String()))
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
