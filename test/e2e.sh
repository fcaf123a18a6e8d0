#!/usr/bin/env bash
# End-to-end tests (root): a Tayga NAT64 in network namespaces with real FTP
# servers and clients, each transfer without and with bin/ftpalg.
# Needs test/deps.sh to have run, and bin/ftpalg (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
export FTPALG_E2E=1
bin=${FTPALG_BIN:-bin/ftpalg}
[[ -x $bin ]] || { echo "e2e: $bin missing: run make build" >&2; exit 1; }
# go test runs in the package's folder: pass an absolute path.
FTPALG_BIN=$(realpath "$bin")
export FTPALG_BIN
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0
go test -count=1 -v -timeout 20m ./test/e2e/ 2>&1 | tee "$log" || rc=$?
pass=$(grep -c -- '^ *--- PASS' "$log" || true)
fail=$(grep -c -- '^ *--- FAIL' "$log" || true)
skip=$(grep -c -- '^ *--- SKIP' "$log" || true)
echo "e2e: $pass passed, $fail failed, $skip skipped"
exit "$rc"
