#!/usr/bin/env bash
# Runs every native fuzz target for a while (FUZZTIME, default 10s each).
# The seed corpora run in every `go test`; this explores beyond them.
# A failure leaves its input under the package's testdata/fuzz/ and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
t=${FUZZTIME:-10s}
for pkg in ./mangle ./mangle/tayga ./cmd/ftpalg ./cmd/ftpalg/internal/nfq ./conntrackx/jool; do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
		echo "fuzz: $pkg $target ($t)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$t" "$pkg" >/dev/null
	done
done
echo "fuzz: all targets ran $t without a failure"
