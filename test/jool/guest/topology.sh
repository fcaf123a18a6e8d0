# Sourced by the guest scripts: the lab's topology around a Jool router.
#
#   c4 (IPv4 client) --\          /-- s6 (IPv6 server, 46)
#                       nat (Jool)
#   c6 (IPv6 client) --/          \-- s4 (IPv4 server, 64)
#
# Needs nx, jool_nat and the addresses C4 S6 C6 S4, INSTANCE, POOL6, POOL4
# and ALG_PORTS of the sourcing script.

link() { # link NS ADDR NATIF NATADDR
	ip -n nat link add "$3" type veth peer name eth0 netns "$1"
	ip -n "$1" addr add "$2" dev eth0 nodad 2>/dev/null || ip -n "$1" addr add "$2" dev eth0
	ip -n nat addr add "$4" dev "$3" nodad 2>/dev/null || ip -n nat addr add "$4" dev "$3"
	ip -n "$1" link set eth0 up
	ip -n nat link set "$3" up
}

# build_topology loads Jool and builds the namespaces and their links.
build_topology() {
	modprobe jool || return 1
	local ns
	for ns in nat c4 s6 c6 s4; do
		ip netns add "$ns"
		# Without this the first IPv6 flows stall for the duration of DAD.
		nx "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
		nx "$ns" ip link set lo up
	done
	link c4 "$C4/24" to-c4 198.51.100.1/24
	link s6 "$S6/64" to-s6 2001:db8:6::1/64
	link c6 "$C6/64" to-c6 2001:db8:1::1/64
	link s4 "$S4/24" to-s4 203.0.113.1/24
	ip -n c4 route add default via 198.51.100.1
	ip -n s6 -6 route add default via 2001:db8:6::1
	ip -n c6 -6 route add default via 2001:db8:1::1
	ip -n s4 route add default via 203.0.113.1
	nx nat sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv6.conf.all.forwarding=1
}

# jool_setup adds the instance, its pool4 and the 46 server's static entry.
jool_setup() {
	nx nat jool instance add "$INSTANCE" --netfilter --pool6 "$POOL6" &&
		jool_nat pool4 add "$POOL4" 2000-3000 --tcp &&
		# A static BIB entry's IPv4 address and port must belong to pool4.
		jool_nat pool4 add "$POOL4" 21 --tcp &&
		jool_nat bib add "$S6#21" "$POOL4#21" --tcp &&
		# The ALG's range for the static BIB entries of data channels
		# (ftpalg run --jool-ports): in pool4, as Jool requires, under a
		# mark no packet carries, so Jool's own NAPT never hands it out.
		jool_nat pool4 add "$POOL4" "$ALG_PORTS" --tcp --mark 4242
}
