#!/usr/bin/env bash
# The ftpalg test lab: network namespaces around a Tayga NAT64, with real FTP
# servers. Used by the end-to-end tests (test/e2e) and the demo (test/demo.sh).
#
#   lab.sh up DIR PREFIX          build the namespaces PREFIX-{c4,c6,nat,s4,s6},
#                                 start Tayga in PREFIX-nat, write DIR/tayga.conf,
#                                 DIR/ftproot/data.bin (1 MiB random) and its
#                                 sha256 in DIR/data.sha256
#   lab.sh down PREFIX            kill every process in the namespaces, delete them
#   lab.sh server NAME DIR PREFIX start server NAME (vsftpd, proftpd, pure-ftpd)
#                                 in PREFIX-s6 (IPv6 only) and PREFIX-s4 (IPv4 only)
#   lab.sh stop-servers PREFIX    kill every process in PREFIX-s6 and PREFIX-s4
#
# Topology (all addresses are documentation ranges, plus Tayga's pool):
#
#   c4 192.0.2.2 ---- 192.0.2.1 nat 2001:db8:1::1 ---- 2001:db8:1::10 s6
#   c6 2001:db8:2::2 - 2001:db8:2::1 nat 198.51.100.1 - 198.51.100.10 s4
#
#   Tayga in nat: prefix 2001:db8:64::/96, dynamic pool 192.168.255.0/24,
#   static map 203.0.113.10 <-> 2001:db8:1::10. So the IPv4 client reaches the
#   IPv6 server at 203.0.113.10 ("46"), the IPv6 client reaches the IPv4 server
#   at 2001:db8:64::198.51.100.10 ("64"), seen there from 192.168.255.x.
#
# Nothing leaves the namespaces: none of them has a default route or a link
# to the host.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export PATH="$PATH:/usr/sbin:/sbin"

# The FTP servers that conflict with vsftpd as packages are unpacked here by
# test/deps.sh.
pkgdir=${FTPALG_PKG_DIR:-$here/../.cache/pkg}

die() { echo "lab: $*" >&2; exit 1; }

nsexec() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

up() {
	local dir=$1 p=$2
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	for n in c4 c6 nat s4 s6; do
		ip netns add "$p-$n"
		# accept_dad=0 before any veth exists, or the first flows stall ~2 s.
		nsexec "$p-$n" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
		ip -n "$p-$n" link set lo up
	done
	nsexec "$p-nat" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

	# One veth pair per side; the nat end is named after the peer namespace.
	local n
	for n in c4 c6 s4 s6; do
		ip -n "$p-nat" link add "$n" type veth peer name eth0 netns "$p-$n"
		ip -n "$p-nat" link set "$n" up
		ip -n "$p-$n" link set eth0 up
	done
	ip -n "$p-nat" addr add 192.0.2.1/24 dev c4
	ip -n "$p-c4" addr add 192.0.2.2/24 dev eth0
	ip -n "$p-c4" route add 203.0.113.0/24 via 192.0.2.1

	ip -n "$p-nat" addr add 198.51.100.1/24 dev s4
	ip -n "$p-s4" addr add 198.51.100.10/24 dev eth0
	ip -n "$p-s4" route add 192.168.255.0/24 via 198.51.100.1

	ip -n "$p-nat" addr add 2001:db8:1::1/64 dev s6 nodad
	ip -n "$p-s6" addr add 2001:db8:1::10/64 dev eth0 nodad
	ip -n "$p-s6" route add 2001:db8:64::/96 via 2001:db8:1::1

	ip -n "$p-nat" addr add 2001:db8:2::1/64 dev c6 nodad
	ip -n "$p-c6" addr add 2001:db8:2::2/64 dev eth0 nodad
	ip -n "$p-c6" route add 2001:db8:64::/96 via 2001:db8:2::1

	mkdir -p "$dir/tayga"
	cat >"$dir/tayga.conf" <<-CONF
		tun-device nat64
		ipv4-addr 192.168.255.1
		ipv6-addr 2001:db8:ffff::1
		prefix 2001:db8:64::/96
		dynamic-pool 192.168.255.0/24
		data-dir $dir/tayga
		map 203.0.113.10 2001:db8:1::10
	CONF
	nsexec "$p-nat" tayga --mktun -c "$dir/tayga.conf" >/dev/null
	ip -n "$p-nat" link set nat64 up
	ip -n "$p-nat" route add 203.0.113.10 dev nat64
	ip -n "$p-nat" route add 192.168.255.0/24 dev nat64
	ip -n "$p-nat" route add 2001:db8:64::/96 dev nat64
	nsexec "$p-nat" tayga -c "$dir/tayga.conf" -p "$dir/tayga.pid"

	# The served tree: the root belongs to root (vsftpd refuses a writable
	# anonymous root); uploads go to upload/, writable by the servers' user.
	mkdir -p "$dir/ftproot/upload" "$dir/empty"
	chmod 755 "$dir" "$dir/ftproot" "$dir/empty"
	chmod 1777 "$dir/ftproot/upload"
	head -c 1048576 /dev/urandom >"$dir/ftproot/data.bin"
	chmod 644 "$dir/ftproot/data.bin"
	sha256sum "$dir/ftproot/data.bin" | cut -d' ' -f1 >"$dir/data.sha256"
}

# killpids PID...: SIGTERM, then SIGKILL after 2 s for those still alive.
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

# killns NS: ends every process inside namespace NS (all started by the lab).
killns() {
	# shellcheck disable=SC2046
	killpids $(ip netns pids "$1" 2>/dev/null || true)
}

# down: the processes of all namespaces are listed first, the namespaces'
# names removed, then the processes ended, so that the names are gone even
# if ending a process takes long.
down() {
	local p=$1 n pids=()
	for n in c4 c6 nat s4 s6; do
		# shellcheck disable=SC2207
		pids+=($(ip netns pids "$p-$n" 2>/dev/null || true))
	done
	for n in c4 c6 nat s4 s6; do
		ip netns del "$p-$n" 2>/dev/null || true
	done
	killpids "${pids[@]}"
}

# waitport NS ADDR: waits up to 5 s for a listener on ADDR port 21.
waitport() {
	local ns=$1 addr=$2
	for _ in $(seq 50); do
		if nsexec "$ns" ss -Hltn "sport = :21" | grep -q .; then
			return 0
		fi
		sleep 0.1
	done
	die "no FTP server listening in $ns on $addr port 21"
}

# start NS LOG CMD...: runs CMD in NS in the background, detached.
start() {
	local ns=$1 log=$2
	shift 2
	setsid ip netns exec "$ns" "$@" >"$log" 2>&1 </dev/null &
}

server_vsftpd() {
	local dir=$1 ns=$2 fam=$3 addr=$4
	local conf=$dir/vsftpd-$fam.conf
	{
		if [[ $fam == 6 ]]; then
			echo "listen=NO"
			echo "listen_ipv6=YES"
			echo "listen_address6=$addr"
		else
			echo "listen=YES"
			echo "listen_address=$addr"
		fi
		sed -e "s|@ROOT@|$dir/ftproot|g" -e "s|@EMPTY@|$dir/empty|g" \
			-e "s|@LOG@|$dir/vsftpd-$fam.log|g" "$here/vsftpd.conf"
	} >"$conf"
	start "$ns" "$dir/vsftpd-$fam.out" vsftpd "$conf"
}

server_proftpd() {
	local dir=$1 ns=$2 fam=$3 addr=$4
	local conf=$dir/proftpd-$fam.conf ipv6=on
	[[ $fam == 4 ]] && ipv6=off
	sed -e "s|@ROOT@|$dir/ftproot|g" -e "s|@DIR@|$dir|g" -e "s|@FAM@|$fam|g" \
		-e "s|@ADDR@|$addr|g" -e "s|@IPV6@|$ipv6|g" "$here/proftpd.conf" >"$conf"
	start "$ns" "$dir/proftpd-$fam.out" "$pkgdir/proftpd-core/usr/sbin/proftpd" -n -q -c "$conf"
}

server_pure_ftpd() {
	local dir=$1 ns=$2 fam=$3 addr=$4
	# pure-ftpd's anonymous root is the system user ftp's home: use a
	# virtual user of its own (PureDB) instead, user "ftptest" password
	# "ftptest", mapped to nobody and chrooted to the served tree.
	# The hash is SHA-512 crypt of "ftptest": pure-pw's own default (argon2id,
	# deliberately slow) takes seconds per login on a busy machine.
	if [[ ! -f $dir/pureftpd.pdb ]]; then
		# shellcheck disable=SC2016 # the $ of the hash are literal
		printf '%s\n' 'ftptest:$6$ftpalglab$RRes8Bh3jfCCNRzWfFZrUz0aXn.A78Zvc0qT24oqPvNUSOEI8Jn1TtgCrKkbweuV/SBC2eDbgl/EvAtICHebp1:65534:65534::'"$dir/ftproot"'/./::::::::::::' >"$dir/pureftpd.passwd"
		"$pkgdir/pure-ftpd/usr/bin/pure-pw" mkdb "$dir/pureftpd.pdb" -f "$dir/pureftpd.passwd" >/dev/null
	fi
	local only=--ipv4only
	[[ $fam == 6 ]] && only=--ipv6only
	start "$ns" "$dir/pure-ftpd-$fam.out" "$pkgdir/pure-ftpd/usr/sbin/pure-ftpd" \
		"$only" --bind "$addr,21" --login "puredb:$dir/pureftpd.pdb" \
		--noanonymous --dontresolve --syslogfacility none --verboselog \
		--maxclientsnumber 50 --maxclientsperip 50 --pidfile "$dir/pure-ftpd-$fam.pid"
}

server() {
	local name=$1 dir=$2 p=$3
	dir=$(cd "$dir" && pwd)
	case $name in
	vsftpd) server_vsftpd "$dir" "$p-s6" 6 2001:db8:1::10 && server_vsftpd "$dir" "$p-s4" 4 198.51.100.10 ;;
	proftpd) server_proftpd "$dir" "$p-s6" 6 2001:db8:1::10 && server_proftpd "$dir" "$p-s4" 4 198.51.100.10 ;;
	pure-ftpd) server_pure_ftpd "$dir" "$p-s6" 6 2001:db8:1::10 && server_pure_ftpd "$dir" "$p-s4" 4 198.51.100.10 ;;
	*) die "unknown server $name" ;;
	esac
	waitport "$p-s6" 2001:db8:1::10
	waitport "$p-s4" 198.51.100.10
}

case ${1:-} in
up) [[ $# -eq 3 ]] || die "usage: lab.sh up DIR PREFIX"; up "$2" "$3" ;;
down) [[ $# -eq 2 ]] || die "usage: lab.sh down PREFIX"; down "$2" ;;
server) [[ $# -eq 4 ]] || die "usage: lab.sh server NAME DIR PREFIX"; server "$2" "$3" "$4" ;;
stop-servers) [[ $# -eq 2 ]] || die "usage: lab.sh stop-servers PREFIX"; killns "$2-s4"; killns "$2-s6" ;;
*) die "usage: lab.sh up|down|server|stop-servers ..." ;;
esac
