package rules

import (
	"fmt"
	"strings"
	"time"
)

// The peer filter: nobody but the control connection's peer through a
// data-channel mapping of the Jool ALG (README.md, "Peer filter").
//
// A static BIB entry in Jool is endpoint-independent: any IPv4 host can
// open a connection through it. RFC 6384 section 7.2 wants the mapping to
// admit the FTP peer only, and once the data connection is up, that
// connection only. The daemon guards each mapping it creates (46 passive:
// the IPv4 client's address; 64 active: the IPv4 server's) with elements
// of three sets in its own table, checked by a prerouting chain that runs
// after conntrack and DNAT and before Jool's hook (-75):
//
//   - mapsSet: the IPv4 transport addresses of the ALG's live mappings
//     ("ip daddr . tcp dport"). Only TCP segments with SYN set to one of
//     them are checked: a SYN is the only segment from which Jool creates
//     a session (RFC 6146 section 3.5.2.2), so the established data
//     connection's packets never touch a set.
//   - peersSet: "peer . mapping" pairs the daemon admits, with a timeout
//     (an unused mapping's lifetime). The peer's first SYN consumes its
//     element (a dynset delete in the packet path) ...
//   - connsSet: ... and adds "peer . mapping . peer's port" instead: its
//     retransmitted SYNs pass, a second connection does not.
//
// Every other SYN to a mapping is dropped. A drop in this table is final:
// an accept in an operator's table on the same hook only passes the
// packet on to the next chain, this one included (netfilter calls every
// base chain of a hook in priority order until one drops the packet).
const (
	peerChain  = "peerfilter"
	admitChain = "peeradmit"
	mapsSet    = "datamaps"
	peersSet   = "datapeers"
	connsSet   = "dataconns"

	// prioPeerFilter is after conntrack (-200) and destination NAT
	// (-100), so it sees the addresses Jool sees, and before Jool
	// (NF_IP_PRI_NAT_DST + 25 = -75).
	prioPeerFilter = -80

	// ConnTimeout is how long an admitted data connection's SYN
	// retransmissions pass (Linux retries a SYN for about 2 minutes).
	ConnTimeout = 2 * time.Minute
)

// peerFilter reports whether the plan has the peer filter.
func (p *plan) peerFilter() bool { return p.peerPorts != [2]uint16{} }

// checkPeerFilter validates Config.PeerFilter into p.
func (p *plan) checkPeerFilter(ports [2]uint16) error {
	if ports == [2]uint16{} {
		return nil
	}
	if p.translator != Jool {
		return fmt.Errorf("%w: the peer filter is for jool only (tayga's pinholes are conntrack expectations)", ErrConfig)
	}
	if ports[0] == 0 || ports[0] > ports[1] {
		return fmt.Errorf("%w: peer filter port range %d-%d", ErrConfig, ports[0], ports[1])
	}
	p.peerPorts = ports
	return nil
}

func (p *plan) peerPortsText() string {
	if p.peerPorts[0] == p.peerPorts[1] {
		return fmt.Sprint(p.peerPorts[0])
	}
	return fmt.Sprintf("%d-%d", p.peerPorts[0], p.peerPorts[1])
}

// renderPeerSets writes the sets of the peer filter into the table of
// family f (the ip table only).
func (p *plan) renderPeerSets(b *strings.Builder, f family) {
	if !p.peerFilter() || f != familyIP {
		return
	}
	b.WriteString(`	# Peer filter (see the chain below). The IPv4 transport addresses of
	# the ALG's data-channel mappings (Jool static BIB entries):
	set ` + mapsSet + ` {
		type ipv4_addr . inet_service
	}

	# peer . mapping: who may open the one data connection, until the
	# element's timeout (an unused mapping's lifetime):
	set ` + peersSet + ` {
		type ipv4_addr . ipv4_addr . inet_service
		size 65535
		flags dynamic,timeout
	}

	# peer . mapping . peer's port: the data connection the peer opened.
	set ` + connsSet + ` {
		type ipv4_addr . ipv4_addr . inet_service . inet_service
		size 65535
		flags dynamic,timeout
		timeout ` + fmt.Sprintf("%dm", int(ConnTimeout/time.Minute)) + `
	}

`)
}

// renderPeerChains writes the chains of the peer filter into the table of
// family f (the ip table only); first says whether they are the table's
// first chains.
func (p *plan) renderPeerChains(b *strings.Builder, f family, first bool) {
	if !p.peerFilter() || f != familyIP {
		return
	}
	if !first {
		b.WriteString("\n")
	}
	fmt.Fprintf(b, `	# Nobody but the control connection's peer through a data-channel
	# mapping (RFC 6384 section 7.2): a SYN to one of the ALG's mappings
	# (ports %[1]s) goes to %[2]s; other packets, and those of
	# established connections, pass untouched (Jool creates sessions only
	# from SYNs). Priority -80: after conntrack (-200) and DNAT (-100),
	# before Jool (-75). A drop here is final whatever other tables accept.
	chain %[3]s {
		type filter hook prerouting priority %[4]d; policy accept;
		tcp dport %[1]s tcp flags & syn == syn ip daddr . tcp dport @%[5]s counter jump %[2]s
	}

	# The admitted connection's SYNs pass; the admitted peer's first SYN
	# turns its admission into that connection; anything else is dropped.
	chain %[2]s {
		ip saddr . ip daddr . tcp dport . tcp sport @%[6]s accept
		ip saddr . ip daddr . tcp dport @%[7]s delete @%[7]s { ip saddr . ip daddr . tcp dport } add @%[6]s { ip saddr . ip daddr . tcp dport . tcp sport } accept
		counter drop
	}
`, p.peerPortsText(), admitChain, peerChain, prioPeerFilter, mapsSet, connsSet, peersSet)
}
