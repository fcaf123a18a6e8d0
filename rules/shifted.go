package rules

import (
	"fmt"
	"net/netip"
)

// Fail-closed per connection (docs/STATE.md).
//
// With Bypass, the kernel accepts queued packets unchanged while no daemon
// listens: right for a control connection the daemon never resized, fatal
// for one whose sequence numbers it shifted. The daemon puts such a
// connection in the set ShiftedSet (both directions) before it sends the
// first packet that depends on the shift, and a rule ahead of the others
// queues the set's packets without bypass: while no daemon runs they are
// dropped and TCP resends them until a daemon is back, while all other
// connections pass. Without Bypass every packet is queued fail-closed and
// neither the set nor the rule is needed.

// ShiftedSet is the name of the set of shifted control connections, in the
// daemon's table of the leg's family.
const ShiftedSet = "shifted"

// Conn is a control connection on the queued leg, client to server.
type Conn struct {
	Client, Server netip.AddrPort
}

// shifted reports whether the plan has the set and its rule.
func (p *plan) shifted() bool { return p.bypass }

// shiftedText is the set's declaration and rule, as nft prints them.
func (p *plan) shiftedDecl() []string {
	t := "ipv4_addr"
	if p.family == familyIP6 {
		t = "ipv6_addr"
	}
	return []string{
		"# Control connections whose sequence numbers the daemon shifted: their",
		"# packets are queued without bypass (dropped, and resent by TCP, while",
		"# no daemon runs); the daemon fills the set.",
		fmt.Sprintf("set %s {", ShiftedSet),
		fmt.Sprintf("\ttype %s . inet_service . %s . inet_service", t, t),
		"}",
	}
}

func (p *plan) shiftedRule() string {
	q := *p
	q.bypass = false
	return fmt.Sprintf("%s saddr . tcp sport . %s daddr . tcp dport @%s counter %s",
		p.family, p.family, ShiftedSet, q.queueText())
}
