# ftpalg: FTP ALG for NAT64.
#
#   make build   build ./bin/ftpalg
#   make test    the whole test suite: installs what it needs (Debian
#                packages, Go modules), then unit tests and cross-builds,
#                then the integration tests (root: namespaces, nftables,
#                queues), the end-to-end tests in network namespaces with
#                Tayga, then the ones with a real Jool in a QEMU guest (root)
#   make unit    go test ./...: no root needed, safe as root (creates no
#                namespace, table or queue)
#   make demo    a demo network with Tayga: FTP failing without ftpalg and
#                working with it (root)
#   make bench   the engine's benchmarks
#   make flood   real sessions through the daemon beside a flood of spoofed
#                SYNs and garbage segments to port 21 (root; test/README.md)

GO      ?= go
BIN     := bin/ftpalg
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build deps test unit cross integration e2e e2e-jool demo bench bench-nfqueue bench-sidebyside flood fuzz vet clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/ftpalg

deps:
	test/deps.sh

vet:
	$(GO) vet ./...

unit: vet cross
	test/lib/pkgs_test.sh
	$(GO) test -count=1 ./...

# replay runs on the operators' laptops; the other subcommands say they
# need Linux.
cross:
	GOOS=darwin $(GO) build -o /dev/null ./cmd/ftpalg
	GOOS=windows $(GO) build -o /dev/null ./cmd/ftpalg

# Tests behind the integration build tag: they need root and create network
# namespaces, nftables tables and queues (and remove them). CI=1 makes a
# missing privilege or tool fail them rather than skip. One package at a
# time. The Jool client's integration tests run in the guest (e2e-jool).
INTEGRATION_PKGS := ./rules ./conntrackx ./cmd/ftpalg/internal/nfq ./cmd/ftpalg
integration:
	for p in $(INTEGRATION_PKGS); do CI=1 $(GO) test -count=1 -p 1 -tags integration -run '^TestIntegration' $$p || exit 1; done

e2e: build
	test/e2e.sh

# Jool runs in a QEMU guest (the host cannot load modules): the FTP matrix
# without and with ftpalg, 1000 data connections in a row that must leave no
# BIB entry behind, then the Jool client's integration tests.
e2e-jool: build
	FTPALG_WITH_ALG=1 test/jool/run.sh test/jool/guest/ftp-matrix.sh
	test/jool/run.sh test/jool/guest/bib-churn.sh 1000 60 3
	test/jool/gotest.sh --run 'TestIntegration.*Jool' ./conntrackx/jool

test: deps unit integration e2e e2e-jool

demo: deps build
	test/demo.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./mangle/

# Side by side in one run: no queue, the kernel FTP helper, the C floor and
# ftpalg (1 and 2 queues, pass-through and rewriting every command).
bench-sidebyside: build
	test/deps.sh bench
	test/bench/sidebyside.sh

# A flood of spoofed SYNs and garbage segments beside real sessions, in the
# end-to-end lab (FTPALG_FLOOD_RATE packets/s, default 50000).
flood: build
	FTPALG_FLOOD=1 FTPALG_BIN=$(CURDIR)/$(BIN) FTPALG_E2E=1 $(GO) test -count=1 -v -timeout 5m -run '^TestIntegrationFlood$$' ./test/e2e/

# The daemon's queue loop against a minimal C libnetfilter_queue consumer.
bench-nfqueue: build
	test/deps.sh bench
	test/bench/nfqueue.sh

fuzz:
	test/fuzz.sh

clean:
	rm -rf bin
