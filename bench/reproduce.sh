#!/usr/bin/env bash
# Reproduces every figure of BENCHMARKS.md (make bench at the root runs it).
#
# First the core's micro-benchmarks (bench_test.go at the root, with
# BenchmarkTimeoutLoop, the plain context.WithTimeoutCause loop that
# RunTaskTimeout is held against) with -count 6 and benchstat, then the
# peers, then BenchmarkHerd once (-count 5, about 2 minutes: each run
# waits out a request budget for about 10 s, so it stays out of the peer
# loop).
#
# The peer benchmarks run as COUNT separate passes of the whole matrix
# (default 10, at -benchtime 100ms, about a minute a pass on 2 cores)
# rather than with -count, which repeats each benchmark back to back:
# interleaving the passes spreads the noise of a shared machine over
# every implementation alike, so the ratios to the floor stay fair.
set -euo pipefail
cd "$(dirname "$0")"

COUNT=${COUNT:-10}
BENCHTIME=${BENCHTIME:-100ms}
RAW=${RAW:-results/peers.txt}
BENCHSTAT="go run golang.org/x/perf/cmd/benchstat@latest"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT

mkdir -p results
(cd .. && go test -run '^$' -bench . -benchmem -count 6 .) >results/core.txt
$BENCHSTAT results/core.txt >results/core-benchstat.txt

go test -c -o "$bin/bench.test" .
: >"$RAW"
for i in $(seq "$COUNT"); do
	echo "pass $i of $COUNT" >&2
	"$bin/bench.test" -test.run '^$' -test.bench '^Benchmark(Ants|Body|Conc|Errgroup|Failsafe|Fanout|Floor|Handrolled|Pond|SleepTarget)' -test.benchmem -test.benchtime "$BENCHTIME" >>"$RAW"
done

# The retry herd: 200 calls against 20 requests a second, 5 runs of each
# way of retrying; ns/op is wall time, the counts are per run.
{
	echo "# fanout core $(git -C .. rev-parse --short HEAD)"
	"$bin/bench.test" -test.run '^$' -test.bench '^BenchmarkHerd$' -test.count 5
} >results/herd.txt

# The targets' tables, compared by benchstat.
units='(.unit:ns/task OR .unit:allocs/task)'
{
	echo '## dispatch, no per-task timeout: fanout vs the floor and the keyed floor'
	$BENCHSTAT -col '.name@(Floor FloorKeyed Fanout)' -filter "/body:trivial /l:8 /timeout:false $units" "$RAW"
	echo '## per-task timeouts, keyed results: fanout vs the hand-rolled errgroup+map+timeout code'
	$BENCHSTAT -col '.name@(Handrolled Fanout)' -filter "/body:trivial /l:8 /timeout:true $units" "$RAW"
	echo '## 1 000 sleeps of 1 ms at l = 100 vs 10 sequential sleeps'
	$BENCHSTAT -filter '.name:SleepTarget .unit:sec/op' "$RAW"
	echo '## the bodies alone'
	$BENCHSTAT -filter '.name:Body .unit:sec/op' "$RAW"
} >results/benchstat.txt 2>&1

go run ./cmd/chart -bench "$RAW" -cost results/cost.svg -md results/tables.md -targets results/targets.md

go run ./cmd/tail -fanouts "${FANOUTS:-10000}" -csv results/tail.csv | tee results/tail.txt
go run ./cmd/chart -tail results/tail.csv -cdf results/tail.svg

go run ./cmd/vote | tee results/vote.txt

go build -o "$bin/lazy" ./cmd/lazy
/usr/bin/time -v "$bin/lazy" 2>&1 | grep -E 'StreamSeq|peak|Maximum resident|Elapsed' | tee results/lazy.txt
