#!/bin/bash
# Many data connections in a row through ftpalg and a real Jool, then no BIB
# entry of the ALG left behind. In the QEMU guest:
#
#   test/jool/run.sh test/jool/guest/bib-churn.sh [N [WAIT [SLOW]]]
#
# N transfers (default 1000), WAIT seconds for the expiry (60), SLOW rounds of
# the slow-client check (0).
#
# Same topology and Jool instance as ftp-matrix.sh (see there):
#
#   c4 198.51.100.2 --- [nat] --- s6 2001:db8:6::10   (46: IPv4 client, IPv6 server, via 192.0.2.1)
#   c6 2001:db8:1::10 --- [nat] --- s4 203.0.113.10   (64: IPv6 client, IPv4 server, via 2001:db8:64::cb00:710a)
#
# Starts "ftpalg run --jool-instance lab --jool-ports 61000-61999" in nat, then
# runs N data connections: N/2 46 passive (c4, one control connection, PASV +
# RETR each time, the client connects to the 227 reply's literal address) and
# the rest 64 active (c6, one control connection, EPRT |2| + RETR), both
# clients at once, each of them one transfer after the other (churn.py).
# Every transfer must deliver exactly its file. A poller counts the static
# BIB entries in 61000-61999 every second (the peak is reported). Then, with
# the daemon still running, it waits up to 60 s for its expiry to remove them
# all. Then a burst of 20 more transfers, so that the daemon holds entries
# when it stops with SIGTERM; none may be left after it exited.
#
# With SLOW > 0, before the expiry wait, SLOW rounds of: 100 quick 46 passive
# transfers, then one whose client waits 16 s between the 227 reply and
# connecting. vsftpd's 101 passive ports come back, so that slow transfer
# most likely lands on an entry of the ALG that still carries finished
# sessions of earlier transfers; the entry must not be removed under it
# (the mapper once removed such entries 10 s after the request).
#
# Exit status 0 when every transfer passed and no entry is left. The last
# line is "bib-churn: P passed, F failed" (transfers).
#
# Results in $FTPALG_OUT: churn-46.log, churn-64.log, bib-count.tsv (seconds
# since start, entries in the range), jool-bib-*.txt, jool-session-*.txt,
# ftpalg.log, ftpalg-status.txt, vsftpd-*.log (transfer logs).
set -uo pipefail

N=${1:-1000}
CLEANUP_WAIT=${2:-60} # seconds the running daemon gets to remove its entries
SLOW=${3:-0}
case $N$CLEANUP_WAIT$SLOW in
'' | *[!0-9]*) echo "usage: $0 [N [WAIT [SLOW]]]" >&2; exit 2 ;;
esac
TOTAL=$((N + SLOW * 101 + 20)) # 20: the last burst
N46=$((N / 2))
N64=$((N - N46))

OUT=${FTPALG_OUT:-$(mktemp -d)}
HERE=$(cd "$(dirname "$0")" && pwd)
CHURN=(/usr/bin/python3 "$HERE/churn.py")
BIN=${FTPALG_REPO:-$(cd "$HERE/../../.." && pwd)}/bin/ftpalg
INSTANCE=lab
POOL6=2001:db8:64::/96
POOL4=192.0.2.1
ALG_PORTS=61000-61999
# A static TCP entry on the pool4 address with a port in ALG_PORTS.
ALG_ENTRY='^\[Static TCP\] 192\.0\.2\.1#61[0-9]{3} '
S6=2001:db8:6::10
S4=203.0.113.10
S4_VIA_NAT64=2001:db8:64::cb00:710a # 2001:db8:64::203.0.113.10
C4=198.51.100.2
C6=2001:db8:1::10
WORK=$(mktemp -d)
mkdir -p "$OUT"

now() { date +%s%3N; }
since() { local d=$(( $(now) - $1 )); printf '%d.%d' $((d / 1000)) $(((d % 1000) / 100)); }
log() { printf '[bib-churn %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
nx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
jool_nat() { nx nat jool -i "$INSTANCE" "$@"; }
# alg_entries prints how many static entries of the ALG's range Jool holds.
alg_entries() { jool_nat bib display --tcp --numeric 2>/dev/null | grep -cE "$ALG_ENTRY"; }

pids=()
# shellcheck disable=SC2317 # run by the EXIT trap
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
passed=0
failed=$TOTAL
finish() { # finish STATUS
	log "done in $(since "$t_all") s, status $1"
	echo "bib-churn: $passed passed, $failed failed"
	exit "$1"
}

[ -x "$BIN" ] || { log "$BIN is missing (make build)"; finish 1; }

# --- topology (as ftp-matrix.sh) ---------------------------------------------
t0=$(now)
# shellcheck source=test/jool/guest/topology.sh
. "$(dirname "$0")/topology.sh"
build_topology || { log "topology (or modprobe jool) failed"; finish 1; }
jool_setup || { log "jool setup failed"; finish 1; }
log "topology and jool ready in $(since "$t0") s"

# --- FTP servers ---------------------------------------------------------------
mkdir -p "$WORK/ftproot" /run/vsftpd/empty
"${CHURN[@]}" --make-files "$WORK/ftproot" || { log "cannot write the files"; finish 1; }
chmod 755 "$WORK" "$WORK/ftproot"
# shellcheck source=test/jool/guest/vsftpd.sh
. "$(dirname "$0")/vsftpd.sh"
start_vsftpd_pair

# --- the daemon ------------------------------------------------------------------
args=${FTPALG_RUN_ARGS:-"--jool-ports $ALG_PORTS"}
log "starting: ftpalg run --jool-instance $INSTANCE $args"
# shellcheck disable=SC2086
ip netns exec nat "$BIN" run --jool-instance "$INSTANCE" $args >"$OUT/ftpalg.log" 2>&1 &
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
	finish 1
fi
alive() { kill -0 "$alg_pid" 2>/dev/null; }

# --- the poller: static entries in the ALG's range, every second -------------------
printf 'seconds\tentries\n' >"$OUT/bib-count.tsv"
(
	while :; do
		printf '%s\t%s\n' "$(since "$t_all")" "$(alg_entries)" >>"$OUT/bib-count.tsv"
		sleep 1
	done
) &
poller=$!
pids+=("$poller")

# --- the churn -------------------------------------------------------------------
t_churn=$(now)
log "churn: $N46 x 46 passive (c4 -> $POOL4, PASV) and $N64 x 64 active (c6 -> $S4_VIA_NAT64, EPRT |2|), both at once"
nx c4 "${CHURN[@]}" "$POOL4" pasv "$N46" >"$OUT/churn-46.log" 2>&1 &
pid46=$!
nx c6 "${CHURN[@]}" "$S4_VIA_NAT64" eprt2 "$N64" >"$OUT/churn-64.log" 2>&1 &
pid64=$!
wait "$pid46"
rc46=$?
wait "$pid64"
rc64=$?
t_churn=$(since "$t_churn")
kill "$poller" 2>/dev/null
wait "$poller" 2>/dev/null
sed 's/^/    46 /' "$OUT/churn-46.log" | tail -n 30
sed 's/^/    64 /' "$OUT/churn-64.log" | tail -n 30
count() { # count LOG WORD: the number before WORD on the summary line
	sed -n "s/^churn [a-z0-9]*: .*\b\([0-9][0-9]*\) $2.*/\1/p" "$1" | tail -n 1
}
p46=$(count "$OUT/churn-46.log" passed)
p64=$(count "$OUT/churn-64.log" passed)
passed=$((${p46:-0} + ${p64:-0}))
failed=$((N - passed))
status=0
if [ "$rc46" != 0 ] || [ "$rc64" != 0 ] || [ "$failed" != 0 ]; then
	log "churn: $failed of $N transfers failed (46 exit $rc46, 64 exit $rc64)"
	status=1
else
	log "churn: all $N transfers passed in $t_churn s"
fi
jool_nat bib display --tcp --numeric >"$OUT/jool-bib-after-churn.txt" 2>&1
jool_nat session display --tcp --numeric >"$OUT/jool-session-after-churn.txt" 2>&1
at_end=$(grep -cE "$ALG_ENTRY" "$OUT/jool-bib-after-churn.txt")
peak=$(awk 'NR > 1 && $2 > m { m = $2 } END { print m + 0 }' "$OUT/bib-count.tsv")
[ "$at_end" -gt "$peak" ] && peak=$at_end
samples=$(($(wc -l <"$OUT/bib-count.tsv") - 1))
log "static entries in $ALG_PORTS: peak $peak during the churn ($samples samples, one a second plus the time jool takes to list), $at_end when it ended"
if [ "$N" -gt 0 ] && [ "$peak" = 0 ]; then
	# Then the transfers did not go through the daemon's entries at all.
	log "no entry of the daemon was ever seen"
	status=1
fi
nx nat "$BIN" status >"$OUT/ftpalg-status.txt" 2>&1

# --- expiry while the daemon runs ----------------------------------------------------
wait_expiry() { # wait_expiry NAME WHEN: polls until no entry is left, sets status
	local t0 left start cleanup_s
	t0=$(now)
	left=$(alg_entries)
	start=$left
	while [ "$left" != 0 ] && [ $(( $(now) - t0 )) -lt $((CLEANUP_WAIT * 1000)) ]; do
		alive || break
		sleep 1
		left=$(alg_entries)
	done
	cleanup_s=$(since "$t0")
	jool_nat bib display --tcp --numeric >"$OUT/jool-bib-$1.txt" 2>&1
	jool_nat session display --tcp --numeric >"$OUT/jool-session-$1.txt" 2>&1
	if ! alive; then
		log "ftpalg exited before the expiry $2 was over:"
		tail -n 20 "$OUT/ftpalg.log" | sed 's/^/    /'
		status=1
	elif [ "$left" != 0 ]; then
		log "expiry $2: $left of the daemon's entries still in Jool after ${CLEANUP_WAIT} s:"
		grep -E "$ALG_ENTRY" "$OUT/jool-bib-$1.txt" | head -n 20 | sed 's/^/    /'
		log "their sessions:"
		grep -E '192\.0\.2\.1#61[0-9]{3}' "$OUT/jool-session-$1.txt" | head -n 20 | sed 's/^/    /'
		status=1
	else
		log "expiry $2: the running daemon removed all $start remaining entries in $cleanup_s s"
	fi
}
wait_expiry after-expiry "after the churn"

# --- slow clients on reused entries (SLOW rounds) --------------------------------------
if [ "$SLOW" -gt 0 ]; then
	slow_failed=0
	: >"$OUT/churn-slow.log"
	for round in $(seq "$SLOW"); do
		quick=$(nx c4 "${CHURN[@]}" "$POOL4" pasv 100 --progress 0 2>&1)
		printf '%s\n' "$quick" >>"$OUT/churn-slow.log"
		slow=$(nx c4 "${CHURN[@]}" "$POOL4" pasv 1 --delay 16 --timeout 25 --progress 0 2>&1)
		printf '%s\n' "$slow" >>"$OUT/churn-slow.log"
		for r in "$quick" "$slow"; do
			p=$(printf '%s\n' "$r" | sed -n 's/^churn [a-z0-9]*: \([0-9][0-9]*\) passed.*/\1/p')
			passed=$((passed + ${p:-0}))
		done
		case $slow in *"1 passed, 0 failed"*) ;; *) slow_failed=$((slow_failed + 1)) ;; esac
		log "slow round $round: $(printf '%s' "$quick" | tail -n 1); slow: $(printf '%s' "$slow" | tr '\n' ' ')"
	done
	failed=$((N + SLOW * 101 - passed))
	if [ "$failed" != 0 ]; then
		log "slow rounds: $slow_failed of $SLOW slow transfers failed, $failed transfers in all"
		status=1
	fi
	wait_expiry after-slow "after the slow rounds"
fi

# --- SIGTERM, with fresh entries --------------------------------------------------------
# A last burst so that the daemon holds entries when it stops: Close must
# remove them, not only the expiry.
burst46=$(nx c4 "${CHURN[@]}" "$POOL4" pasv 10 --progress 0 2>&1)
burst64=$(nx c6 "${CHURN[@]}" "$S4_VIA_NAT64" eprt2 10 --progress 0 2>&1)
for r in "$burst46" "$burst64"; do
	p=$(printf '%s\n' "$r" | sed -n 's/^churn [a-z0-9]*: \([0-9][0-9]*\) passed.*/\1/p')
	passed=$((passed + ${p:-0}))
done
failed=$((TOTAL - passed))
[ "$failed" = 0 ] || status=1
held=$(alg_entries)
log "last burst: $(printf '%s' "$burst46" | tail -n 1); $(printf '%s' "$burst64" | tail -n 1); $held entries when ftpalg gets SIGTERM"
# A non-interactive shell starts background jobs with SIGINT ignored.
kill -TERM "$alg_pid" 2>/dev/null
for _ in $(seq 50); do alive || break; sleep 0.2; done
if alive; then
	log "ftpalg still running 10 s after SIGTERM; killing it"
	kill -KILL "$alg_pid" 2>/dev/null
	status=1
fi
wait "$alg_pid" 2>/dev/null
jool_nat bib display --tcp --numeric >"$OUT/jool-bib-after-exit.txt" 2>&1
after_exit=$(grep -cE "$ALG_ENTRY" "$OUT/jool-bib-after-exit.txt")
if [ "$after_exit" != 0 ]; then
	log "after ftpalg exited: $after_exit entries in $ALG_PORTS still in Jool"
	status=1
else
	log "after ftpalg exited: none of its entries in Jool"
fi
if grep -q 'level=WARN\|level=ERROR' "$OUT/ftpalg.log"; then
	log "ftpalg warnings (first 10):"
	grep 'level=WARN\|level=ERROR' "$OUT/ftpalg.log" | head -n 10 | sed 's/^/    /'
fi
grep 'ftpalg stopped' "$OUT/ftpalg.log" | sed 's/^/    /'
finish "$status"
