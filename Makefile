# wanreact — see README.md. `make demo` and `make test` are all a fresh Debian needs.
GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin/wanreact
# Tests that need root and network namespaces run one package at a time:
# they build labs of several namespaces and measure timings.
TESTFLAGS ?= -count=1 -p 1 -timeout 40m

.PHONY: all build test unit demo bench vet deps release clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/wanreact

deps:
	@scripts/deps.sh

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Everything: unit tests, netns lab integration tests, Wi-Fi VM end-to-end,
# and a smoke run of the benchmarks.
test: deps vet build
	$(GO) test $(TESTFLAGS) ./...

# Unit tests only (no root needed).
unit:
	$(GO) test -count=1 -short ./...

demo: deps build
	$(GO) run ./internal/demo -bin $(BIN) $(DEMOFLAGS)

bench: deps build
	$(GO) run ./internal/bench -bin $(BIN) -out docs

release:
	@scripts/release.sh $(VERSION)

clean:
	rm -rf bin dist
