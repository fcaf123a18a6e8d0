#!/usr/bin/env bash
# Side by side, in one run: packets/s through a router for TCP port 21 with
#
#   none       no queue, no helper: the forwarding path alone
#   helper     the kernel's FTP conntrack helper (CT --helper ftp), no queue
#   c1, c2     the C libnetfilter_queue floor (cfloor.c) on 1 and 2 queues
#   ftpalg1/2  ftpalg run on 1 and 2 queues (--queues 2), pass-through
#   rewrite1/2 ftpalg run on 1 and 2 queues, every command rewritten
#   helperport the kernel's FTP helper on the same PORT commands
#   cap-c1/2, cap-ftpalg1/2
#              capacity: the C floor and ftpalg (pass-through) on 1 and 2
#              queues under an open-loop flood of BLAST_PPS segments a
#              second (default 300000) from eight addresses over BLAST_FLOWS
#              flows (default 1024, warm after the first round; 0: a new
#              flow for nearly every packet); packets/s is
#              what left the router (a counting rule in POSTROUTING), the
#              rest the kernel dropped at the full queue (drops)
#
# Root; about 2 minutes with 3 rounds. Same topology and consumers'
# settings as nfqueue.sh (queue length 4096, copy range 0xffff, 8 MiB
# receive buffer, no fail-open):
#
#   client 192.0.2.2 --- 192.0.2.1 router 198.51.100.1 --- server 198.51.100.2, .3
#
#   test/bench/sidebyside.sh [ROUNDS]    (default 3; FLOOD_SECONDS=4, FLOOD_CONNS=8)
#
# The plain flood (none, helper, c*, ftpalg*) is FLOOD_CONNS connections to
# 198.51.100.2:21 writing 64-byte chunks with an MSS of 100. The PORT flood
# (rewrite*, helperport) is FLOOD_CONNS control connections to an FTP-like
# server on 198.51.100.3:21 sending "PORT 192,0,2,2,7,208", each answered
# "200" (8 at most awaiting their reply per connection); ftpalg's Tayga
# configuration maps 198.51.100.3 to an IPv6 server, so it takes these as
# 46 sessions and rewrites every PORT into EPRT |2|...| (its counters are
# read from its status socket). packets/s counts both directions, from
# counting rules ahead of the queue rules; the connections come from eight
# client addresses, round robin, as the kernel balances queues by a hash of
# the addresses (per_queue: the packets each queue saw since it was bound,
# the daemon's queues live across the run's variants only while it runs).
# CPU is the consumers' own
# utime+stime per packet (none for the kernel variants: theirs is softirq
# time, not attributable on a shared machine).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
rounds=${1:-3}
flood_s=${FLOOD_SECONDS:-4}
flood_conns=${FLOOD_CONNS:-8}
variants=${VARIANTS:-none helper c1 ftpalg1 c2 ftpalg2 rewrite1 rewrite2 helperport cap-c1 cap-ftpalg1 cap-c2 cap-ftpalg2}
blast_pps=${BLAST_PPS:-300000}
p=sbs$$
me=sidebyside.sh
. "$here/lab.sh"

# Eight client addresses: queues are balanced by a hash of the addresses.
srcs=192.0.2.2
for i in 3 4 5 6 7 8 9; do
	ip -n "$p-c" addr add "192.0.2.$i/24" dev eth0
	srcs+=",192.0.2.$i"
done
export NFQBENCH_SRC=$srcs
ip -n "$p-s" addr add 198.51.100.3/24 dev eth0
ipt() { ip netns exec "$p-r" iptables-nft "$@"; }
# Counting rules (no target), ahead of everything a variant adds.
for dir in --dport --sport; do
	ipt -A FORWARD -p tcp "$dir" 21 -m comment --comment sbscount
	ipt -t mangle -A POSTROUTING -p tcp "$dir" 21 -m comment --comment sbsout
done

ip netns exec "$p-s" "$out/nfqbench" serve 198.51.100.2:21 ftp=198.51.100.3:21 &
pids+=($!)
sleep 0.3

counted() { ipt -L FORWARD -v -x -n | awk '/sbscount/ { s += $1 } END { print s + 0 }'; }
forwarded() { ipt -t mangle -L POSTROUTING -v -x -n | awk '/sbsout/ { s += $1 } END { print s + 0 }'; }
# split: the packets each bound queue has seen so far (id_sequence).
split() { ip netns exec "$p-r" awk '{ printf "%s%s", (NR > 1 ? "/" : ""), $8 } END { if (!NR) printf "-" }' /proc/net/netfilter/nfnetlink_queue; }
# drops: queue_dropped + user_dropped of every bound queue.
drops() { ip netns exec "$p-r" awk '{ s += $6 + $7 } END { print s + 0 }' /proc/net/netfilter/nfnetlink_queue; }
bound() { ip netns exec "$p-r" awk -v n="$1" '{ c++ } END { exit !(c >= n) }' /proc/net/netfilter/nfnetlink_queue; }
unbound() { ip netns exec "$p-r" awk '{ c++ } END { exit !(c == 0) }' /proc/net/netfilter/nfnetlink_queue; }
cputicks() {
	local s=0 pid
	for pid in "$@"; do s=$((s + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
	echo "$s"
}
now() { date +%s.%N; }

consumers=()
setup() { # VARIANT: rules and consumers
	local v=${1#cap-} nq=1 target
	[[ $v == *2 ]] && nq=2
	consumers=()
	case $v in
	none) return 0 ;;
	helper*)
		ipt -t raw -A PREROUTING -p tcp --dport 21 -j CT --helper ftp
		return 0
		;;
	esac
	target=(--queue-num 0)
	[[ $nq == 2 ]] && target=(--queue-balance 0:1)
	for dir in --dport --sport; do
		ipt -A FORWARD -p tcp "$dir" 21 -j NFQUEUE "${target[@]}"
	done
	case $v in
	c*)
		for q in $(seq 0 $((nq - 1))); do
			ip netns exec "$p-r" "$out/cfloor" "$q" >"$out/cfloor$q.out" 2>&1 &
			consumers+=($!)
			pids+=($!)
		done
		;;
	ftpalg* | rewrite*)
		ip netns exec "$p-r" "$out/ftpalg" run --no-rules --no-pinholes --fail-open=false --queue-num 0 \
			--queues "$nq" --tayga-conf "$out/tayga.conf" --status-socket "$out/ftpalg.sock" \
			--log-level warn >"$out/ftpalg.log" 2>&1 &
		consumers+=($!)
		pids+=($!)
		;;
	esac
	for _ in $(seq 100); do
		bound "$nq" && return 0
		sleep 0.05
	done
	die "$v did not bind its queues"
}

teardown() { # VARIANT
	local pid
	case ${1#cap-} in
	none) ;;
	helper*) ipt -t raw -F PREROUTING ;;
	*)
		for pid in "${consumers[@]}"; do kill -INT "$pid"; done
		for pid in "${consumers[@]}"; do wait "$pid" || true; done
		for _ in $(seq 100); do
			unbound && break
			sleep 0.05
		done
		unbound || die "queues still bound after $1"
		ipt -F FORWARD
		for dir in --dport --sport; do
			ipt -A FORWARD -p tcp "$dir" 21 -m comment --comment sbscount
		done
		;;
	esac
}

# rewrites: the daemon's rewritten lines so far (0 without a daemon).
rewrites() {
	[[ -S $out/ftpalg.sock ]] || { echo 0; return; }
	"$out/ftpalg" status --socket "$out/ftpalg.sock" --json |
		python3 -c 'import json,sys; print(sum(q["engine"]["Rewrites"] for q in json.load(sys.stdin)["queues"]))'
}

clk=$(getconf CLK_TCK)
results=$out/results.txt
echo "# round variant pps cpu_us_per_pkt packets drops commands rewrites per_queue" >"$results"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$rounds"); do
	for v in $variants; do
		setup "$v"
		n0=$(counted) d0=$(drops) t0=$(now) w0=$(rewrites)
		[[ $v == cap-* ]] && n0=$(forwarded)
		cpu0=0
		[[ ${#consumers[@]} -gt 0 ]] && cpu0=$(cputicks "${consumers[@]}")
		case $v in
		cap-*) NFQBENCH_FLOWS=${BLAST_FLOWS:-1024} ip netns exec "$p-c" "$out/nfqbench" blast 198.51.100.2:21 "$flood_s" "$blast_pps" >/dev/null; cmds=- ;;
		rewrite* | helperport) cmds=$(ip netns exec "$p-c" "$out/nfqbench" ftpflood 198.51.100.3:21 "$flood_s" "$flood_conns" 100) ;;
		*) ip netns exec "$p-c" "$out/nfqbench" flood 198.51.100.2:21 "$flood_s" "$flood_conns" 100 >/dev/null; cmds=- ;;
		esac
		n1=$(counted) d1=$(drops) t1=$(now) w1=$(rewrites) q1=$(split)
		[[ $v == cap-* ]] && n1=$(forwarded)
		cpu1=0
		[[ ${#consumers[@]} -gt 0 ]] && cpu1=$(cputicks "${consumers[@]}")
		teardown "$v"
		python3 - "$r" "$v" "$n0" "$n1" "$t0" "$t1" "$cpu0" "$cpu1" "$clk" "$d0" "$d1" "$cmds" "$w0" "$w1" "${#consumers[@]}" "$q1" >>"$results" <<-'PY'
			import sys
			r, v, n0, n1, t0, t1, c0, c1, clk, d0, d1, cmds, w0, w1, ncons, q1 = sys.argv[1:]
			n = int(n1) - int(n0)
			pps = n / (float(t1) - float(t0))
			cpu = f"{(int(c1) - int(c0)) / int(clk) * 1e6 / max(n, 1):.2f}" if int(ncons) else "-"
			print(r, v, f"{pps:.0f}", cpu, n, int(d1) - int(d0), cmds, int(w1) - int(w0), q1)
		PY
		tail -n 1 "$results" >&2
	done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" <<-'PY'
	import statistics as st, sys
	rows = [l.split() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
	vs = list(dict.fromkeys(r[1] for r in rows))
	print("| variant | packets/s median (min-max) | CPU us/pkt median | commands answered (median) | rewrites (median) | kernel drops |")
	print("|---|---|---|---|---|---|")
	for v in vs:
	    rs = [r for r in rows if r[1] == v]
	    pps = [float(r[2]) for r in rs]
	    cpu = [float(r[3]) for r in rs if r[3] != "-"]
	    cmds = [int(r[6]) for r in rs if r[6] != "-"]
	    rw = [int(r[7]) for r in rs]
	    print(f"| {v} | {st.median(pps):.0f} ({min(pps):.0f}-{max(pps):.0f}) | "
	          f"{st.median(cpu):.2f} | " if cpu else f"| {v} | {st.median(pps):.0f} ({min(pps):.0f}-{max(pps):.0f}) | - | ", end="")
	    print(f"{st.median(cmds):.0f} | " if cmds else "- | ", end="")
	    print(f"{st.median(rw):.0f} | {sum(int(r[5]) for r in rs)} |")
PY
echo
echo "raw:"
cat "$results"
