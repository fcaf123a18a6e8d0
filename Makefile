# ftpalg: FTP ALG for NAT64.
#
#   make build   build ./bin/ftpalg
#   make test    the whole test suite: installs what it needs (Debian
#                packages, Go modules), then unit tests, then the end-to-end
#                tests in network namespaces with Tayga, then the ones with a
#                real Jool in a QEMU guest (root)
#   make demo    a demo network with Tayga: FTP failing without ftpalg and
#                working with it (root)
#   make bench   the engine's benchmarks

GO      ?= go
BIN     := bin/ftpalg
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build deps test unit e2e e2e-jool demo bench bench-nfqueue fuzz vet clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/ftpalg

deps:
	test/deps.sh

vet:
	$(GO) vet ./...

unit: vet
	test/lib/pkgs_test.sh
	$(GO) test -count=1 ./...

e2e: build
	test/e2e.sh

# Jool runs in a QEMU guest (the host cannot load modules): the FTP matrix
# without and with ftpalg, 1000 data connections in a row that must leave no
# BIB entry behind, then the Jool client's integration tests.
e2e-jool: build
	FTPALG_WITH_ALG=1 test/jool/run.sh test/jool/guest/ftp-matrix.sh
	test/jool/run.sh test/jool/guest/bib-churn.sh 1000 60 3
	test/jool/gotest.sh --run 'TestIntegration.*Jool' ./conntrackx/jool

test: deps unit e2e e2e-jool

demo: deps build
	test/demo.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./mangle/

# The daemon's queue loop against a minimal C libnetfilter_queue consumer.
bench-nfqueue: build
	test/deps.sh bench
	test/bench/nfqueue.sh

fuzz:
	test/fuzz.sh

clean:
	rm -rf bin
