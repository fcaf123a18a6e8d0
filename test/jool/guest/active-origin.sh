#!/bin/bash
# Active data connections across a real Jool NAT64, in the QEMU guest (run it
# with test/jool/run.sh test/jool/guest/active-origin.sh; make build and
# test/deps.sh first). proftpd serves in s6 and s4 (the only one of the
# lab's servers that implements default active mode), then
# test/lab/defaultftpd.py (RFC 959's default data port as written).
#
# Cells (test/lab/ftpclient.py; topology of topology.sh):
#   default46, default64: RFC 6384 section 8, default active mode: no PORT,
#     the server connects to the client's control address (proftpd: to its
#     control port minus 1, which fails in 64 through Jool's NAPT; see
#     below). Must work without and with ftpalg.
#   origin46-port, origin46-default: 46 active (PORT, and default mode)
#     where the client requires the data connection to come from the
#     address it dialled (S4 = 192.0.2.1), as ncftp does.
#
# Jool masks an IPv6-initiated connection (the IPv6 server's data
# connection) with a pool4 entry of the packet's mark (0 unless set), not
# with the address of the control connection's static BIB entry. Here the
# mark-0 pool4 holds 192.0.2.3 only, as a pool4 whose dynamic part does not
# hold S4 (or holds other addresses too, which Jool's hash may pick): the
# origin cells must fail with ftpalg alone, and work once the data
# connections of the server are marked into a pool4 entry that holds only
# S4 (README.md, "Jool": the pool4 setup an active 46 data connection
# needs): a prerouting chain before Jool's hook (-75) sets mark 46 on
# packets from S6 that are not its control connections, and pool4 holds
# 192.0.2.1 40000-40999 under mark 46.
#
# Exit status 0 when every cell does what it must.
set -uo pipefail

OUT=${FTPALG_OUT:-$(mktemp -d)}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${FTPALG_REPO:-$(cd "$HERE/../../.." && pwd)}
BIN=$REPO/bin/ftpalg
PKG=$REPO/test/.cache/pkg
CLIENT=(/usr/bin/python3 "$REPO/test/lab/ftpclient.py")
INSTANCE=lab
POOL6=2001:db8:64::/96
POOL4=192.0.2.1
DYN4=192.0.2.3
ORIGIN_MARK=46
ORIGIN_PORTS=40000-40999
ALG_PORTS=61000-61999
S6=2001:db8:6::10
S4=203.0.113.10
S4_VIA_NAT64=2001:db8:64::cb00:710a # 2001:db8:64::203.0.113.10
C4=198.51.100.2
C6=2001:db8:1::10
WORK=$(mktemp -d)
mkdir -p "$OUT"

log() { printf '[active-origin %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
nx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
jool_nat() { nx nat jool -i "$INSTANCE" "$@"; }

pids=()
server_pids=()
cleanup() {
	local p
	for p in "${server_pids[@]}" "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for ns in c4 s6 c6 s4 nat; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

for f in "$BIN" "$PKG/proftpd-core/usr/sbin/proftpd"; do
	[ -x "$f" ] || { log "missing $f (make build; test/deps.sh)"; exit 1; }
done

# shellcheck source=test/jool/guest/topology.sh
. "$HERE/topology.sh"
build_topology || { log "topology (or modprobe jool) failed"; exit 1; }
jool_setup || { log "jool setup failed"; exit 1; }
# The dynamic (mark 0) part of pool4 without S4.
jool_nat pool4 remove "$POOL4" 2000-3000 --tcp && jool_nat pool4 add "$DYN4" 2000-3000 --tcp ||
	{ log "pool4 setup failed"; exit 1; }

mkdir -p "$WORK/ftproot"
head -c 262144 /dev/urandom >"$WORK/ftproot/data.bin"
chmod 755 "$WORK" "$WORK/ftproot"
chmod 644 "$WORK/ftproot/data.bin"
for fam in 6 4; do
	ns=s$fam addr=$S6 ipv6=on
	[ "$fam" = 4 ] && addr=$S4 ipv6=off
	sed -e "s|@ROOT@|$WORK/ftproot|g" -e "s|@DIR@|$WORK|g" -e "s|@FAM@|$fam|g" \
		-e "s|@ADDR@|$addr|g" -e "s|@IPV6@|$ipv6|g" "$REPO/test/lab/proftpd.conf" >"$WORK/proftpd-$fam.conf"
	nx "$ns" "$PKG/proftpd-core/usr/sbin/proftpd" -n -q -c "$WORK/proftpd-$fam.conf" >"$OUT/proftpd-$ns.out" 2>&1 &
	server_pids+=($!)
done
for ns in s6 s4; do
	for _ in $(seq 100); do nx "$ns" ss -Hltn 'sport = :21' | grep -q . && break; sleep 0.1; done
done
log "proftpd listening in s6 and s4"

status=0
cell() { # cell PHASE NAME EXPECT(pass|fail) NS HOST MODE [ftpclient options]
	local phase=$1 name=$2 want=$3 ns=$4 host=$5 mode=$6 out res
	shift 6
	rm -f "$WORK/got.bin"
	out=$(nx "$ns" timeout 30 "${CLIENT[@]}" "$host" "$mode" --timeout 4 --get data.bin --out "$WORK/got.bin" "$@" 2>&1)
	if [ $? = 0 ] && cmp -s "$WORK/got.bin" "$WORK/ftproot/data.bin"; then res=pass; else res=fail; fi
	out=$(printf '%s' "$out" | tr '\n' ' ' | cut -c1-300)
	local verdict=ok
	if [ "$res" != "$want" ]; then verdict=WRONG; status=1; fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$name" "$want" "$res" "$verdict" "$out" >>"$OUT/cells.tsv"
	log "$phase $name: $res (must $want) $verdict: $out"
}

# proftpd connects to the client's control port minus 1 in default mode
# (RFC 959 section 3.2 says the port itself). Through Jool a 64 client's
# control port U is masked as U' on pool4, and U'-1 has no BIB entry: the
# 64 default-mode cell fails with proftpd (an expected failure, with and
# without the ALG), while the 46 one works (the IPv6 server reaches Pref::C4
# with the client's own ports; Jool masks only the server's end).
run_cells() { # run_cells PHASE ORIGIN_EXPECT
	cell "$1" default46 pass c4 "$POOL4" DEFAULT
	cell "$1" default64-proftpd fail c6 "$S4_VIA_NAT64" DEFAULT
	cell "$1" pasv46 pass c4 "$POOL4" PASV
	cell "$1" origin46-port "$2" c4 "$POOL4" PORT --check-origin
	cell "$1" origin46-default "$2" c4 "$POOL4" DEFAULT --check-origin
}

printf 'phase\tcell\tmust\tresult\tverdict\tdetail\n' >"$OUT/cells.tsv"
# Without the ALG PORT names C4, which the IPv6 server cannot reach; the
# default-mode origin cell fails from the dynamic pool4 address.
cell without default46 pass c4 "$POOL4" DEFAULT
cell without default64-proftpd fail c6 "$S4_VIA_NAT64" DEFAULT
cell without origin46-default fail c4 "$POOL4" DEFAULT --check-origin

nx nat "$BIN" run --jool-instance "$INSTANCE" --jool-ports "$ALG_PORTS" --log-level debug >"$OUT/ftpalg.log" 2>&1 &
alg=$!
pids+=("$alg")
for _ in $(seq 100); do
	grep -q 'ftpalg running' "$OUT/ftpalg.log" 2>/dev/null && break
	kill -0 "$alg" 2>/dev/null || break
	sleep 0.2
done
grep -q 'ftpalg running' "$OUT/ftpalg.log" || { log "ftpalg did not start"; cat "$OUT/ftpalg.log"; exit 1; }

# With the ALG, and Jool's pool4 as above: the data connection comes from
# the dynamic pool4 address (issue reproduced).
run_cells with-alg fail
jool_nat session display --tcp --numeric >"$OUT/jool-session-with-alg.txt" 2>&1

# The pool4 setup of README.md: mark the server's non-control packets
# before Jool, pool4 holds only S4 under that mark.
jool_nat pool4 add "$POOL4" "$ORIGIN_PORTS" --tcp --mark "$ORIGIN_MARK" || { log "pool4 add failed"; exit 1; }
nx nat nft -f - <<EOF || { log "nft failed"; exit 1; }
table ip6 ftpalg_origin {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		ip6 saddr $S6 tcp sport != 21 meta mark set $ORIGIN_MARK
	}
}
EOF
run_cells with-alg-origin-mark pass
jool_nat session display --tcp --numeric >"$OUT/jool-session-origin.txt" 2>&1
jool_nat pool4 display --tcp >"$OUT/jool-pool4.txt" 2>&1

# An RFC 959 default data port (U, from port 20): test/lab/defaultftpd.py
# in place of proftpd. 64 works too: the server connects from S4:20 to
# C4':U', the control connection's own (endpoint-independent) BIB entry.
for p in "${server_pids[@]}"; do kill "$p" 2>/dev/null; done
for ns in s6 s4; do
	ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
	for _ in $(seq 100); do nx "$ns" ss -Hltn 'sport = :21' | grep -q . || break; sleep 0.1; done
done
start_rfc959() {
	nx s6 /usr/bin/python3 "$REPO/test/lab/defaultftpd.py" "$S6" "$WORK/ftproot" >"$OUT/defaultftpd-s6.out" 2>&1 &
	pids+=($!)
	nx s4 /usr/bin/python3 "$REPO/test/lab/defaultftpd.py" "$S4" "$WORK/ftproot" >"$OUT/defaultftpd-s4.out" 2>&1 &
	pids+=($!)
	for ns in s6 s4; do
		for _ in $(seq 100); do nx "$ns" ss -Hltn 'sport = :21' | grep -q . && break; sleep 0.1; done
	done
}
start_rfc959
cell with-alg-origin-mark default46-rfc959 pass c4 "$POOL4" DEFAULT --check-origin
cell with-alg-origin-mark default64-rfc959 pass c6 "$S4_VIA_NAT64" DEFAULT --check-origin
cell with-alg-origin-mark origin46-port-rfc959 pass c4 "$POOL4" PORT --check-origin

kill -TERM "$alg" 2>/dev/null
wait "$alg" 2>/dev/null
cell without-alg default46-rfc959 pass c4 "$POOL4" DEFAULT
cell without-alg default64-rfc959 pass c6 "$S4_VIA_NAT64" DEFAULT --check-origin
log "cells:"
column -t -s $'\t' "$OUT/cells.tsv" | cut -c1-160 | sed 's/^/    /'
log "done, status $status"
exit $status
