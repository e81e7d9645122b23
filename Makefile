# Vigil. `make run` starts everything on this machine; `make test` runs every test.
# Needs only Go (1.26 or newer); everything else is fetched by the go command.

GO          ?= go
MODULES     := events schemas services projections tools
BIN         := bin/vigil
GOBIN       := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck
STATICCHECK_VERSION := v0.8.2
# Test time limit per package; the race detector makes tests several times slower.
TEST_TIMEOUT ?= 20m

.PHONY: all build run test test-short lint bench bench-long clean

all: build

build:
	cd services && $(GO) build -o ../$(BIN) ./cmd/vigil

## run: vigil dev — embedded NATS (127.0.0.1:4222), every service, HTTP on :8080, data in ./data
run: build
	./$(BIN) dev

## test: every module, with the race detector
test:
	@set -e; for m in $(MODULES); do \
		echo "== $$m"; \
		(cd $$m && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...); \
	done

## test-short: quicker, skips the long acceptance tests
test-short:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) test -short -count=1 ./...); done

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

## lint: gofmt, go vet and staticcheck over every module
lint: $(STATICCHECK)
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet ./... && $(STATICCHECK) ./...); done

## bench: the capacity harness (issue 5), short mode: 10,000 sites every 60s, 60s measured
## after a 60s warm-up, then the bare HTTP loop. Prints a table; writes
## bench-results/<timestamp>.json and bench-results/latest.json. BENCH_FLAGS adds flags,
## e.g. make bench BENCH_FLAGS="--cpuprofile cpu.prof --memprofile mem.prof".
BENCH_FLAGS ?=
bench:
	cd tools && $(GO) build -o ../bin/bench ./cmd/bench
	./bin/bench --mode short $(BENCH_FLAGS)

## bench-long: 100,000 sites every 60s, 5 minutes measured (issue 5's target run)
bench-long:
	cd tools && $(GO) build -o ../bin/bench ./cmd/bench
	./bin/bench --mode long $(BENCH_FLAGS)

clean:
	rm -rf bin
