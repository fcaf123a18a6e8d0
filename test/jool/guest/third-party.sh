#!/bin/bash
# Nobody but the peer through the ALG's Jool mappings (run it with
# test/jool/run.sh test/jool/guest/third-party.sh; make build and test/deps.sh
# first).
#
# Same topology and Jool instance as ftp-matrix.sh, plus a third IPv4 host:
#
#   c4 198.51.100.2  --- [nat] --- s6 2001:db8:6::10   (46: IPv4 client, IPv6 server)
#   x4 198.51.100.66 --/           (the third party, routed like the client)
#   c6 2001:db8:1::10 -- [nat] --- s4 203.0.113.10    (64: IPv6 client, IPv4 server)
#
# ftpalg runs in nat with --jool-ports 61000-61999 (the peer filter is on).
# For each server (vsftpd, proftpd, pure-ftpd) and kind (46 passive: PASV from
# c4; 64 active: EPRT |2| from c6), one transfer of a 2 MiB file
# (test/lab/thirdparty.py): x4 tries the data port the ALG announced on the IPv4 side
# before the data connection, during the transfer (that port, then every
# port of the range at once) and after it. Nothing may get through, and every
# transfer must deliver the file (SHA-256).
#
# Then the control (FTPALG_THIRDPARTY_CONTROL=1, the default): the peer
# filter's base chain is flushed and the vsftpd cells run again: the third
# party must now get through (the hole the filter closes, and proof that the
# probes can see it).
#
# Exit status 0 when every guarded cell passed (transfer verified, 0
# through) and the control found the hole. Results in $FTPALG_OUT:
# third-party.tsv (server, kind, result, announced port, probes, through,
# seconds, detail), cell logs, ftpalg.log, nft-*.txt, jool-bib-*.txt, server
# logs.
set -uo pipefail

OUT=${FTPALG_OUT:-$(mktemp -d)}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${FTPALG_REPO:-$(cd "$HERE/../../.." && pwd)}
BIN=$REPO/bin/ftpalg
PKG=$REPO/test/.cache/pkg
TP=(/usr/bin/python3 "$REPO/test/lab/thirdparty.py")
INSTANCE=lab
POOL6=2001:db8:64::/96
POOL4=192.0.2.1
ALG_PORTS=61000-61999
S6=2001:db8:6::10
S4=203.0.113.10
S4_VIA_NAT64=2001:db8:64::cb00:710a # 2001:db8:64::203.0.113.10
C4=198.51.100.2
C6=2001:db8:1::10
X4=198.51.100.66
CONTROL=${FTPALG_THIRDPARTY_CONTROL:-1}
# --no-control (run.sh passes arguments, not this variable, into the guest).
[ "${1:-}" = --no-control ] && CONTROL=0
WORK=$(mktemp -d)
mkdir -p "$OUT"

now() { date +%s%3N; }
since() { local d=$(( $(now) - $1 )); printf '%d.%d' $((d / 1000)) $(((d % 1000) / 100)); }
log() { printf '[third-party %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
nx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
jool_nat() { nx nat jool -i "$INSTANCE" "$@"; }

pids=()
server_pids=()
cleanup() {
	local p
	for p in "${server_pids[@]}" "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for ns in c4 x4 s6 c6 s4 nat; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
t_all=$(now)

for f in "$BIN" "$PKG/proftpd-core/usr/sbin/proftpd" "$PKG/pure-ftpd/usr/sbin/pure-ftpd"; do
	[ -x "$f" ] || { log "missing $f (make build; test/deps.sh)"; exit 1; }
done

# --- topology ----------------------------------------------------------------
# shellcheck source=test/jool/guest/topology.sh
. "$HERE/topology.sh"
# shellcheck source=test/jool/guest/vsftpd.sh
. "$HERE/vsftpd.sh"
build_topology || { log "topology (or modprobe jool) failed"; exit 1; }
jool_setup || { log "jool setup failed"; exit 1; }
# The third party: its own link to the router, a host route there, so its
# packets arrive on an IPv4 interface of the router like the client's.
ip netns add x4
nx x4 ip link set lo up
ip -n nat link add to-x4 type veth peer name eth0 netns x4
ip -n x4 addr add "$X4/32" dev eth0
ip -n x4 link set eth0 up
ip -n nat link set to-x4 up
ip -n x4 route add 198.51.100.1/32 dev eth0
ip -n x4 route add default via 198.51.100.1
ip -n nat route add "$X4/32" dev to-x4
log "topology, jool and the third party $X4 ready"

# --- the served file ------------------------------------------------------------
mkdir -p "$WORK/ftproot" "$WORK/empty" /run/vsftpd/empty
head -c 2097152 /dev/urandom >"$WORK/ftproot/big.bin"
SHA=$(sha256sum "$WORK/ftproot/big.bin" | cut -d' ' -f1)
chmod 755 "$WORK" "$WORK/ftproot"
chmod 644 "$WORK/ftproot/big.bin"

# --- servers: one kind at a time, in s6 (IPv6) and s4 (IPv4) ----------------------
# shellcheck source=test/jool/guest/servers.sh
. "$HERE/servers.sh"

# --- ftpalg -------------------------------------------------------------------------
# Not through nx: "nx ... &" forks a subshell, and $! must be ftpalg's pid.
# shellcheck disable=SC2086
ip netns exec nat "$BIN" run --jool-instance "$INSTANCE" --jool-ports "$ALG_PORTS" --status-socket= ${FTPALG_RUN_ARGS:-} >"$OUT/ftpalg.log" 2>&1 &
alg_pid=$!
pids+=("$alg_pid")
for _ in $(seq 100); do
	grep -q 'ftpalg running' "$OUT/ftpalg.log" 2>/dev/null && break
	kill -0 "$alg_pid" 2>/dev/null || break
	sleep 0.2
done
if ! grep -q 'ftpalg running' "$OUT/ftpalg.log"; then
	log "ftpalg did not start:"
	sed 's/^/    /' "$OUT/ftpalg.log"
	exit 1
fi
nx nat nft list table ip ftpalg >"$OUT/nft-table.txt" 2>&1
log "ftpalg running with the peer filter (nft-table.txt)"

printf 'pass\tserver\tkind\tresult\tannounced\tprobes\tthrough\tseconds\tdetail\n' >"$OUT/third-party.tsv"
cell() { # cell PASS SERVER KIND: one transfer; appends to third-party.tsv
	local pass=$1 server=$2 kind=$3 ns args=() out line
	case $server in
	pure-ftpd) args+=(--user ftptest --password ftptest) ;;
	esac
	if [ "$kind" = 46 ]; then
		ns=c4
		args+=("$POOL4")
	else
		ns=c6
		args+=("$S4_VIA_NAT64" --c6 "$C6" --server6 "$S4_VIA_NAT64")
	fi
	out=$(nx "$ns" timeout 120 "${TP[@]}" transfer "$kind" "${args[@]}" --third-ns x4 --pool4 "$POOL4" \
		--range "$ALG_PORTS" --file big.bin --sha256 "$SHA" 2>&1)
	printf '%s\n' "$out" >"$OUT/cell-$pass-$server-$kind.log"
	printf '%s\n' "$out" | grep '^probe' | sed "s/^/    $server $kind /"
	line=$(printf '%s\n' "$out" | grep '^result' | tail -n 1)
	[ -n "$line" ] || line="result $kind fail announced=0 probes=0 through=0 seconds=0 detail=$(printf '%s' "$out" | tail -n 3 | tr '\n\t' '  ')"
	log "$pass $server $kind: ${line#result }"
	# result KIND RES announced=P probes=N through=M seconds=S detail=...
	printf '%s\n' "$line" | sed -E "s/^result ([0-9]+) (pass|fail) announced=([0-9]+) probes=([0-9]+) through=([0-9]+) seconds=([0-9.]+) detail=(.*)$/$pass\t$server\t\1\t\2\t\3\t\4\t\5\t\6\t\7/" >>"$OUT/third-party.tsv"
}

status=0
for server in vsftpd proftpd pure-ftpd; do
	start_server "$server" || { log "$server did not start"; status=1; continue; }
	log "$server listening in s6 and s4"
	cell guarded "$server" 46
	cell guarded "$server" 64
	stop_server || log "$server did not stop"
done
jool_nat bib display --tcp --numeric >"$OUT/jool-bib-guarded.txt" 2>&1
nx nat nft list table ip ftpalg >"$OUT/nft-after-guarded.txt" 2>&1

if [ "$CONTROL" = 1 ]; then
	# The control: the same cells with the filter's base chain emptied.
	nx nat nft flush chain ip ftpalg peerfilter
	log "control: peer filter flushed"
	start_server vsftpd && {
		cell control vsftpd 46
		cell control vsftpd 64
		stop_server
	}
fi

kill -TERM "$alg_pid" 2>/dev/null
for _ in $(seq 100); do kill -0 "$alg_pid" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$alg_pid" 2>/dev/null; then
	log "ftpalg still running 20 s after SIGTERM; killing it"
	kill -KILL "$alg_pid" 2>/dev/null
	status=1
fi
wait "$alg_pid" 2>/dev/null
jool_nat bib display --tcp --numeric >"$OUT/jool-bib-after-alg.txt" 2>&1
nx nat nft list ruleset >"$OUT/nft-after-alg.txt" 2>&1
# The daemon removes its mappings, then the filter, at exit.
left=$(grep -cE '^\[Static TCP\] [0-9.]+#61[0-9]{3} ' "$OUT/jool-bib-after-alg.txt")
if [ "$left" != 0 ] || grep -q 'table ip ftpalg' "$OUT/nft-after-alg.txt"; then
	log "after ftpalg exited: $left static entries in $ALG_PORTS, and its table: $(grep -c 'table ip ftpalg' "$OUT/nft-after-alg.txt")"
	status=1
else
	log "after ftpalg exited: none of its entries, no ftpalg table"
fi

# --- verdict ---------------------------------------------------------------------
read -r g_cells g_pass g_probes g_through < <(awk -F'\t' '$1 == "guarded" { n++; if ($4 == "pass") p++; t += $6; th += $7 } END { print n+0, p+0, t+0, th+0 }' "$OUT/third-party.tsv")
read -r c_cells c_probes c_through < <(awk -F'\t' '$1 == "control" { n++; t += $6; th += $7 } END { print n+0, t+0, th+0 }' "$OUT/third-party.tsv")
drops=$(grep -oE 'counter packets [0-9]+ bytes [0-9]+ drop' "$OUT/nft-after-guarded.txt" | awk '{ print $3 }')
log "guarded: $g_pass of $g_cells cells passed (6 expected); the third party tried $g_probes times, got through $g_through times; peer filter dropped ${drops:-?} SYNs"
if [ "$g_cells" != 6 ] || [ "$g_pass" != 6 ] || [ "$g_through" != 0 ]; then
	status=1
fi
if [ "$CONTROL" = 1 ]; then
	log "control (filter flushed): the third party got through $c_through times of $c_probes tries ($c_cells cells)"
	[ "$c_through" -gt 0 ] || { log "control: the probes saw no hole without the filter"; status=1; }
fi
log "third-party.tsv:"
cut -f1-8 "$OUT/third-party.tsv" | sed 's/^/    /' | expand -t 10
log "done in $(since "$t_all") s, status $status"
echo "third-party: guarded $g_pass/$g_cells passed, through $g_through of $g_probes; control through $c_through of $c_probes"
exit $status
