# Vigil. `make run` starts everything on this machine; `make test` runs every test.
# Needs only Go (1.26 or newer); everything else is fetched by the go command.

GO          ?= go
MODULES     := events schemas services projections
BIN         := bin/vigil
GOBIN       := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck
STATICCHECK_VERSION := v0.8.2
# Test time limit per package; the race detector makes tests several times slower.
TEST_TIMEOUT ?= 20m

.PHONY: all build run test test-short lint bench clean

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

## bench: the capacity harness (issue 5) is not written yet
bench:
	@echo "make bench: not yet — the capacity harness arrives with the benchmark issue."

clean:
	rm -rf bin
