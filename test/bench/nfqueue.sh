#!/usr/bin/env bash
# NFQUEUE benchmark: ftpalg's packet loop against a minimal C
# libnetfilter_queue consumer (cfloor.c), the floor. Root; ~1-2 minutes.
#
#   test/bench/nfqueue.sh [ROUNDS]      (default 3 rounds)
#
# Topology, all in network namespaces this script creates and deletes:
#
#   client 192.0.2.2 --- 192.0.2.1 router 198.51.100.1 --- 198.51.100.2 server
#
# The router queues forwarded TCP with port 21 (both directions) to NFQUEUE
# 0 with the xt NFQUEUE target (iptables-nft), where the consumer runs. The
# server answers on port 21 (queued) and 2121 (not queued, the baseline).
# Each round runs every variant in turn (C, ftpalg, C, ftpalg, ...):
#
#   latency  RTT_N one-byte round trips on one connection (TCP_NODELAY); a
#            round trip crosses the queue twice, so the added latency per
#            queued packet is (median RTT - baseline median RTT) / 2
#   pps      FLOOD_SECONDS of FLOOD_CONNS connections writing 64-byte chunks
#            with an MSS of 100 bytes; packets/s is the number of packets
#            the kernel queued (id_sequence of the queue in
#            /proc/net/netfilter/nfnetlink_queue) over the time: TCP paces
#            itself to the consumer
#   cpu      the consumer's utime+stime (/proc/PID/stat) during the flood,
#            per queued packet
#
# ftpalg runs as the real daemon ("ftpalg run --no-rules") with a Tayga
# configuration that does not translate these addresses: every packet goes
# through the queue loop and the engine's flow lookup, none is rewritten.
# Both consumers: queue length 4096, copy range 0xffff, 8 MiB receive
# buffer, no fail-open.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
rounds=${1:-3}
rtt_n=${RTT_N:-3000}
flood_s=${FLOOD_SECONDS:-4}
flood_conns=${FLOOD_CONNS:-4}
p=nfqb$$
me=nfqueue.sh
. "$here/lab.sh"

for dir in --dport --sport; do
	ip netns exec "$p-r" iptables-nft -A FORWARD -p tcp "$dir" 21 -j NFQUEUE --queue-num 0
done

ip netns exec "$p-s" "$out/nfqbench" serve 198.51.100.2:21 198.51.100.2:2121 &
pids+=($!)
sleep 0.3

# queue0 FIELD: a field of queue 0's line in the router's
# /proc/net/netfilter/nfnetlink_queue (3 waiting, 6 queue_dropped,
# 7 user_dropped, 8 id_sequence), 0 when the queue is not bound.
queue0() {
	ip netns exec "$p-r" awk -v f="$1" '$1 == 0 { print $f; found = 1 } END { if (!found) print 0 }' \
		/proc/net/netfilter/nfnetlink_queue
}
bound() { ip netns exec "$p-r" awk '$1 == 0 { ok = 1 } END { exit !ok }' /proc/net/netfilter/nfnetlink_queue; }
cputicks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
now() { date +%s.%N; }

start_consumer() {
	case $1 in
	c) ip netns exec "$p-r" "$out/cfloor" 0 >"$out/cfloor.out" 2>&1 & ;;
	ftpalg) ip netns exec "$p-r" "$out/ftpalg" run --no-rules --fail-open=false --queue-num 0 \
		--tayga-conf "$out/tayga.conf" --status-socket "$out/ftpalg.sock" >"$out/ftpalg.log" 2>&1 & ;;
	esac
	consumer=$!
	pids+=("$consumer")
	for _ in $(seq 100); do
		bound && return 0
		sleep 0.05
	done
	die "$1 did not bind queue 0"
}

stop_consumer() {
	kill -INT "$consumer"
	wait "$consumer" || true
	for _ in $(seq 100); do
		bound || return 0
		sleep 0.05
	done
	die "queue 0 still bound"
}

clk=$(getconf CLK_TCK)
results=$out/results.txt
echo "# round variant rtt_median_us rtt_p90_us rtt_p99_us pps cpu_us_per_pkt queued drops" >"$results"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$rounds"); do
	base=$(ip netns exec "$p-c" "$out/nfqbench" rtt 198.51.100.2:2121 "$rtt_n")
	echo "$r baseline $base - - - -" >>"$results"
	for v in c ftpalg; do
		start_consumer "$v"
		lat=$(ip netns exec "$p-c" "$out/nfqbench" rtt 198.51.100.2:21 "$rtt_n")
		id0=$(queue0 8) d0=$(($(queue0 6) + $(queue0 7))) cpu0=$(cputicks "$consumer") t0=$(now)
		ip netns exec "$p-c" "$out/nfqbench" flood 198.51.100.2:21 "$flood_s" "$flood_conns" 100 >/dev/null
		id1=$(queue0 8) d1=$(($(queue0 6) + $(queue0 7))) cpu1=$(cputicks "$consumer") t1=$(now)
		stop_consumer
		python3 - "$r" "$v" "$lat" "$id0" "$id1" "$cpu0" "$cpu1" "$t0" "$t1" "$clk" "$d0" "$d1" >>"$results" <<-'PY'
			import sys
			r, v, lat, id0, id1, c0, c1, t0, t1, clk, d0, d1 = sys.argv[1:]
			n = int(id1) - int(id0)
			pps = n / (float(t1) - float(t0))
			cpu = (int(c1) - int(c0)) / int(clk) * 1e6 / max(n, 1)
			print(r, v, lat, f"{pps:.0f}", f"{cpu:.2f}", n, int(d1) - int(d0))
		PY
		tail -n 1 "$results" >&2
	done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Summary: per round, ftpalg against C of the same round; then the median
# of the rounds.
python3 "$here/nfqsummary.py" "$results"
echo
echo "raw:"
cat "$results"
