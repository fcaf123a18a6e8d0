//go:build linux

package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nft_dynset operations (linux/netfilter/nf_tables.h, enum nft_dynset_ops).
const (
	dynsetOpAdd    = 0
	dynsetOpDelete = 2
)

// Registers of a concatenation: the first field in NFT_REG_1, the next in
// the 32-bit registers that follow it (NFT_REG32_01 = 9, ...), as nft
// loads "ip saddr . ip daddr . tcp dport . tcp sport".
const (
	regConcat0 = 1
	regConcat1 = 9
	regConcat2 = 10
	regConcat3 = 11
)

// peerSets are the three sets of the peer filter in table t.
func peerSets(t *nftables.Table) (maps, peers, conns *nftables.Set) {
	addr, port := nftables.TypeIPAddr, nftables.TypeInetService
	maps = &nftables.Set{Table: t, Name: mapsSet, Concatenation: true,
		KeyType: nftables.MustConcatSetType(addr, port)}
	peers = &nftables.Set{Table: t, Name: peersSet, Concatenation: true, Dynamic: true, HasTimeout: true, Size: 65535,
		KeyType: nftables.MustConcatSetType(addr, addr, port)}
	conns = &nftables.Set{Table: t, Name: connsSet, Concatenation: true, Dynamic: true, HasTimeout: true, Size: 65535,
		Timeout: ConnTimeout, KeyType: nftables.MustConcatSetType(addr, addr, port, port)}
	return maps, peers, conns
}

// addPeerFilter queues the sets and chains of the peer filter in table t
// (the ip table), in the order Render prints them.
func (p *plan) addPeerFilter(conn *nftables.Conn, t *nftables.Table) {
	if !p.peerFilter() {
		return
	}
	maps, peers, conns := peerSets(t)
	for _, s := range []*nftables.Set{maps, peers, conns} {
		_ = conn.AddSet(s, nil) // fails only for anonymous sets
	}
	accept := nftables.ChainPolicyAccept
	base := conn.AddChain(&nftables.Chain{
		Name:     peerChain,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prioPeerFilter)),
		Policy:   &accept,
	})
	admit := conn.AddChain(&nftables.Chain{Name: admitChain, Table: t})

	// tcp dport LO-HI tcp flags & syn == syn ip daddr . tcp dport @maps counter jump peeradmit
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
	lo, hi := p.peerPorts[0], p.peerPorts[1]
	if lo == hi {
		e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(lo)})
	} else {
		e = append(e,
			&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: binaryutil.BigEndian.PutUint16(lo)},
			&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: binaryutil.BigEndian.PutUint16(hi)})
	}
	e = append(e,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Payload{DestRegister: regConcat0, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Payload{DestRegister: regConcat1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: regConcat0, SetName: maps.Name, SetID: maps.ID},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: admitChain},
	)
	conn.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: e})

	tcp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
	// load "ip saddr . ip daddr . tcp dport [. tcp sport]"
	load := func(withSport bool) []expr.Any {
		l := []expr.Any{
			&expr.Payload{DestRegister: regConcat0, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Payload{DestRegister: regConcat1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Payload{DestRegister: regConcat2, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		}
		if withSport {
			l = append(l, &expr.Payload{DestRegister: regConcat3, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2})
		}
		return l
	}
	acceptV := &expr.Verdict{Kind: expr.VerdictAccept}
	// ip saddr . ip daddr . tcp dport . tcp sport @conns accept
	r1 := append(append(append([]expr.Any{}, tcp...), load(true)...),
		&expr.Lookup{SourceRegister: regConcat0, SetName: conns.Name, SetID: conns.ID}, acceptV)
	// ip saddr . ip daddr . tcp dport @peers delete @peers {...} add @conns {...} accept
	r2 := append(append([]expr.Any{}, tcp...), load(false)...)
	r2 = append(r2, &expr.Lookup{SourceRegister: regConcat0, SetName: peers.Name, SetID: peers.ID})
	r2 = append(r2, load(false)...)
	r2 = append(r2, &expr.Dynset{SrcRegKey: regConcat0, SetName: peers.Name, SetID: peers.ID, Operation: dynsetOpDelete})
	r2 = append(r2, load(true)...)
	r2 = append(r2, &expr.Dynset{SrcRegKey: regConcat0, SetName: conns.Name, SetID: conns.ID, Operation: dynsetOpAdd}, acceptV)
	r3 := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
	for _, r := range [][]expr.Any{r1, r2, r3} {
		conn.AddRule(&nftables.Rule{Table: t, Chain: admit, Exprs: r})
	}
}

// PeerGuard fills the peer filter's sets for the daemon: it implements the
// Jool mapper's guard (conntrackx.PeerGuard). The filter must be installed
// (Install with Config.PeerFilter, or 'ftpalg rules install --jool-ports').
// It is safe for concurrent use.
type PeerGuard struct {
	mu                 sync.Mutex
	conn               *nftables.Conn
	maps, peers, conns *nftables.Set
	// live mirrors the guarded mappings and their admissions, so that
	// Restore can put them back into a table an operator's "nft flush
	// ruleset" removed and the Keeper reinstalled empty: an empty set of
	// mappings would let every SYN through them.
	live map[netip.AddrPort]admission
}

// admission is a guarded mapping's admitted peer, until when.
type admission struct {
	peer  netip.Addr
	until time.Time
}

// ErrNoPeerFilter is returned by OpenPeerGuard when the daemon's table has
// no peer filter.
var ErrNoPeerFilter = errors.New("no peer filter in the table (install the rules with the jool port range)")

// OpenPeerGuard returns a guard over the peer filter of the daemon's table
// (only Table and NetNS of cfg matter).
func OpenPeerGuard(cfg *Config) (*PeerGuard, error) {
	table, err := tableOf(cfg)
	if err != nil {
		return nil, err
	}
	conn, err := dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("peer guard: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: table}
	g := &PeerGuard{conn: conn, live: map[netip.AddrPort]admission{}}
	for _, s := range []struct {
		name string
		set  **nftables.Set
	}{{mapsSet, &g.maps}, {peersSet, &g.peers}, {connsSet, &g.conns}} {
		set, err := conn.GetSetByName(t, s.name)
		if err != nil {
			return nil, fmt.Errorf("peer guard: set %s in table ip %s: %w: %w", s.name, table, ErrNoPeerFilter, err)
		}
		*s.set = set
	}
	return g, nil
}

// key4 appends an IPv4 address or a port as a field of a concatenated set
// key: each field takes a whole 32-bit register.
func key4(b []byte, a netip.Addr) []byte { s := a.As4(); return append(b, s[:]...) }
func keyPort(b []byte, p uint16) []byte  { return append(b, byte(p>>8), byte(p), 0, 0) }

// Admit lets peer open one TCP connection to mapped within ttl, and
// guards mapped until Release. Admitting a peer again restarts its ttl.
func (g *PeerGuard) Admit(peer netip.Addr, mapped netip.AddrPort, ttl time.Duration) error {
	if !peer.Is4() || !mapped.Addr().Is4() {
		return fmt.Errorf("peer guard: admit %v through %v: IPv4 only", peer, mapped)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	m := keyPort(key4(nil, mapped.Addr()), mapped.Port())
	pk := append(key4(nil, peer), m...)
	// Add, delete and add again: the element exists afterwards with a
	// fresh timeout whether it existed or not (a plain add of an existing
	// element keeps the old timeout; a delete of a missing one fails).
	err := errors.Join(
		g.conn.SetAddElements(g.maps, []nftables.SetElement{{Key: m}}),
		g.conn.SetAddElements(g.peers, []nftables.SetElement{{Key: pk, Timeout: ttl}}),
		g.conn.SetDeleteElements(g.peers, []nftables.SetElement{{Key: pk}}),
		g.conn.SetAddElements(g.peers, []nftables.SetElement{{Key: pk, Timeout: ttl}}),
	)
	if err == nil {
		err = g.conn.Flush()
	}
	if err != nil {
		return fmt.Errorf("peer guard: admit %v through %v: %w", peer, mapped, err)
	}
	g.live[mapped] = admission{peer: peer, until: time.Now().Add(ttl)}
	return nil
}

// Restore puts the guarded mappings and their admissions that have not
// expired back into the filter's sets, after the table was reinstalled
// (rules.Keeper). An admission the peer already used is not restored:
// its data connection is up, and its later segments carry no SYN.
func (g *PeerGuard) Restore() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	var maps, peers []nftables.SetElement
	for mapped, a := range g.live {
		m := keyPort(key4(nil, mapped.Addr()), mapped.Port())
		maps = append(maps, nftables.SetElement{Key: m})
		if ttl := a.until.Sub(now); ttl > 0 {
			peers = append(peers, nftables.SetElement{Key: append(key4(nil, a.peer), m...), Timeout: ttl})
		}
	}
	if len(maps) == 0 {
		return nil
	}
	err := g.conn.SetAddElements(g.maps, maps)
	if err == nil && len(peers) > 0 {
		err = g.conn.SetAddElements(g.peers, peers)
	}
	if err == nil {
		err = g.conn.Flush()
	}
	if err != nil {
		return fmt.Errorf("peer guard: restore %d mappings: %w", len(maps), err)
	}
	return nil
}

// Release ends the guard of the mapped addresses: no SYN to them is
// checked any more (the caller removed the mappings first), and the
// admissions and admitted connections through them are deleted, so that a
// later mapping on the same port starts clean. One call for many
// addresses costs one batch and one listing of each set.
func (g *PeerGuard) Release(mapped ...netip.AddrPort) error {
	if len(mapped) == 0 {
		return nil
	}
	keys := make(map[string]bool, len(mapped))
	var elems []nftables.SetElement
	for _, a := range mapped {
		if !a.Addr().Is4() {
			return fmt.Errorf("peer guard: release %v: IPv4 only", a)
		}
		m := keyPort(key4(nil, a.Addr()), a.Port())
		keys[string(m)] = true
		elems = append(elems, nftables.SetElement{Key: m})
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, mp := range mapped {
		delete(g.live, mp)
	}
	err := errors.Join(
		g.conn.SetAddElements(g.maps, elems),
		g.conn.SetDeleteElements(g.maps, elems),
	)
	if err == nil {
		err = g.conn.Flush()
	}
	if err != nil {
		return fmt.Errorf("peer guard: release %v: %w", mapped, err)
	}
	// Elements may time out between the listing and the deletion, which
	// fails the batch: list again, a few times at most.
	for range 3 {
		if err = g.deleteThrough(keys); err == nil {
			return nil
		}
	}
	return fmt.Errorf("peer guard: release %v: %w", mapped, err)
}

// deleteThrough deletes the elements of peers and conns whose mapping
// fields (bytes 4-11 of the key) are one of keys.
func (g *PeerGuard) deleteThrough(keys map[string]bool) error {
	n := 0
	for _, s := range []*nftables.Set{g.peers, g.conns} {
		elems, err := g.conn.GetSetElements(s)
		if err != nil {
			return err
		}
		var del []nftables.SetElement
		for _, e := range elems {
			if len(e.Key) >= 12 && keys[string(e.Key[4:12])] {
				del = append(del, nftables.SetElement{Key: e.Key})
			}
		}
		if len(del) > 0 {
			if err := g.conn.SetDeleteElements(s, del); err != nil {
				return err
			}
			n += len(del)
		}
	}
	if n == 0 {
		return nil
	}
	return g.conn.Flush()
}

// GuardedCount returns how many mappings the filter guards, admissions it
// holds and connections it admitted (for status and tests).
func (g *PeerGuard) GuardedCount() (maps, peers, conns int, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var counts [3]int
	for i, s := range []*nftables.Set{g.maps, g.peers, g.conns} {
		elems, err := g.conn.GetSetElements(s)
		if err != nil {
			return 0, 0, 0, err
		}
		counts[i] = len(elems)
	}
	return counts[0], counts[1], counts[2], nil
}
