#!/bin/bash
# FTP across a real Jool NAT64, in the QEMU guest (run it with
# test/jool/run.sh test/jool/guest/ftp-matrix.sh).
#
# Topology (all namespaces in the guest, documentation addresses only):
#
#   c4 198.51.100.2 --- 198.51.100.1 [nat] 2001:db8:6::1 --- s6 2001:db8:6::10   (46: IPv4 client, IPv6 server)
#   c6 2001:db8:1::10 --- 2001:db8:1::1 [nat] 203.0.113.1 --- s4 203.0.113.10    (64: IPv6 client, IPv4 server)
#
# nat runs Jool (instance "lab", netfilter mode): pool6 2001:db8:64::/96, pool4
# 192.0.2.1 (TCP 21 and 2000-3000), and a static BIB entry
# 2001:db8:6::10#21 <-> 192.0.2.1#21 so IPv4 clients reach the IPv6 server at
# 192.0.2.1. IPv6 clients reach the IPv4 server at 2001:db8:64::203.0.113.10.
# vsftpd (the host's binary) serves hello.txt in s6 and s4.
#
# Pass "without": the matrix with no ALG. Data channels are expected to break
# (that is the ALG's job); the pass checks that the lab itself is real:
# control connections work in both directions and 64 EPSV (which needs no
# ALG) transfers data. Then the hook for the ALG (FTPALG_WITH_ALG=1), where
# every cell must pass except an IPv6 client's PASV and PORT, which the ALG
# leaves unchanged (docs/PROTOCOL.md). Exit status 0 when both hold.
#
# Results in $FTPALG_OUT: matrix.tsv, jool-*.txt (bib/session/pool4 displays),
# nat-*.pcap (all TCP on the router), vsftpd logs, wkp.txt.
set -uo pipefail

OUT=${FTPALG_OUT:-$(mktemp -d)}
HERE=$(cd "$(dirname "$0")" && pwd)
FTPCHECK="/usr/bin/python3 $HERE/ftpcheck.py"
INSTANCE=lab
POOL6=2001:db8:64::/96
POOL4=192.0.2.1
ALG_PORTS=61000-61999
S6=2001:db8:6::10
S4=203.0.113.10
S4_VIA_NAT64=2001:db8:64::cb00:710a # 2001:db8:64::203.0.113.10
C4=198.51.100.2
C6=2001:db8:1::10
CONTENT="hello through a real jool"
WORK=$(mktemp -d)
mkdir -p "$OUT"

now() { date +%s%3N; }
since() { local d=$(( $(now) - $1 )); printf '%d.%d' $((d / 1000)) $(((d % 1000) / 100)); }
log() { printf '[matrix %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
# nx runs a command in a namespace. Not for background jobs whose pid is
# needed: "nx ... &" forks a subshell, so $! would not be the command's pid.
nx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
jool_nat() { nx nat jool -i "$INSTANCE" "$@"; }

pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for ns in c4 s6 c6 s4 nat; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

t_all=$(now)

# --- topology ----------------------------------------------------------------
t0=$(now)
# shellcheck source=test/jool/guest/topology.sh
. "$(dirname "$0")/topology.sh"
build_topology || { log "topology (or modprobe jool) failed"; exit 1; }
jool_setup || { log "jool setup failed"; exit 1; }
log "topology and jool ready in $(since "$t0") s"

# --- FTP servers ----------------------------------------------------------------
mkdir -p "$WORK/ftproot" /run/vsftpd/empty
echo "$CONTENT" >"$WORK/ftproot/hello.txt"
chmod 755 "$WORK" "$WORK/ftproot"
chmod 644 "$WORK/ftproot/hello.txt"
# shellcheck source=test/jool/guest/vsftpd.sh
. "$(dirname "$0")/vsftpd.sh"
start_vsftpd_pair
log "vsftpd listening in s6 and s4"

# --- the matrix -------------------------------------------------------------------
# expected outcome without an ALG, by cell (see README.md for why).
declare -A EXPECT_WITHOUT=(
	[46-pasv]=fail [46-epsv]=fail [46-port]=fail [46-eprt1]=fail
	[64-epsv]=pass [64-pasv]=fail [64-eprt2]=fail [64-port]=fail
	[46-curl-passive]=fail [46-curl-active]=fail [64-curl-passive]=pass [64-curl-active]=fail
	[46-lftp-pasv]=fail [64-lftp-epsv]=pass
)
# expected outcome with ftpalg: everything passes except what docs/PROTOCOL.md
# leaves unchanged in 64 sessions (an IPv6 client's PASV and PORT).
declare -A EXPECT_WITH=([64-pasv]=fail [64-port]=fail)
printf 'pass\tcell\tns\tclient\texpected\tresult\tseconds\tdetail\n' >"$OUT/matrix.tsv"
declare -A CELL_RESULT=() CELL_DETAIL=()
failures=0
deviations=0

cell() { # cell PASS NAME NS CLIENT command...; appends to $cells, prints to stdout
	local pass=$1 name=$2 ns=$3 client=$4
	shift 4
	local t0 out rc res
	t0=$(now)
	# bash -c so that exported shell functions (curl_get, lftp_get) run too.
	out=$(nx "$ns" timeout 30 bash -c '"$@"' _ "$@" 2>&1)
	rc=$?
	if [ $rc = 0 ]; then res=pass; else res=fail; fi
	out=$(printf '%s' "$out" | tr '\t\n' '  ' | cut -c1-600)
	local exp=${EXPECT_WITHOUT[$name]:-?} note=""
	[ "$pass" = with-alg ] && exp=${EXPECT_WITH[$name]:-pass}
	[ "$res" = "$exp" ] || note="  (expected $exp)"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pass" "$name" "$ns" "$client" "$exp" "$res" "$(since "$t0")" "$out" >>"$cells"
	printf '  %-8s %-16s %-4s %-8s %s %4ss%s\n      %s\n' "$pass" "$name" "$ns" "$client" "$res" "$(since "$t0")" "$note" "$out"
}

curl_get() { # curl_get URL [curl options]; prints curl's FTP commands and replies
	local url=$1 got rc tmp
	shift
	tmp=$(mktemp)
	got=$(curl -sS -v --connect-timeout 4 -m 12 "$@" "$url" -o "$tmp" 2>&1)
	rc=$?
	printf '%s\n' "$got" | grep -E '^[<>] |^curl:' | tr '\r\n' '  '
	got=$(cat "$tmp")
	rm -f "$tmp"
	[ $rc = 0 ] || return 1
	[ "$got" = "$CONTENT" ] || { echo "unexpected content"; return 1; }
}
lftp_get() { # lftp_get URL SETTINGS
	lftp -e "set net:max-retries 1; set net:timeout 4; set net:reconnect-interval-base 1; set xfer:clobber on; $2; cat hello.txt; bye" "$1"
}

cells_46() { # cells_46 PASS: IPv4 client c4 -> pool4 address -> IPv6 server
	local p=$1
	cell "$p" 46-pasv c4 ftplib $FTPCHECK "$POOL4" pasv --expect "$CONTENT"
	cell "$p" 46-epsv c4 ftplib $FTPCHECK "$POOL4" epsv --expect "$CONTENT"
	cell "$p" 46-port c4 ftplib $FTPCHECK "$POOL4" port --expect "$CONTENT"
	cell "$p" 46-eprt1 c4 ftplib $FTPCHECK "$POOL4" eprt1 --expect "$CONTENT"
	cell "$p" 46-curl-passive c4 curl curl_get "ftp://$POOL4/hello.txt"
	cell "$p" 46-curl-active c4 curl curl_get "ftp://$POOL4/hello.txt" --ftp-port "$C4"
	cell "$p" 46-lftp-pasv c4 lftp lftp_get "ftp://$POOL4" "set ftp:passive-mode on; set ftp:prefer-epsv no"
}

cells_64() { # cells_64 PASS: IPv6 client c6 -> pool6 address -> IPv4 server
	local p=$1
	cell "$p" 64-epsv c6 ftplib $FTPCHECK "$S4_VIA_NAT64" epsv --expect "$CONTENT"
	cell "$p" 64-pasv c6 ftplib $FTPCHECK "$S4_VIA_NAT64" pasv --expect "$CONTENT"
	cell "$p" 64-eprt2 c6 ftplib $FTPCHECK "$S4_VIA_NAT64" eprt2 --expect "$CONTENT"
	# An IPv6-only client has no IPv4 address; it advertises the pool4
	# address, which is how the server sees it.
	cell "$p" 64-port c6 ftplib $FTPCHECK "$S4_VIA_NAT64" port --advertise "$POOL4" --expect "$CONTENT"
	cell "$p" 64-curl-passive c6 curl curl_get "ftp://[$S4_VIA_NAT64]/hello.txt"
	cell "$p" 64-curl-active c6 curl curl_get "ftp://[$S4_VIA_NAT64]/hello.txt" --ftp-port "$C6"
	cell "$p" 64-lftp-epsv c6 lftp lftp_get "ftp://[$S4_VIA_NAT64]" "set ftp:passive-mode on; set ftp:prefer-epsv yes"
}

run_matrix() { # run_matrix PASS: both directions at once (they share nothing but the router)
	local p=$1 t0 d pid46 pid64 name res exp detail
	t0=$(now)
	log "pass $p: 46 (c4 -> $POOL4 -> $S6) and 64 (c6 -> $S4_VIA_NAT64 -> $S4), concurrently"
	cells="$WORK/$p-46.tsv" cells_46 "$p" >"$WORK/$p-46.log" 2>&1 &
	pid46=$!
	cells="$WORK/$p-64.tsv" cells_64 "$p" >"$WORK/$p-64.log" 2>&1 &
	pid64=$!
	wait "$pid46" "$pid64"
	cat "$WORK/$p-46.log" "$WORK/$p-64.log"
	cat "$WORK/$p-46.tsv" "$WORK/$p-64.tsv" >"$WORK/$p.tsv"
	cat "$WORK/$p.tsv" >>"$OUT/matrix.tsv"
	CELL_RESULT=()
	CELL_DETAIL=()
	failures=0
	deviations=0
	while IFS=$'\t' read -r _ name _ _ exp res _ detail; do
		CELL_RESULT[$name]=$res
		CELL_DETAIL[$name]=$detail
		[ "$res" = pass ] || failures=$((failures + 1))
		[ "$res" = "$exp" ] || deviations=$((deviations + 1))
	done <"$WORK/$p.tsv"
	log "pass $p: $failures failing cells, $deviations differ from expectation, $(since "$t0") s"
}

export -f curl_get lftp_get
export CONTENT

jool_state() { # jool_state PASS
	jool_nat bib display --tcp --numeric >"$OUT/jool-bib-$1.txt" 2>&1
	jool_nat session display --tcp --numeric >"$OUT/jool-session-$1.txt" 2>&1
	jool_nat pool4 display --tcp >"$OUT/jool-pool4-$1.txt" 2>&1
	log "jool bib (tcp) after pass $1:"
	sed 's/^/    /' "$OUT/jool-bib-$1.txt"
	log "jool sessions (tcp) after pass $1:"
	sed 's/^/    /' "$OUT/jool-session-$1.txt"
}

capture_start() { # capture_start PASS
	ip netns exec nat tcpdump -i any -y LINUX_SLL -n -U -Z root -s 0 -w "$OUT/nat-$1.pcap" tcp >"$WORK/tcpdump-$1.log" 2>&1 &
	capture_pid=$!
	pids+=("$capture_pid")
	for _ in $(seq 30); do grep -q listening "$WORK/tcpdump-$1.log" && break; sleep 0.1; done
}
capture_stop() {
	sleep 0.3
	kill "$capture_pid" 2>/dev/null
	wait "$capture_pid" 2>/dev/null
}

status=0
capture_start without
run_matrix without
capture_stop
jool_state without
if [ "${CELL_DETAIL[46-pasv]:0:12}" = "fail control" ] || [ "${CELL_DETAIL[64-epsv]:0:12}" = "fail control" ]; then
	log "LAB BROKEN: control connections do not cross the translator"
	status=1
elif [ "${CELL_RESULT[64-epsv]}" != pass ]; then
	log "LAB BROKEN: 64 EPSV (no ALG needed) did not transfer data"
	status=1
else
	log "lab is real: control connections cross Jool in both directions, 64 EPSV transfers data; $failures cells fail without an ALG"
fi

# ============================================================================
# HOOK: the ALG. Start ftpalg's daemon in the router namespace, attached to
# this Jool instance, then run the same matrix (expectations: EXPECT_WITH).
# Enabled with FTPALG_WITH_ALG=1 (run.sh passes it through). Flags:
# FTPALG_RUN_ARGS, default "--jool-ports $ALG_PORTS --log-level debug".
# ============================================================================
if [ "${FTPALG_WITH_ALG:-0}" = 1 ]; then
	bin="$FTPALG_REPO/bin/ftpalg"
	if [ ! -x "$bin" ]; then
		log "FTPALG_WITH_ALG=1 but $bin is missing (make build)"
		status=1
	else
		args=${FTPALG_RUN_ARGS:-"--jool-ports $ALG_PORTS --log-level debug"}
		log "starting: ftpalg run --jool-instance $INSTANCE $args"
		# shellcheck disable=SC2086
		ip netns exec nat "$bin" run --jool-instance "$INSTANCE" $args >"$OUT/ftpalg.log" 2>&1 &
		alg_pid=$!
		pids+=("$alg_pid")
		for _ in $(seq 100); do
			grep -q 'ftpalg running' "$OUT/ftpalg.log" 2>/dev/null && break
			kill -0 "$alg_pid" 2>/dev/null || break
			sleep 0.2
		done
		if ! grep -q 'ftpalg running' "$OUT/ftpalg.log" 2>/dev/null; then
			log "ftpalg did not start:"
			sed 's/^/    /' "$OUT/ftpalg.log"
			status=1
		else
			nx nat nft list ruleset >"$OUT/nft-with-alg.txt" 2>&1
			capture_start with-alg
			run_matrix with-alg
			capture_stop
			jool_state with-alg
			nx nat "$bin" status >"$OUT/ftpalg-status.txt" 2>&1
			if [ "$deviations" = 0 ]; then
				log "with ftpalg: every cell as expected ($failures expected failures: PASV/PORT from an IPv6 client pass unchanged)"
			else
				log "with ftpalg: $deviations cells differ from expectation"
				status=1
			fi
			# SIGTERM: a non-interactive shell starts background jobs with
			# SIGINT ignored.
			kill -TERM "$alg_pid" 2>/dev/null
			for _ in $(seq 50); do kill -0 "$alg_pid" 2>/dev/null || break; sleep 0.2; done
			if kill -0 "$alg_pid" 2>/dev/null; then
				log "ftpalg still running 10 s after SIGTERM; killing it"
				kill -KILL "$alg_pid" 2>/dev/null
				status=1
			fi
			wait "$alg_pid" 2>/dev/null
			jool_nat bib display --tcp --numeric >"$OUT/jool-bib-after-alg.txt" 2>&1
			# Every static entry the daemon added is gone once it exited.
			left=$(grep -c -E '^\[Static TCP\] [0-9.]+#61[0-9]{3} ' "$OUT/jool-bib-after-alg.txt" || true)
			if [ "$left" != 0 ]; then
				log "after ftpalg exited, jool bib display still shows $left entries in its port range:"
				sed 's/^/    /' "$OUT/jool-bib-after-alg.txt"
				status=1
			else
				log "after ftpalg exited, jool bib display shows none of its entries"
			fi
			nx nat nft list ruleset >"$OUT/nft-after-alg.txt" 2>&1
			log "ftpalg log (last 40 lines of $OUT/ftpalg.log):"
			tail -n 40 "$OUT/ftpalg.log" | sed 's/^/    /'
		fi
	fi
fi
# ============================================================================

# --- side experiment: the well-known prefix with documentation IPv4 addresses ---
# Tayga refuses to translate non-global IPv4 addresses with 64:ff9b::/96
# (RFC 6052 section 3.1); does Jool? One control connection tells.
{
	nx nat jool instance remove "$INSTANCE" &&
		nx nat jool instance add wkp --netfilter --pool6 64:ff9b::/96 &&
		nx nat jool -i wkp pool4 add "$POOL4" 2000-3000 --tcp
} >"$OUT/wkp.txt" 2>&1
wkp=$(nx c6 timeout 20 $FTPCHECK 64:ff9b::cb00:710a epsv --expect "$CONTENT" 2>&1)
echo "64:ff9b::/96 with server 203.0.113.10: $wkp" >>"$OUT/wkp.txt"
log "well-known prefix 64:ff9b::/96 to a documentation IPv4 server: $wkp"
nx nat jool instance remove wkp >/dev/null 2>&1

log "matrix.tsv:"
cut -f1-7 "$OUT/matrix.tsv" | sed 's/^/    /' | expand -t 18
log "done in $(since "$t_all") s, status $status"
exit $status
