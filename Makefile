# Every module in the tree: the core at the root, and the sub-modules
# (examples, bench, nats, otel) that keep heavy dependencies out of it.
MODULES := $(shell find . -name go.mod -not -path './.git/*' -exec dirname {} \; | sort)
BENCHSTAT := go run golang.org/x/perf/cmd/benchstat@latest

.PHONY: test test-short bench bench-smoke lint demo

# The whole test suite, with the race detector, in every module.
test:
	@set -e; for m in $(MODULES); do echo "== go test -race $$m"; (cd $$m && go test -race -count=1 ./...); done

# Compiles and runs every benchmark once, so they cannot rot.
bench-smoke:
	@set -e; for m in $(MODULES); do (cd $$m && go test -run '^$$' -bench . -benchtime 1x ./... >/dev/null); done

# The benchmarks behind BENCHMARKS.md: -count 6, summarised by benchstat.
bench:
	go test -run '^$$' -bench . -benchmem -count 6 . | tee bench-core.txt
	$(BENCHSTAT) bench-core.txt
	@if [ -d bench ]; then cd bench && go test -run '^$$' -bench . -benchmem -count 6 ./... | tee ../bench-peers.txt; fi
	@if [ -f bench-peers.txt ]; then $(BENCHSTAT) bench-peers.txt; fi

lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	@set -e; for m in $(MODULES); do (cd $$m && go vet ./...); done
	@set -e; for m in $(MODULES); do (cd $$m && go run honnef.co/go/tools/cmd/staticcheck@latest ./...) || exit 1; done

# The material recommender, offline.
demo:
	cd examples && go run ./material
