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
#   make bench-replayscale  100,000 sessions through ftpalg replay: every
#                rewrite checked, peak RSS at most 160 MB
.PHONY: all build deb deb-test e2e-systemd deps test unit cross integration e2e e2e-jool demo bench bench-nfqueue fuzz vet clean
#   make flood   real sessions through the daemon beside a flood of spoofed
#                SYNs and garbage segments to port 21 (root; test/README.md)

GO      ?= go
BIN     := bin/ftpalg
# The version comes from the latest annotated tag (v0.1.0, or
# v0.1.0-3-gabcdef0 three commits later, -dirty with local changes); before
# the first tag, or outside git, v0.0.0-0-g<commit> or v0.0.0-unknown.
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || echo v0.0.0-0-g$(COMMIT))
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Debian's spelling: 0.1.0, 0.1.0+3.gabcdef0, 0.0.0+0.gabcdef0.dirty.
DEB_VERSION = $(shell echo '$(VERSION)' | sed -e 's/^v//' -e 's/-\([0-9]*\)-g/+\1.g/' -e 's/-dirty$$/.dirty/' -e 's/-unknown$$/+unknown/')
GOARCH  ?= $(shell $(GO) env GOARCH)
# nfpm builds the Debian package; pinned, run from the module proxy.
NFPM    := github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build deb deb-test e2e-systemd deps test unit cross integration e2e e2e-jool demo bench bench-nfqueue bench-sidebyside bench-replayscale flood fuzz vet clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/ftpalg

# build/ftpalg_<version>_<arch>.deb: the static binary, the systemd units,
# the man pages, the default /etc/ftpalg/ftpalg.conf, the rules files.
deb:
	rm -rf build/deb && mkdir -p build/deb
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o build/deb/ftpalg ./cmd/ftpalg
	gzip -9n <packaging/ftpalg.8 >build/deb/ftpalg.8.gz
	gzip -9n <packaging/ftpalg.conf.5 >build/deb/ftpalg.conf.5.gz
	gzip -9n <CHANGELOG.md >build/deb/changelog.gz
	rm -f build/ftpalg_*.deb
	FTPALG_VERSION=$(DEB_VERSION) GOARCH=$(GOARCH) $(GO) run $(NFPM) package --config packaging/nfpm.yaml --packager deb --target build/

# The package's contents and control data, and its units (no root needed).
deb-test: deb
	test/deb.sh build/ftpalg_*.deb

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
# BIB entry behind, a third host against the data ports, default active mode
# and the origin of 46 active data connections, then the Jool client's
# integration tests.
e2e-jool: build
	FTPALG_WITH_ALG=1 test/jool/run.sh test/jool/guest/ftp-matrix.sh
	# The peer filter made the churn slower in the emulated guest (test/jool/README.md): 20 minutes.
	FTPALG_JOOL_TIMEOUT=1200 test/jool/run.sh test/jool/guest/bib-churn.sh 1000 60 3
	# No control pass: it flushes the peer filter's chain, which the daemon's
	# rules keeper now restores within milliseconds (test/jool/README.md).
	test/jool/run.sh test/jool/guest/third-party.sh --no-control
	test/jool/run.sh test/jool/guest/active-origin.sh
	test/jool/gotest.sh --run 'TestIntegration.*Jool' ./conntrackx/jool

# The Debian package's service under a real systemd (PID 1 of a QEMU guest):
# start, reload, watchdog, kill -9, stop, the template (about 7 minutes).
e2e-systemd: deb
	FTPALG_GUEST_INIT=systemd test/jool/run.sh test/jool/guest/systemd-service.sh

test: deps unit deb-test integration e2e e2e-jool e2e-systemd

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

# The scale capture through ftpalg replay, from outside:
# 100,000 concurrent 46 sessions (handshake and greeting, PASV/229, NOOP for
# all), then 20,000 with 200,000 spoofed SYNs to port 21 among them; every
# session's rewrites and shifted numbers verified, peak RSS of the replay
# (GNU time) at most 160 MB. About 30 s. test/bench/RESULTS.md.
bench-replayscale: build
	test/deps.sh bench
	test/bench/replayscale.sh

# The daemon's queue loop against a minimal C libnetfilter_queue consumer.
bench-nfqueue: build
	test/deps.sh bench
	test/bench/nfqueue.sh

fuzz:
	test/fuzz.sh

clean:
	rm -rf bin build
