# Shared by the queue benchmarks (nfqueue.sh, sidebyside.sh): sourced, not
# run. Defines die/cleanup, checks the tools, builds the C floor, ftpalg and
# nfqbench into $out, and builds the three namespaces
#
#   client 192.0.2.2 --- 192.0.2.1 router 198.51.100.1 --- 198.51.100.2 server
#
# named "$p-c", "$p-r", "$p-s". The caller sets p (a prefix with its pid),
# me (its name, for messages) and here (its directory) before sourcing, and
# adds addresses, rules and servers afterwards. The Tayga configuration maps
# only 198.51.100.3, which the queue benchmarks use for rewriting variants:
# the pass-through variants' addresses are not translated.

repo=$(cd "$here/../.." && pwd)
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
out=$(mktemp -d)
pids=()

die() { echo "$me: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root"
for t in gcc go ip iptables-nft python3; do
	command -v "$t" >/dev/null || die "needs $t (test/deps.sh bench installs the Debian packages)"
done
[[ -f /usr/include/libnetfilter_queue/libnetfilter_queue.h ]] || die "needs libnetfilter-queue-dev"

cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for n in c r s; do ip netns del "$p-$n" 2>/dev/null || true; done
	rm -rf "$out"
}
trap cleanup EXIT

gcc -O2 -Wall -o "$out/cfloor" "$here/cfloor.c" -lnetfilter_queue -lnfnetlink
(cd "$repo" && go build -o "$out/ftpalg" ./cmd/ftpalg && go build -o "$out/nfqbench" ./test/bench/nfqbench)
printf 'tun-device nat64\nipv4-addr 192.168.255.1\nprefix 2001:db8:64::/96\nmap 198.51.100.3 2001:db8:1::3\n' >"$out/tayga.conf"

for n in c r s; do
	ip netns add "$p-$n"
	ip -n "$p-$n" link set lo up
done
ip netns exec "$p-r" sysctl -qw net.ipv4.ip_forward=1
ip -n "$p-r" link add c type veth peer name eth0 netns "$p-c"
ip -n "$p-r" link add s type veth peer name eth0 netns "$p-s"
for l in "r c" "r s" "c eth0" "s eth0"; do
	set -- $l
	ip -n "$p-$1" link set "$2" up
done
ip -n "$p-r" addr add 192.0.2.1/24 dev c
ip -n "$p-r" addr add 198.51.100.1/24 dev s
ip -n "$p-c" addr add 192.0.2.2/24 dev eth0
ip -n "$p-s" addr add 198.51.100.2/24 dev eth0
ip -n "$p-c" route add 198.51.100.0/24 via 192.0.2.1
ip -n "$p-s" route add 192.0.2.0/24 via 198.51.100.1
