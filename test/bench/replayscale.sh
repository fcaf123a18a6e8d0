#!/usr/bin/env bash
# The scale capture through `ftpalg replay` (the daemon's engine path, from
# outside): N concurrent 46 control connections through Tayga (IPv4 client,
# IPv6 server), handshake and greeting for all, then PASV and its 229 for
# all, then NOOP and its 200 for all (test/ftpcap/scale.go), written by
# test/bench/scalecap and replayed with
#
#   ftpalg replay --tayga-conf tayga.conf --out out.pcap in.pcap
#
# under /usr/bin/time. scalecap check then verifies every packet of every
# session in the output: valid checksums, the 229 translated to the 227
# naming the server's IPv4 address and the port (P46-1 of docs/PROTOCOL.md),
# PASV sent as EPSV 2, the NOOP and the 200 at the sequence numbers shifted
# by those rewrites, every acknowledgement in the receiver's numbering; the
# spoofed SYNs pass unchanged.
#
# Two runs: CONNS sessions (default 100000), and FLOOD_CONNS sessions
# (20000) with FLOOD_SYNS spoofed SYNs to port 21 (200000) spread among
# their packets. Each must get every session right with a peak RSS of at
# most RSS_LIMIT_KB (default 156250 KiB: 160 MB). ROUNDS repeats both
# (default 1). LOCKSTEP=1 sends each packet of a phase for every session
# before the next (every SYN, then every SYN-ACK, ...). V6=1 writes the
# capture on the translator's IPv6 leg. Prints a line per run; exits 1 if
# any run fails.
#
#   test/bench/replayscale.sh [FTPALG_BINARY]     (default bin/ftpalg)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/local/go/bin"
bin=$(realpath "${1:-bin/ftpalg}")
CONNS=${CONNS:-100000}
FLOOD_CONNS=${FLOOD_CONNS:-20000}
FLOOD_SYNS=${FLOOD_SYNS:-200000}
RSS_LIMIT_KB=${RSS_LIMIT_KB:-156250}
ROUNDS=${ROUNDS:-1}
variant=()
[[ ${LOCKSTEP:-0} == 1 ]] && variant=(-lockstep)
[[ ${V6:-0} == 1 ]] && variant+=(-v6)
if [[ ! -x /usr/bin/time ]]; then
	echo "replayscale: /usr/bin/time missing (Debian package time: test/deps.sh bench)" >&2
	exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/scalecap" ./test/bench/scalecap
"$tmp/scalecap" conf "$tmp/tayga.conf"

echo "# $(date -u '+%F %H:%M UTC'), $("$bin" version 2>/dev/null | head -1), load: $(cut -d' ' -f1-3 /proc/loadavg)"
fail=0
run() { # round conns syns
	local round=$1 conns=$2 syns=$3
	"$tmp/scalecap" gen -conns "$conns" -syns "$syns" "${variant[@]}" "$tmp/in.pcap"
	/usr/bin/time -f '%M %e %U %S' -o "$tmp/time" \
		"$bin" replay --tayga-conf "$tmp/tayga.conf" --out "$tmp/out.pcap" "$tmp/in.pcap" >"$tmp/transcript"
	local rss wall user sys
	read -r rss wall user sys <"$tmp/time"
	local check ok=1
	check=$("$tmp/scalecap" check -conns "$conns" -syns "$syns" "${variant[@]}" "$tmp/out.pcap") || ok=0
	((rss <= RSS_LIMIT_KB)) || ok=0
	((ok)) || fail=1
	printf 'round %d: %d sessions%s, %d spoofed SYNs: peak RSS %d KiB (limit %d), %ss wall, %ss user, %ss sys: %s\n' \
		"$round" "$conns" "${variant[*]:+ (${variant[*]})}" "$syns" "$rss" "$RSS_LIMIT_KB" "$wall" "$user" "$sys" "$([[ $ok == 1 ]] && echo pass || echo FAIL)"
	echo "  check: $check"
	echo "  replay: $(tail -1 "$tmp/transcript")"
	rm -f "$tmp/in.pcap" "$tmp/out.pcap"
}
for ((r = 1; r <= ROUNDS; r++)); do
	run "$r" "$CONNS" 0
	run "$r" "$FLOOD_CONNS" "$FLOOD_SYNS"
done
exit $fail
