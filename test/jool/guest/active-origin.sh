#!/bin/bash
# Active data connections across a real Jool NAT64, in the QEMU guest (run it
# with test/jool/run.sh test/jool/guest/active-origin.sh; make build and
# test/deps.sh first). The servers serve in s6 and s4: proftpd first (the
# only one of the lab's servers that implements default active mode), then
# vsftpd and pure-ftpd, then test/lab/defaultftpd.py (RFC 959's default data
# port as written).
#
# Cells (test/lab/ftpclient.py, and ncftpget where installed; topology of
# topology.sh):
#   default46, default64: RFC 6384 section 8, default active mode: no PORT,
#     the server connects to the client's control address (proftpd: to its
#     control port minus 1, which fails in 64 through Jool's NAPT; see
#     below). Must work without and with ftpalg.
#   origin46-port, origin46-eprt, ncftp46: 46 active (PORT, EPRT |1|) where
#     the client requires the data connection to come from the address it
#     dialled (S4 = 192.0.2.1), as ncftp does ("data connection did not
#     originate from same IP address as control connection").
#   origin46-default: the same in default mode (RFC 6384 section 8).
#
# Jool masks an IPv6-initiated connection (the IPv6 server's data
# connection) with a pool4 entry of the packet's mark (0 unless set), not
# with the address of the control connection's static BIB entry. Here the
# mark-0 pool4 holds 192.0.2.3 only, as a pool4 whose dynamic part does not
# hold S4 (or holds other addresses too, which Jool's hash may pick), and
# the only other setup is the operator's plain one of README.md (S4#21 in
# pool4 with its static BIB entry, the ALG's range under mark 4242). With
# --jool-origin-marks off the 46 active origin cells must fail (the issue);
# with ftpalg's defaults they must pass for the three servers and in
# default mode: the daemon adds a pool4 entry of S4 alone under a mark of
# its own and marks the server's SYNs to the client (README.md, Jool).
# After SIGTERM pool4 must be as before the daemon.
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

for f in "$BIN" "$PKG/proftpd-core/usr/sbin/proftpd" "$PKG/pure-ftpd/usr/sbin/pure-ftpd"; do
	[ -x "$f" ] || { log "missing $f (make build; test/deps.sh)"; exit 1; }
done

# shellcheck source=test/jool/guest/topology.sh
. "$HERE/topology.sh"
build_topology || { log "topology (or modprobe jool) failed"; exit 1; }
jool_setup || { log "jool setup failed"; exit 1; }
# The dynamic (mark 0) part of pool4 without S4.
jool_nat pool4 remove "$POOL4" 2000-3000 --tcp && jool_nat pool4 add "$DYN4" 2000-3000 --tcp ||
	{ log "pool4 setup failed"; exit 1; }

mkdir -p "$WORK/ftproot" "$WORK/ncftp" "$WORK/home" /run/vsftpd/empty
head -c 262144 /dev/urandom >"$WORK/ftproot/data.bin"
chmod 755 "$WORK" "$WORK/ftproot"
chmod 644 "$WORK/ftproot/data.bin"
# shellcheck source=test/jool/guest/vsftpd.sh
. "$HERE/vsftpd.sh"
# shellcheck source=test/jool/guest/servers.sh
. "$HERE/servers.sh"

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

# ncftp_cell PHASE NAME EXPECT SERVER: ncftpget in active mode (-E) from c4;
# ncftp refuses a data connection from another address than the control
# connection's peer.
ncftp_cell() {
	local phase=$1 name=$2 want=$3 server=$4 out res args=(-E -V -t 10)
	if ! command -v ncftpget >/dev/null; then
		log "$phase $name: skipped (no ncftpget)"
		return
	fi
	[ "$server" = pure-ftpd ] && args+=(-u ftptest -p ftptest)
	rm -f "$WORK/ncftp/data.bin"
	out=$(HOME=$WORK/home nx c4 timeout 60 ncftpget "${args[@]}" "$POOL4" "$WORK/ncftp" /data.bin 2>&1)
	if [ $? = 0 ] && cmp -s "$WORK/ncftp/data.bin" "$WORK/ftproot/data.bin"; then res=pass; else res=fail; fi
	out=$(printf '%s' "$out" | tr '\n' ' ' | cut -c1-300)
	local verdict=ok
	if [ "$res" != "$want" ]; then verdict=WRONG; status=1; fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$name" "$want" "$res" "$verdict" "$out" >>"$OUT/cells.tsv"
	log "$phase $name: $res (must $want) $verdict: $out"
}

# start_alg NAME [flags]: ftpalg in nat, output in ftpalg-NAME.log.
alg=
start_alg() {
	local name=$1
	shift
	ip netns exec nat "$BIN" run --jool-instance "$INSTANCE" --jool-ports "$ALG_PORTS" --status-socket= --log-level debug "$@" \
		>"$OUT/ftpalg-$name.log" 2>&1 &
	alg=$!
	pids+=("$alg")
	for _ in $(seq 100); do
		grep -q 'ftpalg running' "$OUT/ftpalg-$name.log" 2>/dev/null && break
		kill -0 "$alg" 2>/dev/null || break
		sleep 0.2
	done
	grep -q 'ftpalg running' "$OUT/ftpalg-$name.log" || { log "ftpalg did not start"; cat "$OUT/ftpalg-$name.log"; exit 1; }
}
stop_alg() {
	kill -TERM "$alg" 2>/dev/null
	wait "$alg" 2>/dev/null
}
pool4() { jool_nat pool4 display --tcp 2>&1; }

# proftpd connects to the client's control port minus 1 in default mode
# (RFC 959 section 3.2 says the port itself). Through Jool a 64 client's
# control port U is masked as U' on pool4, and U'-1 has no BIB entry: the
# 64 default-mode cell fails with proftpd (an expected failure, with and
# without the ALG), while the 46 one works (the IPv6 server reaches Pref::C4
# with the client's own ports; Jool masks only the server's end).
# An RFC 959 default data port (U, from port 20): test/lab/defaultftpd.py
# in place of proftpd. 64 works too: the server connects from S4:20 to
# C4':U', the control connection's own (endpoint-independent) BIB entry.
start_rfc959() {
	nx s6 /usr/bin/python3 "$REPO/test/lab/defaultftpd.py" "$S6" "$WORK/ftproot" >"$OUT/defaultftpd-s6.out" 2>&1 &
	pids+=($!)
	nx s4 /usr/bin/python3 "$REPO/test/lab/defaultftpd.py" "$S4" "$WORK/ftproot" >"$OUT/defaultftpd-s4.out" 2>&1 &
	pids+=($!)
	for ns in s6 s4; do
		for _ in $(seq 100); do nx "$ns" ss -Hltn 'sport = :21' | grep -q . && break; sleep 0.1; done
	done
}
printf 'phase\tcell\tmust\tresult\tverdict\tdetail\n' >"$OUT/cells.tsv"
# The RFC 959 server first, and again right after proftpd: after pure-ftpd
# (whose data connections leave from port 20) defaultftpd could not bind
# port 20 (measured: "425 ... Address already in use", for a minute).
start_rfc959
cell without-alg default46-rfc959 pass c4 "$POOL4" DEFAULT
cell without-alg default64-rfc959 pass c6 "$S4_VIA_NAT64" DEFAULT --check-origin
stop_server
start_server proftpd || { log "proftpd did not start"; exit 1; }
log "proftpd listening in s6 and s4"
# Without the ALG PORT names C4, which the IPv6 server cannot reach; the
# default-mode origin cell fails from the dynamic pool4 address.
cell without default46 pass c4 "$POOL4" DEFAULT
cell without default64-proftpd fail c6 "$S4_VIA_NAT64" DEFAULT
cell without origin46-default fail c4 "$POOL4" DEFAULT --check-origin
pool4 >"$OUT/jool-pool4-before.txt"

# The ALG without the origin: the data connection comes from the dynamic
# pool4 address (the issue).
start_alg origin-off --jool-origin-marks off
cell origin-off default46 pass c4 "$POOL4" DEFAULT
cell origin-off pasv46 pass c4 "$POOL4" PASV
cell origin-off origin46-port fail c4 "$POOL4" PORT --check-origin
ncftp_cell origin-off ncftp46-proftpd fail proftpd
jool_nat session display --tcp --numeric >"$OUT/jool-session-origin-off.txt" 2>&1
stop_alg
if ! pool4 | cmp -s - "$OUT/jool-pool4-before.txt"; then
	log "pool4 changed by the daemon with --jool-origin-marks off"
	status=1
fi

# The ALG as it comes: every 46 active data connection from S4.
start_alg with-alg
cell with-alg default46 pass c4 "$POOL4" DEFAULT
cell with-alg default64-proftpd fail c6 "$S4_VIA_NAT64" DEFAULT
cell with-alg origin46-default pass c4 "$POOL4" DEFAULT --check-origin
for server in proftpd rfc959 vsftpd pure-ftpd; do
	if [ "$server" = rfc959 ]; then
		stop_server
		start_rfc959
		cell with-alg default46-rfc959 pass c4 "$POOL4" DEFAULT --check-origin
		cell with-alg default64-rfc959 pass c6 "$S4_VIA_NAT64" DEFAULT --check-origin
		cell with-alg origin46-port-rfc959 pass c4 "$POOL4" PORT --check-origin
		continue
	fi
	if [ "$server" != proftpd ]; then
		stop_server
		start_server "$server" || { log "$server did not start"; status=1; continue; }
	fi
	user=()
	[ "$server" = pure-ftpd ] && user=(--user ftptest --password ftptest)
	cell with-alg "pasv46-$server" pass c4 "$POOL4" PASV "${user[@]}"
	cell with-alg "origin46-port-$server" pass c4 "$POOL4" PORT --check-origin "${user[@]}"
	cell with-alg "origin46-eprt-$server" pass c4 "$POOL4" "EPRT 1" --check-origin "${user[@]}"
	ncftp_cell with-alg "ncftp46-$server" pass "$server"
done
stop_server
pool4 >"$OUT/jool-pool4-with-alg.txt"
jool_nat session display --tcp --numeric >"$OUT/jool-session-with-alg.txt" 2>&1
nx nat nft list table ip6 ftpalg >"$OUT/nft-ip6-with-alg.txt" 2>&1
if ! grep -q '46000' "$OUT/jool-pool4-with-alg.txt"; then
	log "no pool4 entry under mark 46000 while the daemon ran"
	status=1
fi

stop_alg
pool4 >"$OUT/jool-pool4-after.txt"
if ! cmp -s "$OUT/jool-pool4-after.txt" "$OUT/jool-pool4-before.txt"; then
	log "pool4 after the daemon's exit differs from before it:"
	diff "$OUT/jool-pool4-before.txt" "$OUT/jool-pool4-after.txt" | sed 's/^/    /'
	status=1
fi
# The reserved range is still pool4 for static entries (Jool's removal of
# the daemon's range took it from the per-address table; the daemon added
# the operator's mark-4242 range back).
if jool_nat bib add "$S6#4444" "$POOL4#61500" --tcp; then
	jool_nat bib remove "$S6#4444" "$POOL4#61500" --tcp
else
	log "a static BIB entry in the reserved range after the daemon's exit: refused"
	status=1
fi
log "cells:"
column -t -s $'\t' "$OUT/cells.tsv" | cut -c1-160 | sed 's/^/    /'
log "done, status $status"
exit $status
