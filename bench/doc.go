// Package bench compares fanout with the hand-written code and the
// libraries people use for the same job: a floor of L workers claiming
// indices with an atomic counter, errgroup with SetLimit, the errgroup +
// mutex + map + per-task timeout code users write today, conc, pond,
// ants and failsafe-go.
//
// Every implementation runs the same [Scenario]: n tasks of one [Body],
// at most l at once, with or without a per-task timeout. The benchmarks
// in bench_test.go run the matrix of scenarios for each implementation.
// BenchmarkHerd runs a [Herd]: 200 calls retried by fanout against a local
// server with a request budget, counting the 429s and the repeat 429s of
// keys that retried into a budget already spent. The programs under cmd/
// measure tail latency with hedging, early-stop voting and memory over a
// lazy source, and draw the charts of BENCHMARKS.md.
//
// It is its own module so that the peers never enter the core's
// dependencies.
package bench
