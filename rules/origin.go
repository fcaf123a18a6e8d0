package rules

import (
	"fmt"
	"strings"
)

// The origin of 46 active data connections (Jool; README.md, "Origin of
// 46 active data connections").
//
// In 46 active mode the IPv6 server opens the data connection, and Jool
// masks a connection an IPv6 host opens with the pool4 entries of the
// packet's mark: with the operator's pool4 alone, not necessarily with the
// address S4 the IPv4 client dialled, and clients that check the origin of
// the data connection refuse it. The Jool mapper adds a pool4 entry of S4
// alone under a mark of its own (conntrackx/jool, OriginMarker) and puts
// "server . client : mark" (the IPv6 addresses of a 46 session) in the map
// originMap of the daemon's ip6 table, with a timeout; the chain
// originChain sets that mark on the server's SYNs to the client before
// Jool's hook (-75), so Jool masks those connections with S4.
const (
	originChain = "origin"
	originMap   = "origin46"

	// prioOrigin is after conntrack (-200), destination NAT (-100) and
	// mangle chains that set marks (-150), so the mark of a data
	// connection is the one left, and before Jool (-75).
	prioOrigin = -80
)

// origin reports whether the plan has the origin chain: Jool with the
// ALG's reserved range (the mapper's pool4 entries use it).
func (p *plan) origin() bool { return p.peerFilter() }

// renderOriginMap writes the map of the origin chain (the ip6 table only).
func (p *plan) renderOriginMap(b *strings.Builder) {
	b.WriteString(`	# Origin of 46 active data connections (see the chain below): an IPv6
	# server . its IPv4 client's address in pool6, and the mark of the
	# daemon's pool4 entry that holds the control connection's pool4
	# address alone; the daemon adds an element per 46 control connection
	# and refreshes it at each data channel (the timeout).
	map ` + originMap + ` {
		type ipv6_addr . ipv6_addr : mark
		flags timeout
	}
`)
}

// renderOriginChain writes the origin chain (the ip6 table only); first
// says whether it is the table's first chain.
func (p *plan) renderOriginChain(b *strings.Builder, first bool) {
	if !first {
		b.WriteString("\n")
	}
	fmt.Fprintf(b, `	# A 46 active data connection leaves Jool from the address the IPv4
	# client dialled: the server's SYN to the client gets the mark of the
	# daemon's pool4 entry of that address, and Jool masks a new connection
	# from IPv6 with the pool4 entries of the packet's mark. Priority -80:
	# after conntrack (-200), DNAT (-100) and mangle (-150), before Jool
	# (-75).
	chain %[1]s {
		type filter hook prerouting priority %[2]d; policy accept;
		tcp flags & syn == syn meta mark set ip6 saddr . ip6 daddr map @%[3]s
	}
`, originChain, prioOrigin, originMap)
}
