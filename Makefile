# ftpalg: FTP ALG for NAT64.
#
#   make build   build ./bin/ftpalg
#   make test    the whole test suite: installs what it needs (Debian
#                packages, Go modules), then unit tests, then the end-to-end
#                tests in network namespaces (root)
#   make demo    a demo network with Tayga: FTP failing without ftpalg and
#                working with it (root)
#   make bench   the engine's benchmarks

GO      ?= go
BIN     := bin/ftpalg
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build deps test unit e2e demo bench fuzz vet clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/ftpalg

deps:
	test/deps.sh

vet:
	$(GO) vet ./...

unit: vet
	$(GO) test -count=1 ./...

e2e: build
	test/e2e.sh

test: deps unit e2e

demo: deps build
	test/demo.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./mangle/

fuzz:
	test/fuzz.sh

clean:
	rm -rf bin
