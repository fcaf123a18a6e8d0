//go:build linux

package rules

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// shiftedSetOf describes the set in table t (not yet created).
func (p *plan) shiftedSetOf(t *nftables.Table) *nftables.Set {
	a := nftables.TypeIPAddr
	if p.family == familyIP6 {
		a = nftables.TypeIP6Addr
	}
	return &nftables.Set{
		Table: t, Name: ShiftedSet, Concatenation: true,
		KeyType: nftables.MustConcatSetType(a, nftables.TypeInetService, a, nftables.TypeInetService),
	}
}

// addShiftedSet queues the creation of the set in t, with the
// connections of p.preload (both directions); nil when the plan has none.
func (p *plan) addShiftedSet(conn *nftables.Conn, t *nftables.Table) *nftables.Set {
	if !p.shifted() {
		return nil
	}
	set := p.shiftedSetOf(t)
	var elems []nftables.SetElement
	for _, c := range p.preload {
		elems = append(elems, shiftedElems(c)...)
	}
	// AddSet fails only for anonymous sets that are not constant.
	_ = conn.AddSet(set, elems)
	return set
}

// shiftedKey is the set key of a packet from a to b: the fields of a
// concatenation each take a multiple of 4 bytes.
func shiftedKey(src, dst [2][]byte) []byte {
	var k []byte
	for _, e := range src {
		k = append(k, e...)
		k = append(k, make([]byte, (4-len(e)%4)%4)...)
	}
	for _, e := range dst {
		k = append(k, e...)
		k = append(k, make([]byte, (4-len(e)%4)%4)...)
	}
	return k
}

func shiftedElems(c Conn) []nftables.SetElement {
	ep := func(a interface {
		AsSlice() []byte
	}, port uint16) [2][]byte {
		return [2][]byte{a.AsSlice(), {byte(port >> 8), byte(port)}}
	}
	cl := ep(c.Client.Addr().Unmap(), c.Client.Port())
	sv := ep(c.Server.Addr().Unmap(), c.Server.Port())
	return []nftables.SetElement{{Key: shiftedKey(cl, sv)}, {Key: shiftedKey(sv, cl)}}
}

// shiftedExprs builds "ip saddr . tcp sport . ip daddr . tcp dport @shifted
// counter queue num N" (never bypass).
func (p *plan) shiftedExprs(set *nftables.Set, native bool) []expr.Any {
	alen, saddr, daddr := uint32(4), uint32(12), uint32(16)
	if p.family == familyIP6 {
		alen, saddr, daddr = 16, 8, 24
	}
	r := uint32(8) // NFT_REG32_00
	sport := r + alen/4
	dst := sport + 1
	dport := dst + alen/4
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: r, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: alen},
		&expr.Payload{DestRegister: sport, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Payload{DestRegister: dst, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: alen},
		&expr.Payload{DestRegister: dport, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: r, SetName: set.Name, SetID: set.ID},
		&expr.Counter{},
	}
	q := *p
	q.bypass = false
	if native {
		return append(e, &expr.Queue{Num: p.queueNum, Total: p.queues})
	}
	return append(e, &expr.Target{Name: "NFQUEUE", Rev: 3, Info: q.xtInfo()})
}

// Shifted adds control connections to, and removes them from, the set of
// shifted connections of an installed ruleset.
type Shifted struct {
	conn *nftables.Conn
	set  *nftables.Set
}

// OpenShifted connects to the set of the ruleset cfg describes. With a cfg
// whose plan has no set (no Bypass) it returns nil and no error: a nil
// *Shifted does nothing.
func OpenShifted(cfg *Config) (*Shifted, error) {
	p, err := newPlan(cfg)
	if err != nil {
		return nil, err
	}
	if !p.shifted() {
		return nil, nil
	}
	var opts []nftables.ConnOption
	if cfg.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(cfg.NetNS))
	}
	conn, err := nftables.New(append(opts, nftables.AsLasting())...)
	if err != nil {
		return nil, fmt.Errorf("shifted set: %w", err)
	}
	fam := nftables.TableFamilyIPv4
	if p.family == familyIP6 {
		fam = nftables.TableFamilyIPv6
	}
	return &Shifted{conn: conn, set: p.shiftedSetOf(&nftables.Table{Family: fam, Name: p.table})}, nil
}

// Add puts the connection in the set (both directions) and returns when
// the kernel has it.
func (s *Shifted) Add(c Conn) error {
	if s == nil {
		return nil
	}
	if err := s.conn.SetAddElements(s.set, shiftedElems(c)); err != nil {
		return err
	}
	return s.conn.Flush()
}

// Delete removes the connection from the set; an absent element is not an
// error.
func (s *Shifted) Delete(c Conn) error {
	if s == nil {
		return nil
	}
	// Add first, so the deletion never fails on an absent element (the
	// same idiom as deleteTables).
	el := shiftedElems(c)
	if err := s.conn.SetAddElements(s.set, el); err != nil {
		return err
	}
	if err := s.conn.SetDeleteElements(s.set, el); err != nil {
		return err
	}
	return s.conn.Flush()
}

// Close closes the netlink connection.
func (s *Shifted) Close() error {
	if s == nil {
		return nil
	}
	return s.conn.CloseLasting()
}
