#!/usr/bin/env bash
# The failover lab: two routers, each with Tayga (the same configuration),
# a default-drop forward firewall and conntrackd, between the clients and
# the servers of test/lab/lab.sh; the router addresses move from A to B by
# a script. Used by TestIntegrationFailover (test/e2e/failover_test.go);
# the ftpalg daemons are started by the test.
#
#   failover.sh up DIR PREFIX       build PREFIX-{c4,c6,s4,s6,ra,rb}, start
#                                   Tayga and conntrackd in ra and rb, write
#                                   DIR/ftproot/data.bin and DIR/data.sha256
#   failover.sh switch DIR PREFIX   A is lost: its links go down; B commits
#                                   conntrackd's external cache to its kernel
#                                   and brings its links up (the same
#                                   addresses and MACs); FAILOVER_NO_COMMIT=1:
#                                   without the commit (a control run)
#   failover.sh down PREFIX         kill every process in them, delete them
#
# Topology: each end namespace holds a bridge (its "LAN switch") with one
# port towards each router; only the active router's links are up.
#
#   c4 192.0.2.2     --+-- ra: 192.0.2.1, 2001:db8:2::1 (c4, c6) --+-- s6 2001:db8:1::10
#   c6 2001:db8:2::2 --|       2001:db8:1::1, 198.51.100.1 (s6, s4)  |-- s4 198.51.100.10
#                      +-- rb: the same, links down until the switch -+
#   ra 10.255.0.1 ---- sync (conntrackd FTFW, ftpalg's state sync) ---- 10.255.0.2 rb
#
#   Tayga in ra and rb: prefix 2001:db8:64::/96, static maps
#   203.0.113.10 <-> 2001:db8:1::10 (the IPv6 server, "46") and
#   192.168.254.2 <-> 2001:db8:2::2 (the IPv6 client, "64": a static map,
#   because the dynamic pool's bindings differ between the routers).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "failover lab: $*" >&2; exit 1; }
nsexec() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

ends=(c4 c6 s4 s6)
routers=(ra rb)

# mac IF: the MAC of the router's interface towards IF, the same on both
# routers, so that the ends' neighbour caches stay right after the switch.
declare -A mac=([c4]=02:00:5e:00:00:c4 [c6]=02:00:5e:00:00:c6 [s4]=02:00:5e:00:00:54 [s6]=02:00:5e:00:00:56)

up() {
	local dir=$1 p=$2 n r
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	for n in "${ends[@]}" "${routers[@]}"; do
		ip netns add "$p-$n"
		nsexec "$p-$n" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
		ip -n "$p-$n" link set lo up
	done
	for n in "${ends[@]}"; do
		ip -n "$p-$n" link add br0 type bridge
		ip -n "$p-$n" link set br0 up
	done
	for r in "${routers[@]}"; do
		nsexec "$p-$r" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
		for n in "${ends[@]}"; do
			ip -n "$p-$r" link add "$n" address "${mac[$n]}" type veth peer name "$r" netns "$p-$n"
			ip -n "$p-$n" link set "$r" master br0 up
		done
		ip -n "$p-$r" addr add 192.0.2.1/24 dev c4
		ip -n "$p-$r" addr add 198.51.100.1/24 dev s4
		ip -n "$p-$r" addr add 2001:db8:1::1/64 dev s6 nodad
		ip -n "$p-$r" addr add 2001:db8:2::1/64 dev c6 nodad
	done
	ip -n "$p-ra" link add sync type veth peer name sync netns "$p-rb"
	ip -n "$p-ra" addr add 10.255.0.1/30 dev sync
	ip -n "$p-rb" addr add 10.255.0.2/30 dev sync
	ip -n "$p-ra" link set sync up
	ip -n "$p-rb" link set sync up

	ip -n "$p-c4" addr add 192.0.2.2/24 dev br0
	ip -n "$p-c4" route add 203.0.113.0/24 via 192.0.2.1
	ip -n "$p-s4" addr add 198.51.100.10/24 dev br0
	ip -n "$p-s4" route add 192.168.254.0/24 via 198.51.100.1
	ip -n "$p-s6" addr add 2001:db8:1::10/64 dev br0 nodad
	ip -n "$p-s6" route add 2001:db8:64::/96 via 2001:db8:1::1
	ip -n "$p-c6" addr add 2001:db8:2::2/64 dev br0 nodad
	ip -n "$p-c6" route add 2001:db8:64::/96 via 2001:db8:2::1

	for r in "${routers[@]}"; do
		mkdir -p "$dir/$r/tayga"
		cat >"$dir/$r/tayga.conf" <<-CONF
			tun-device nat64
			ipv4-addr 192.168.255.1
			ipv6-addr 2001:db8:ffff::1
			prefix 2001:db8:64::/96
			dynamic-pool 192.168.255.0/24
			data-dir $dir/$r/tayga
			map 203.0.113.10 2001:db8:1::10
			map 192.168.254.2 2001:db8:2::2
		CONF
		nsexec "$p-$r" tayga --mktun -c "$dir/$r/tayga.conf" >/dev/null
		ip -n "$p-$r" link set nat64 up
		ip -n "$p-$r" route add 203.0.113.10 dev nat64
		ip -n "$p-$r" route add 192.168.254.0/24 dev nat64
		ip -n "$p-$r" route add 192.168.255.0/24 dev nat64
		ip -n "$p-$r" route add 2001:db8:64::/96 dev nat64
		nsexec "$p-$r" tayga -c "$dir/$r/tayga.conf" -p "$dir/$r/tayga.pid"

		# A default-drop forward policy: new connections only by their
		# SYN to port 21, the rest by conntrack (established, or related
		# through an expectation the ALG made). A router that meets a
		# connection mid-stream without its conntrack entry drops it.
		nsexec "$p-$r" nft -f - <<-NFT
			table inet labfw {
				chain forward {
					type filter hook forward priority filter; policy drop;
					ct state established,related accept
					tcp dport 21 tcp flags & (fin | syn | rst | ack) == syn ct state new accept
				}
			}
		NFT
	done
	conntrackd_conf "$dir" ra 10.255.0.1 10.255.0.2
	conntrackd_conf "$dir" rb 10.255.0.2 10.255.0.1
	for r in "${routers[@]}"; do
		setsid ip netns exec "$p-$r" conntrackd -C "$dir/$r/conntrackd.conf" >"$dir/$r/conntrackd.out" 2>&1 </dev/null &
	done
	for r in "${routers[@]}"; do
		for _ in $(seq 50); do
			[[ -S $dir/$r/conntrackd.ctl ]] && break
			sleep 0.1
		done
		[[ -S $dir/$r/conntrackd.ctl ]] || die "conntrackd in $r did not start: $(cat "$dir/$r/conntrackd.out" "$dir/$r/conntrackd.log" 2>/dev/null)"
	done

	# B is the standby: its links towards the ends are down.
	for n in "${ends[@]}"; do
		ip -n "$p-rb" link set "$n" down
		ip -n "$p-ra" link set "$n" up
	done

	mkdir -p "$dir/ftproot/upload" "$dir/empty"
	chmod 755 "$dir" "$dir/ftproot" "$dir/empty"
	chmod 1777 "$dir/ftproot/upload"
	head -c 1048576 /dev/urandom >"$dir/ftproot/data.bin"
	chmod 644 "$dir/ftproot/data.bin"
	sha256sum "$dir/ftproot/data.bin" | cut -d' ' -f1 >"$dir/data.sha256"
}

# conntrackd_conf DIR R SELF PEER: FTFW over UDP on the sync link; the sync
# link's own traffic is not replicated.
conntrackd_conf() {
	local dir=$1 r=$2 self=$3 peer=$4
	cat >"$dir/$r/conntrackd.conf" <<-CONF
		Sync {
			Mode FTFW {
				DisableExternalCache off
			}
			UDP {
				IPv4_address $self
				IPv4_Destination_Address $peer
				Port 3780
				Interface sync
				Checksum on
			}
		}
		General {
			HashSize 8192
			HashLimit 65535
			LogFile $dir/$r/conntrackd.log
			Syslog off
			LockFile $dir/$r/conntrackd.lock
			UNIX {
				Path $dir/$r/conntrackd.ctl
			}
			NetlinkBufferSize 2097152
			NetlinkBufferSizeMaxGrowth 8388608
			Filter From Userspace {
				Protocol Accept {
					TCP
				}
				Address Ignore {
					IPv4_address 127.0.0.1
					IPv6_address ::1
					IPv4_address 10.255.0.0/30
				}
			}
		}
	CONF
}

switch() {
	local dir=$1 p=$2 n
	dir=$(cd "$dir" && pwd)
	for n in "${ends[@]}"; do
		ip -n "$p-ra" link set "$n" down
	done
	# What keepalived's primary-backup.sh does on becoming primary: commit
	# the external cache (the peer's entries) to the kernel, then resync.
	# FAILOVER_NO_COMMIT=1 leaves it out (a control run).
	if [[ -z ${FAILOVER_NO_COMMIT:-} ]]; then
		nsexec "$p-rb" conntrackd -C "$dir/rb/conntrackd.conf" -c
		nsexec "$p-rb" conntrackd -C "$dir/rb/conntrackd.conf" -f
		nsexec "$p-rb" conntrackd -C "$dir/rb/conntrackd.conf" -R
	fi
	for n in "${ends[@]}"; do
		ip -n "$p-rb" link set "$n" up
	done
}

killpids() {
	(($#)) || return 0
	kill "$@" 2>/dev/null || true
	local pid alive
	for _ in $(seq 20); do
		alive=()
		for pid in "$@"; do
			kill -0 "$pid" 2>/dev/null && alive+=("$pid")
		done
		((${#alive[@]})) || return 0
		sleep 0.1
	done
	kill -9 "${alive[@]}" 2>/dev/null || true
}

down() {
	local p=$1 n pids=()
	for n in "${ends[@]}" "${routers[@]}"; do
		# shellcheck disable=SC2207
		pids+=($(ip netns pids "$p-$n" 2>/dev/null || true))
	done
	for n in "${ends[@]}" "${routers[@]}"; do
		ip netns del "$p-$n" 2>/dev/null || true
	done
	killpids "${pids[@]}"
}

case ${1:-} in
up) [[ $# -eq 3 ]] || die "usage: failover.sh up DIR PREFIX"; up "$2" "$3" ;;
switch) [[ $# -eq 3 ]] || die "usage: failover.sh switch DIR PREFIX"; switch "$2" "$3" ;;
down) [[ $# -eq 2 ]] || die "usage: failover.sh down PREFIX"; down "$2" ;;
*) die "usage: failover.sh up|switch|down ..." ;;
esac
