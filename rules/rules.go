// Package rules builds, installs and removes the nftables rulesets that
// divert FTP control packets of a NAT64 translator (Tayga, Jool) to NFQUEUE,
// where the ftpalg daemon rewrites them.
//
// Only control packets are queued: TCP with source or destination port in
// Config.Ports, on one leg (address family) of the translator, in both
// directions. Data connections stay in the kernel. All rules live in the
// daemon's own table (Config.Table, "ftpalg" by default), so removing them
// never touches anything else. With Config.Helper (Tayga), the same-named
// table of both families also attaches conntrack helpers to new control
// connections, for firewall pinholes (README.md, "Pinholes").
//
// Render prints the ruleset as nft text; Install loads the same ruleset in
// one atomic batch, with the native nft "queue" statement where the kernel
// has nft_queue and the xt NFQUEUE target through the nftables compat layer
// (what "iptables-nft -j NFQUEUE" uses) where it has not. Both use the
// kernel's symmetric address hash to balance over several queues, so both
// directions of a connection land in the same queue.
package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Translator names.
const (
	Tayga = "tayga"
	Jool  = "jool"
)

// Leg names: the address family whose packets are queued.
const (
	LegIPv4 = "ipv4"
	LegIPv6 = "ipv6"
)

// DefaultTable is the name of the daemon's table when Config.Table is empty.
const DefaultTable = "ftpalg"

// Config selects the ruleset. The zero value of every field but Translator
// means its default.
type Config struct {
	Translator string   // "tayga" or "jool"; required
	Leg        string   // "ipv4" (default) or "ipv6"
	Ports      []uint16 // FTP control ports; default {21}
	QueueNum   uint16   // first queue (default 0)
	Queues     uint16   // number of queues (default 1)
	Bypass     bool     // fail-open: accept packets while no daemon listens
	Table      string   // default "ftpalg"

	// Scope is the translator's own addresses, of both families:
	// Tayga's IPv4 pool, IPv4 and IPv6 addresses of its map entries, its
	// own addresses and its prefix; Jool's pool4 addresses and pool6.
	// Every translated packet has one of them as its source or its
	// destination on either leg. The queue and helper rules match only
	// such packets, so plain (untranslated) FTP through the same box,
	// NAT44 for one, stays with the kernel's own FTP helper. Without
	// addresses of the queued leg's family, every FTP control packet of
	// that leg is queued; Helper needs addresses of both families.
	Scope []netip.Prefix

	// Helper attaches conntrack helpers to new control connections in
	// both families, ip and ip6, so that the data connections can be
	// expected and a stateful firewall admits them as "related" (see
	// README.md, "Pinholes"): the kernel's FTP helper on the leg the
	// daemon does not rewrite, an inert carrier (the SANE helper) on the
	// leg it rewrites, where the daemon creates the expectations. Tayga
	// only: Jool-translated packets never reach conntrack confirmation or
	// the forward hook, so helpers have nothing to do there, and a Config
	// asking for them is an error.
	Helper bool

	// Shifted are control connections Install puts in the set of shifted
	// connections (shifted.go; only with Bypass).
	Shifted []Conn
	// ShiftedNow, if set, gives the connections of the set at each
	// install, in place of Shifted: a Keeper that restores the table
	// after an "nft flush ruleset" puts back the connections shifted by
	// then, not those of the daemon's start.
	ShiftedNow func() []Conn

	// EstablishedNow, if set, gives the control connections to put in the
	// set of established connections (established.go) at each install:
	// a Keeper that restores the table after an "nft flush ruleset" puts
	// back the connections the daemon follows, so their packets are queued
	// from the next one on, not from the second next of their client.
	EstablishedNow func() []Conn

	// PeerFilter, if not zero, is the first and last port (inclusive) of
	// the Jool ALG's reserved range (ftpalg run --jool-ports): the ruleset
	// then also has the peer filter, which admits only the control
	// connection's peer through each data-channel mapping the daemon
	// guards (PeerGuard; README.md, "Peer filter"). Jool only.
	PeerFilter [2]uint16

	// NetNS, if not zero, is an open file descriptor of the network
	// namespace that Install and Remove work in; zero means the
	// namespace of the calling thread. Render ignores it.
	NetNS int
}

// ErrConfig is wrapped by every error about an invalid Config.
var ErrConfig = errors.New("invalid rules config")

// Hook priorities, as netfilter numbers them (linux/netfilter_ipv4.h; the
// IPv6 values are the same).
const (
	// prioRaw (NF_IP_PRI_RAW) is after defragmentation (-400) and
	// before conntrack (-200).
	prioRaw = -300
	// prioMangle (NF_IP_PRI_MANGLE) is after conntrack (-200), so a
	// new connection has its conntrack entry and it is not yet confirmed:
	// the only time a helper can be attached to it.
	prioMangle = -150
	// prioAfterNAT orders a postrouting chain after source NAT (100)
	// and after ordinary filter chains (0), so it sees the addresses
	// that go on the wire and never queues a packet a firewall drops.
	prioAfterNAT = 300
)

// family is the nftables table family of a leg.
type family uint8

const (
	familyIP  family = iota // nft "ip"
	familyIP6               // nft "ip6"
)

func (f family) String() string {
	if f == familyIP6 {
		return "ip6"
	}
	return "ip"
}

// hook is a netfilter hook a chain attaches to.
type hook uint8

const (
	hookPrerouting hook = iota
	hookPostrouting
)

func (h hook) String() string {
	if h == hookPostrouting {
		return "postrouting"
	}
	return "prerouting"
}

// chainPlan is one base chain of the ruleset. Its rules are always the
// same: queue TCP packets whose destination port, then whose source port,
// is an FTP control port.
type chainPlan struct {
	name     string
	hook     hook
	priority int32
	why      []string // comment lines for the rendered ruleset
}

// plan is the ruleset a Config stands for. Render prints it and Install
// loads it, so the two cannot disagree.
type plan struct {
	translator string
	leg        string
	table      string
	family     family
	ports      []uint16 // sorted, no duplicates
	queueNum   uint16
	queues     uint16
	bypass     bool
	helper     bool // attach the FTP conntrack helper, in both families
	preload    []Conn
	live       []Conn // preloaded into EstablishedSet
	chains     []chainPlan
	scope4     []netip.Prefix // Config.Scope's IPv4 prefixes, normalised
	scope6     []netip.Prefix // and its IPv6 ones

	peerPorts [2]uint16 // the peer filter's port range (peerfilter.go); zero: none
}

// scopeSet is the name of the set of the translator's addresses, in each
// table that has a scope.
const scopeSet = "translated"

// divertChain is the regular chain that queues FTP control packets; the
// base chains jump to it for packets in the scope.
const divertChain = "divert"

// scopeOf returns the scope of family f: normalised prefixes, none inside
// another, sorted.
func (p *plan) scopeOf(f family) []netip.Prefix {
	if f == familyIP6 {
		return p.scope6
	}
	return p.scope4
}

// normScope masks the prefixes, sorts them, and drops those inside
// another (an interval set refuses overlapping elements).
func normScope(in []netip.Prefix) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(in))
	for _, q := range in {
		ps = append(ps, q.Masked())
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out := ps[:0]
	for _, q := range ps {
		if n := len(out); n > 0 && out[n-1].Overlaps(q) {
			// Sorted by address, then shorter first: the earlier
			// one contains q.
			continue
		}
		out = append(out, q)
	}
	return out
}

// helperChain is the chain that attaches a conntrack helper to new
// control connections.
const helperChain = "helper"

// helperPlan is the conntrack helper of one family's table.
type helperPlan struct {
	obj string // name of the "ct helper" object
	typ string // kernel helper type
	why []string
}

// helperOf returns the helper attached in family f: on the leg the
// daemon rewrites, a carrier that never parses FTP; on the other leg the
// kernel's FTP helper.
//
// The kernel's FTP helper cannot run on the rewritten leg. The daemon
// rewrites there before conntrack, so conntrack sees each peer's commands
// in the other family's words: on the IPv4 leg, a 46 client's PORT
// becomes "EPRT |2|Pref::C4|p|", which nf_conntrack_ftp matches as EPRT,
// fails to parse on an IPv4 connection and drops ("partial matching"),
// again on every retransmission: active transfers would hang. An
// expectation, though, needs a master with a helper (ctnetlink refuses
// expectations, EOPNOTSUPP, for a connection without one, or whose helper
// was detached). The SANE helper (nf_conntrack_sane) is the carrier: it
// looks only at TCP segments of exactly 8 bytes that open with the binary
// code 7, which FTP's text never sends, so it never acts on an FTP control
// connection; the daemon makes every expectation of this leg itself
// (conntrackx.Expecter).
func (p *plan) helperOf(f family) helperPlan {
	if f == p.family {
		return helperPlan{
			obj: "ftpalg", typ: "sane",
			why: []string{
				"The leg the daemon rewrites: the kernel's FTP helper would read commands",
				"already rewritten for the other family here (and drop an \"EPRT |2|\" on",
				"IPv4), so it must not run. A data connection's expectation still needs a",
				"control connection with a helper: the SANE helper carries it and never",
				"acts on FTP's text; the daemon creates this leg's expectations itself.",
				"Priority mangle (-150): after conntrack (-200), before confirmation.",
			},
		}
	}
	return helperPlan{
		obj: "ftp", typ: "ftp",
		why: []string{
			"The other leg carries each side's commands and replies in its own family:",
			"the kernel's FTP helper reads them and expects the data connections.",
			"Priority mangle (-150): after conntrack (-200), before confirmation.",
		},
	}
}

// tableNameOK reports whether s is a table name that needs no quoting in nft
// syntax.
func tableNameOK(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
		case i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return true
}

// tableOf returns the daemon's table name: cfg.Table, or DefaultTable when
// cfg is nil or its Table empty.
func tableOf(cfg *Config) (string, error) {
	if cfg == nil || cfg.Table == "" {
		return DefaultTable, nil
	}
	if !tableNameOK(cfg.Table) {
		return "", fmt.Errorf("%w: table name %q (want a letter or _, then letters, digits, _ - or ., at most 64)", ErrConfig, cfg.Table)
	}
	return cfg.Table, nil
}

// newPlan checks cfg and fills in the defaults. It never changes cfg.
func newPlan(cfg *Config) (*plan, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: no config (translator tayga or jool is required)", ErrConfig)
	}
	p := &plan{
		translator: cfg.Translator,
		leg:        cfg.Leg,
		table:      cfg.Table,
		queueNum:   cfg.QueueNum,
		queues:     cfg.Queues,
		bypass:     cfg.Bypass,
		helper:     cfg.Helper,
		preload:    cfg.Shifted,
	}
	switch p.translator {
	case Tayga, Jool:
	case "":
		return nil, fmt.Errorf("%w: translator is required (tayga or jool)", ErrConfig)
	default:
		return nil, fmt.Errorf("%w: unknown translator %q (want tayga or jool)", ErrConfig, p.translator)
	}
	switch p.leg {
	case "", LegIPv4:
		p.leg, p.family = LegIPv4, familyIP
	case LegIPv6:
		p.family = familyIP6
	default:
		return nil, fmt.Errorf("%w: unknown leg %q (want ipv4 or ipv6)", ErrConfig, p.leg)
	}
	if p.helper && p.translator != Tayga {
		return nil, fmt.Errorf("%w: the conntrack helper is for tayga only (Jool-translated packets bypass conntrack confirmation and the forward hook)", ErrConfig)
	}
	var err error
	if p.table, err = tableOf(cfg); err != nil {
		return nil, err
	}
	if err := p.checkPeerFilter(cfg.PeerFilter); err != nil {
		return nil, err
	}
	if p.queues == 0 {
		p.queues = 1
	}
	if int(p.queueNum)+int(p.queues)-1 > 0xffff {
		return nil, fmt.Errorf("%w: queues %d..%d exceed 65535", ErrConfig, p.queueNum, int(p.queueNum)+int(p.queues)-1)
	}
	p.ports = slices.Clone(cfg.Ports)
	if len(p.ports) == 0 {
		p.ports = []uint16{21}
	}
	slices.Sort(p.ports)
	p.ports = slices.Compact(p.ports)
	if p.ports[0] == 0 {
		return nil, fmt.Errorf("%w: port 0", ErrConfig)
	}
	for _, q := range cfg.Scope {
		switch {
		case !q.IsValid():
			return nil, fmt.Errorf("%w: invalid scope prefix %v", ErrConfig, q)
		case q.Addr().Is4():
			p.scope4 = append(p.scope4, q)
		case q.Addr().Is4In6():
			return nil, fmt.Errorf("%w: scope prefix %v: an IPv4-mapped IPv6 address; write the IPv4 address", ErrConfig, q)
		default:
			p.scope6 = append(p.scope6, q)
		}
	}
	p.scope4, p.scope6 = normScope(p.scope4), normScope(p.scope6)
	if p.helper && (len(p.scope4) == 0 || len(p.scope6) == 0) {
		return nil, fmt.Errorf("%w: the conntrack helper needs the translator's addresses of both families (Scope, --scope): unscoped, it would take plain FTP from the kernel's own FTP helper", ErrConfig)
	}
	p.chains = chainsFor(p.translator, p.family)
	return p, nil
}

// chainsFor decides where the packets of one leg are caught.
func chainsFor(translator string, fam family) []chainPlan {
	this, other := "IPv4", "IPv6"
	if fam == familyIP6 {
		this, other = other, this
	}
	if translator == Tayga {
		// Tayga is a userspace process behind a TUN device: on either
		// leg, both directions are ordinary ingress packets of the
		// router (from the peer's interface, and from the TUN device
		// once Tayga has translated them).
		return []chainPlan{{
			name: "prerouting", hook: hookPrerouting, priority: prioRaw,
			why: []string{
				"Tayga runs in userspace behind a TUN device: both directions of a",
				"connection are ordinary ingress packets here, from the peer's interface",
				"and from the TUN device after translation. Priority raw (-300) runs",
				"before conntrack (-200), so its TCP window tracking sees the sequence",
				"numbers the daemon rewrote.",
			},
		}}
	}
	// Jool is a netfilter hook in prerouting of both families at
	// NF_IP_PRI_NAT_DST + 25 (-75). It steals the packets it translates
	// and sends the result with dst_output(): translated packets enter
	// the other family's postrouting hook directly and never traverse
	// its prerouting, forward or output hooks.
	return []chainPlan{
		{
			name: "prerouting", hook: hookPrerouting, priority: prioRaw,
			why: []string{
				"Packets from the " + this + " peers, before conntrack (-200) and before Jool",
				"(NF_IP_PRI_NAT_DST + 25 = -75), which translates them.",
			},
		},
		{
			name: "postrouting", hook: hookPostrouting, priority: prioAfterNAT,
			why: []string{
				"Packets Jool translated from " + other + ": Jool emits them with dst_output(),",
				"so they enter postrouting directly. Priority 300 is after source NAT",
				"(100) and after filter chains, so the daemon sees the addresses that",
				"go on the wire and never a packet the firewall drops.",
			},
		},
	}
}

// queueText is the nft queue statement of the plan.
func (p *plan) queueText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "queue num %d", p.queueNum)
	if p.queues > 1 {
		fmt.Fprintf(&b, "-%d", int(p.queueNum)+int(p.queues)-1)
	}
	if p.bypass {
		b.WriteString(" bypass")
	}
	return b.String()
}

// portsText is the nft port expression of the plan: "21" or "{ 21, 2121 }".
func (p *plan) portsText() string {
	if len(p.ports) == 1 {
		return fmt.Sprint(p.ports[0])
	}
	s := make([]string, len(p.ports))
	for i, port := range p.ports {
		s[i] = fmt.Sprint(port)
	}
	return "{ " + strings.Join(s, ", ") + " }"
}

// families are the families of the plan's tables: the leg's, and with the
// helper also the other one; with the peer filter also ip.
func (p *plan) families() []family {
	if p.helper || p.peerFilter() && p.family != familyIP {
		return []family{p.family, p.family.other()}
	}
	return []family{p.family}
}

// other is the family whose same-named table Install and Remove also
// delete: a table left by an earlier install on the other leg.
func (f family) other() family {
	if f == familyIP {
		return familyIP6
	}
	return familyIP
}

// ruleCounts is the number of rules of each chain of the plan, by family:
// what an installed ruleset must still have.
func (p *plan) ruleCounts() map[family]map[string]int {
	m := map[family]map[string]int{}
	for _, f := range p.families() {
		chains := map[string]int{}
		scoped := len(p.scopeOf(f)) > 0
		if f == p.family {
			for _, c := range p.chains {
				chains[c.name] = 1
				if scoped {
					chains[c.name] = 2
				}
			}
			chains[divertChain] = len(p.divertRules())
			if p.shifted() {
				chains[divertChain]++
			}
			if p.tracked() {
				chains[trackChain] = len(p.trackRules(scoped))
			}
		}
		if p.helper {
			chains[helperChain] = 2
		}
		if p.peerFilter() && f == familyIP {
			chains[peerChain] = 1
			chains[admitChain] = 3
		}
		m[f] = chains
	}
	return m
}
