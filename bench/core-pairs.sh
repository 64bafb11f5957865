#!/bin/bash
# Interleaved before/after passes of the core's micro-benchmarks.
# usage: bench/core-pairs.sh ROUNDS OUTPREFIX
# Needs /tmp/before.test built from the baseline's worktree at /tmp/base,
# and /tmp/new.test from this tree (go test -c -o /tmp/new.test .).
# Writes OUTPREFIX-before.txt, OUTPREFIX-after.txt and OUTPREFIX-load.txt;
# bench/core-ratios.py OUTPREFIX prints the ratios taken within each pass.
B='BenchmarkFloor$|BenchmarkFloorKeyed|BenchmarkRun$|BenchmarkRunTaskTimeout|BenchmarkHandRolled|BenchmarkTimeoutLoop|BenchmarkStreamSeq|BenchmarkStream$|BenchmarkRunObserver'
here=$(pwd)
for i in $(seq "$1"); do
  (cd /tmp/base && /tmp/before.test -test.run '^$' -test.bench "$B" -test.count 1 -test.benchtime 200ms) | grep ^Bench >> "$2-before.txt"
  (cd "$here" && /tmp/new.test -test.run '^$' -test.bench "$B" -test.count 1 -test.benchtime 200ms) | grep ^Bench >> "$2-after.txt"
  echo "pass $i $(cut -d' ' -f1-3 /proc/loadavg)" >> "$2-load.txt"
done
