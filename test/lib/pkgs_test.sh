#!/usr/bin/env bash
# Tests test/lib/pkgs.sh without root and without touching dpkg: a stub
# dpkg-query on PATH knows one installed package, one half-installed one, and
# fails (exit 1, as the real one does) for everything else.
set -euo pipefail
cd "$(dirname "$0")"
source ./pkgs.sh
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
cat >"$stub/dpkg-query" <<'STUB'
#!/bin/sh
for last; do :; done
case $last in
have) printf 'install ok installed' ;;
half) printf 'install ok unpacked' ;;
*) echo "dpkg-query: no packages found matching $last" >&2; exit 1 ;;
esac
STUB
chmod +x "$stub/dpkg-query"
PATH="$stub:$PATH"

fail=0
check() { # name want got
	if [[ $2 == "$3" ]]; then echo "ok   $1"; else echo "FAIL $1: want [$2] got [$3]"; fail=1; fi
}
check "all installed" "" "$(pkgs_missing have have)"
check "absent and half-installed are missing" "half absent" "$(pkgs_missing have half absent | tr '\n' ' ' | sed 's/ $//')"
# The bug this guards against: under set -e and pipefail, a missing package
# must not end the caller.
out=$(bash -c 'set -euo pipefail; source ./pkgs.sh; mapfile -t m < <(pkgs_missing absent have); echo "n=${#m[@]}"')
check "set -e caller survives a missing package" "n=1" "$out"
((fail == 0)) && echo "pkgs: 3 passed, 0 failed" || { echo "pkgs: failed"; exit 1; }
