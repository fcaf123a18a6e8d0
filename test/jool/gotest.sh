#!/usr/bin/env bash
# Runs the project's Go integration tests in the Jool guest, where the jool
# module loads (the Jool client's tests skip on hosts that cannot load it).
#
#   test/jool/gotest.sh [--out DIR] [--run REGEX] [package...]   (default: ./conntrackx/jool, ^TestIntegration)
#
# Compiles each package's test binary on the host (go test -c; compiling in
# the emulated guest would be slow), then runs them all in one guest with
# CI=1 (root-only tests must not skip) and FTPALG_JOOL=1 (Jool must be there).
set -euo pipefail
source "$(dirname "$0")/common.sh"
export PATH="$PATH:/usr/local/go/bin"

out=""
run='^TestIntegration'
while [ $# -gt 0 ]; do
	case $1 in
	--out) out=$2; shift 2 ;;
	--run) run=$2; shift 2 ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || set -- ./conntrackx/jool
[ -n "$out" ] || out=$(mktemp -d -t ftpalg-jool-gotest.XXXXXX)
mkdir -p "$out"
rm -rf "$out/bin"
mkdir -p "$out/bin"

cd "$JOOL_REPO_DIR"
for pkg in "$@"; do
	dir=${pkg#./}
	name=$(echo "$dir" | tr / _)
	jool_log "go test -c -tags integration $pkg"
	go test -c -tags integration -o "$out/bin/$name.test" "$pkg"
	[ -f "$out/bin/$name.test" ] || { jool_log "$pkg has no tests"; continue; }
	echo "$dir" >"$out/bin/$name.dir"
done
exec "$JOOL_LAB_DIR/run.sh" --out "$out" "$JOOL_LAB_DIR/guest/gotest.sh" "$run"
