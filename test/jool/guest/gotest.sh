#!/bin/bash
# Guest side of test/jool/gotest.sh: runs the test binaries it compiled
# (in the results directory, /shared/bin) from their package directories.
#   gotest.sh REGEX
set -uo pipefail
run=${1:-^TestIntegration}
bins=/shared/bin
status=0
modprobe jool || { echo "modprobe jool failed"; exit 1; }
for t in "$bins"/*.test; do
	[ -e "$t" ] || { echo "no test binaries in $bins"; exit 1; }
	name=$(basename "$t" .test)
	dir=$(cat "$bins/$name.dir")
	echo "=== $dir ($run)"
	# CI=1: tests that need root must not skip; FTPALG_JOOL=1: nor those
	# that need the jool module.
	(cd "$FTPALG_REPO/$dir" && CI=1 FTPALG_JOOL=1 "$t" -test.run "$run" -test.v -test.timeout 5m) 2>&1 |
		tee "$FTPALG_OUT/$name.log"
	rc=${PIPESTATUS[0]}
	echo "=== $dir: exit $rc"
	[ "$rc" = 0 ] || status=1
done
exit $status
