# Every module in the tree: the core at the root, and the sub-modules
# (examples, bench, nats, otel) that keep heavy dependencies out of it.
MODULES := $(shell find . -name go.mod -not -path './.git/*' -exec dirname {} \; | sort)

.PHONY: test test-short bench bench-smoke lint demo

# The whole test suite, with the race detector, in every module.
test:
	@set -e; for m in $(MODULES); do echo "== go test -race $$m"; (cd $$m && go test -race -count=1 ./...); done

# Compiles and runs every benchmark once, so they cannot rot.
bench-smoke:
	@set -e; for m in $(MODULES); do (cd $$m && go test -run '^$$' -bench . -benchtime 1x ./... >/dev/null); done

# Every table and chart of BENCHMARKS.md, into bench/results/: the core's
# micro-benchmarks with -count 6 and benchstat, then the peers, the tail,
# the vote and the lazy source (about 20 minutes on 2 cores).
bench:
	cd bench && ./reproduce.sh

lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	@set -e; for m in $(MODULES); do (cd $$m && go vet ./...); done
	@set -e; for m in $(MODULES); do (cd $$m && go run honnef.co/go/tools/cmd/staticcheck@latest ./...) || exit 1; done

# The material recommender, offline.
demo:
	cd examples && go run ./material
