package rules

import (
	"fmt"
	"time"
)

// Only established control connections are queued (Tayga, fail-open).
//
// A SYN carries no FTP text, and neither does the rest of a handshake; a
// segment of no connection conntrack has seen established (a spoofed
// SYN, a garbage segment at a random sequence number) cannot be part of a
// session the daemon translates. Queued, a flood of them costs the daemon
// a trip through the queue per packet and fills the queue, so real
// sessions' packets are dropped (measured with 'make flood': 50k
// packets/s beside six real sessions, one survived). The queue rules run
// at priority raw, before conntrack, so they cannot ask conntrack; a chain
// after conntrack (priority mangle) puts a control connection in the set
// EstablishedSet when a packet of its client is "ct state established" and
// "ct status assured" (conntrack saw the handshake complete, or for a
// connection it picked up in the middle, both sides speak: a spoofed
// source never does that; a garbage segment that happens to hit the
// 4-tuple of a flood connection the server answered is established but
// not assured), and the queue rules queue only packets of the set's
// connections, besides those of ShiftedSet. The first packet queued is
// the server's greeting: the engine meets the connection there as it
// meets one after a restart. The set is refreshed by every packet of the
// client and forgets a connection idle for EstablishedTimeout; the next
// packet of its client puts it back (that packet itself is not queued:
// a translated connection is in ShiftedSet from its greeting on, whose
// rule queues it anyway).
//
// Jool: its packets never get a confirmed conntrack entry (it steals them
// at -75, and the ones it translated enter postrouting without one), so
// "ct state" says nothing there and every control packet is queued.
// Fail-closed (no Bypass): every control packet is queued, as before; the
// set is lost when the table is replaced (a daemon's restart) and the
// first packet of each connection would then pass untranslated.

// EstablishedSet is the name of the set of established control
// connections, client to server, in the daemon's table of the leg's family.
const EstablishedSet = "established"

// trackChain is the chain that fills EstablishedSet.
const trackChain = "track"

// EstablishedTimeout is how long a control connection stays in
// EstablishedSet without a packet from its client.
const EstablishedTimeout = time.Hour

// establishedSize bounds EstablishedSet: 100,000 sessions per queue and
// more. Only real sessions (handshakes conntrack saw completed) take an
// element.
const establishedSize = 262144

// tracked reports whether the plan queues established control connections
// only (EstablishedSet and the chain that fills it).
func (p *plan) tracked() bool { return p.translator == Tayga && p.bypass }

// establishedDecl is the set's declaration, as nft prints it.
func (p *plan) establishedDecl() []string {
	t := p.family.addrType() + "_addr"
	return []string{
		"# Control connections conntrack has seen established, client to server",
		"# (chain " + trackChain + " fills it): only their packets are queued, so a flood",
		"# of spoofed SYNs or garbage segments never reaches the daemon.",
		fmt.Sprintf("set %s {", EstablishedSet),
		fmt.Sprintf("\ttype %s . inet_service . %s . inet_service", t, t),
		fmt.Sprintf("\tsize %d", establishedSize),
		"\tflags dynamic,timeout",
		fmt.Sprintf("\ttimeout %dh", int(EstablishedTimeout/time.Hour)),
		"}",
	}
}

// divertRules are the rules of the divert chain after the shifted one, as
// nft prints them.
func (p *plan) divertRules() []string {
	if !p.tracked() {
		return []string{
			fmt.Sprintf("tcp dport %s counter %s", p.portsText(), p.queueText()),
			fmt.Sprintf("tcp sport %s counter %s", p.portsText(), p.queueText()),
		}
	}
	f := p.family
	return []string{
		fmt.Sprintf("tcp dport %s %s saddr . tcp sport . %s daddr . tcp dport @%s counter %s", p.portsText(), f, f, EstablishedSet, p.queueText()),
		fmt.Sprintf("tcp sport %s %s daddr . tcp dport . %s saddr . tcp sport @%s counter %s", p.portsText(), f, f, EstablishedSet, p.queueText()),
		// What is left of the clients' packets: not queued.
		fmt.Sprintf("tcp dport %s counter", p.portsText()),
	}
}

// trackWhy is the comment of the chain that fills the set.
var trackWhy = []string{
	"A client's packet of a control connection conntrack saw established and",
	"assured (the handshake completed) puts the connection in set " + EstablishedSet,
	"and keeps it there. Priority mangle (-150): after conntrack (-200).",
}

// trackRules are the rules of the track chain, as nft prints them.
func (p *plan) trackRules(scoped bool) []string {
	f := p.family
	r := fmt.Sprintf("tcp dport %s ct state established ct status assured update @%s { %s saddr . tcp sport . %s daddr . tcp dport }", p.portsText(), EstablishedSet, f, f)
	if !scoped {
		return []string{r}
	}
	return []string{
		fmt.Sprintf("%s saddr @%s %s", f, scopeSet, r),
		fmt.Sprintf("%s daddr @%s %s", f, scopeSet, r),
	}
}
