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

// originMapOf is the map of the origin chain in table t (the ip6 table).
func originMapOf(t *nftables.Table) *nftables.Set {
	a := nftables.TypeIP6Addr
	return &nftables.Set{Table: t, Name: originMap, IsMap: true, Concatenation: true, HasTimeout: true,
		KeyType: nftables.MustConcatSetType(a, a), DataType: nftables.TypeMark}
}

// addOrigin queues the map and the chain of the origin in table t (the ip6
// table), in the order Render prints them.
func (p *plan) addOrigin(conn *nftables.Conn, t *nftables.Table) {
	if !p.origin() {
		return
	}
	m := originMapOf(t)
	_ = conn.AddSet(m, nil) // fails only for anonymous sets
	accept := nftables.ChainPolicyAccept
	c := conn.AddChain(&nftables.Chain{
		Name:     originChain,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prioOrigin)),
		Policy:   &accept,
	})
	// tcp flags & syn == syn meta mark set ip6 saddr . ip6 daddr map @origin46
	// (as nft builds it: 128-bit registers 1 and 2 hold the key).
	conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
		&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}})
}

// OriginMarker fills the origin map for the daemon: it implements the Jool
// mapper's conntrackx/jool.OriginMarker. The chain must be installed
// (Install with Config.PeerFilter, or 'ftpalg rules install --jool-ports').
// It is safe for concurrent use.
type OriginMarker struct {
	mu   sync.Mutex
	conn *nftables.Conn
	m    *nftables.Set
	// live mirrors the elements and their expiry, so that Restore can put
	// them back into a table the Keeper reinstalled empty.
	live map[originKey]originMark
}

type originKey struct{ server, client netip.Addr }

type originMark struct {
	mark  uint32
	until time.Time
}

// ErrNoOrigin is returned by OpenOriginMarker when the daemon's table has
// no origin map.
var ErrNoOrigin = errors.New("no origin map in the table (install the rules with the jool port range)")

// OpenOriginMarker returns a marker over the origin map of the daemon's ip6
// table (only Table and NetNS of cfg matter).
func OpenOriginMarker(cfg *Config) (*OriginMarker, error) {
	table, err := tableOf(cfg)
	if err != nil {
		return nil, err
	}
	conn, err := dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("origin marker: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv6, Name: table}
	m, err := conn.GetSetByName(t, originMap)
	if err != nil {
		return nil, fmt.Errorf("origin marker: map %s in table ip6 %s: %w: %w", originMap, table, ErrNoOrigin, err)
	}
	return &OriginMarker{conn: conn, m: m, live: map[originKey]originMark{}}, nil
}

func originElem(server, client netip.Addr) []byte {
	s, c := server.As16(), client.As16()
	return append(s[:], c[:]...)
}

// Mark sets mark on the SYNs from server to client (IPv6 addresses) for
// ttl. Marking the same pair again restarts its ttl, with this mark.
//
// The mark is stored in host byte order, as the kernel's "meta mark set"
// takes it; "nft list" of a table the daemon installed shows it byte-swapped
// on little-endian machines (46000 as 0xb0b30000), since the nftables
// library writes no byte order annotation for the map's data.
func (o *OriginMarker) Mark(server, client netip.Addr, mark uint32, ttl time.Duration) error {
	if !server.Is6() || server.Is4In6() || !client.Is6() || client.Is4In6() {
		return fmt.Errorf("origin marker: %v to %v: IPv6 only", server, client)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	k := originElem(server, client)
	v := binaryutil.NativeEndian.PutUint32(mark)
	// An element that exists is deleted and added again: a plain add
	// keeps its timeout, and fails (EEXIST) when its mark differs. One the
	// daemon does not know of (it expired, or a flush took it) is added.
	elem := []nftables.SetElement{{Key: k, Val: v, Timeout: ttl}}
	replace := func() error {
		if err := o.conn.SetDeleteElements(o.m, []nftables.SetElement{{Key: k}}); err != nil {
			return err
		}
		if err := o.conn.SetAddElements(o.m, elem); err != nil {
			return err
		}
		return o.conn.Flush()
	}
	add := func() error {
		if err := o.conn.SetAddElements(o.m, elem); err != nil {
			return err
		}
		return o.conn.Flush()
	}
	first, second := add, replace
	if e, ok := o.live[originKey{server, client}]; ok && e.until.After(time.Now()) {
		first, second = replace, add
	}
	err := first()
	if err != nil {
		err = second()
	}
	if err != nil {
		return fmt.Errorf("origin marker: mark %v to %v with %d: %w", server, client, mark, err)
	}
	now := time.Now()
	for key, e := range o.live {
		if !e.until.After(now) {
			delete(o.live, key)
		}
	}
	o.live[originKey{server, client}] = originMark{mark: mark, until: now.Add(ttl)}
	return nil
}

// Restore puts the elements that have not expired back into the map,
// after the table was reinstalled (rules.Keeper).
func (o *OriginMarker) Restore() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	var elems []nftables.SetElement
	for key, e := range o.live {
		ttl := e.until.Sub(now)
		if ttl <= 0 {
			delete(o.live, key)
			continue
		}
		elems = append(elems, nftables.SetElement{Key: originElem(key.server, key.client), Val: binaryutil.NativeEndian.PutUint32(e.mark), Timeout: ttl})
	}
	if len(elems) == 0 {
		return nil
	}
	err := o.conn.SetAddElements(o.m, elems)
	if err == nil {
		err = o.conn.Flush()
	}
	if err != nil {
		return fmt.Errorf("origin marker: restore %d elements: %w", len(elems), err)
	}
	return nil
}

// Marked returns the number of elements in the map (for status and tests).
func (o *OriginMarker) Marked() (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	elems, err := o.conn.GetSetElements(o.m)
	return len(elems), err
}
