//go:build linux

package rules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// Install loads the ruleset of cfg in one atomic batch. It replaces an
// earlier version of the daemon's table, and removes a table of the same
// name left on the other leg; nothing else is touched. It uses the native
// nft queue statement when the kernel has nft_queue (see NativeQueue) and
// the xt NFQUEUE target through the nftables compat layer otherwise.
func Install(cfg *Config) error {
	p, err := newPlan(cfg)
	if err != nil {
		return err
	}
	conn, err := dial(cfg)
	if err != nil {
		return fmt.Errorf("install rules: %w", err)
	}
	return p.install(conn)
}

func (p *plan) install(conn *nftables.Conn) error {
	native, err := nativeQueue(conn)
	if err != nil {
		return fmt.Errorf("install rules: %w", err)
	}
	deleteTables(conn, p.table)
	p.add(conn, native)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("install rules in table %s %s: %w", p.family, p.table, err)
	}
	return nil
}

// Remove deletes the daemon's table (Config.Table) in both families, ip and
// ip6, in one batch. A table that does not exist is not an error. Only
// Table and NetNS of cfg matter; cfg may be nil.
func Remove(cfg *Config) error {
	table, err := tableOf(cfg)
	if err != nil {
		return err
	}
	conn, err := dial(cfg)
	if err != nil {
		return fmt.Errorf("remove rules: %w", err)
	}
	deleteTables(conn, table)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("remove rules (table %s): %w", table, err)
	}
	return nil
}

// NativeQueue reports whether the kernel has nft_queue, that is whether a
// rule with the native nft "queue" statement can be loaded. Without it,
// Install falls back to the xt NFQUEUE target. It probes by loading such a
// rule in a scratch table and deleting the table again, in one batch, so
// nothing is left behind either way.
func NativeQueue() (bool, error) {
	conn, err := nftables.New()
	if err != nil {
		return false, err
	}
	return nativeQueue(conn)
}

func dial(cfg *Config) (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if cfg != nil && cfg.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(cfg.NetNS))
	}
	return nftables.New(opts...)
}

func nativeQueue(conn *nftables.Conn) (bool, error) {
	// CreateTable fails rather than reuse a table that happens to exist,
	// so the probe can never delete anything but its own table.
	t := conn.CreateTable(&nftables.Table{
		Family: nftables.TableFamilyIPv4,
		Name:   fmt.Sprintf("ftpalg_probe_%d", os.Getpid()),
	})
	c := conn.AddChain(&nftables.Chain{Name: "probe", Table: t})
	conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: []expr.Any{
		&expr.Queue{Num: 0, Total: 1, Flag: expr.QueueFlagBypass},
	}})
	conn.DelTable(t)
	err := conn.Flush()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP):
		// The kernel knows no expression named "queue".
		return false, nil
	}
	return false, fmt.Errorf("probe for nft_queue: %w", err)
}

// deleteTables queues the deletion of the table name in both families. Each
// deletion is preceded by an add, which creates the table if it is missing,
// so the batch never fails on an absent table (the "nft -f" idiom
// "table ip t; delete table ip t").
func deleteTables(conn *nftables.Conn, name string) {
	for _, f := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		t := &nftables.Table{Family: f, Name: name}
		conn.AddTable(t)
		conn.DelTable(t)
	}
}

// add queues the tables, objects, sets, chains and rules of p, in the
// order Render prints them (nft lists chains in the order they were
// made; every chain is made before the rules that jump to it).
func (p *plan) add(conn *nftables.Conn, native bool) {
	accept := nftables.ChainPolicyAccept
	for _, f := range p.families() {
		fam := nftables.TableFamilyIPv4
		if f == familyIP6 {
			fam = nftables.TableFamilyIPv6
		}
		t := conn.AddTable(&nftables.Table{Family: fam, Name: p.table})
		h := p.helperOf(f)
		if p.helper {
			l3 := uint16(unix.NFPROTO_IPV4)
			if f == familyIP6 {
				l3 = unix.NFPROTO_IPV6
			}
			conn.AddObj(&nftables.NamedObj{
				Table: t, Name: h.obj, Type: nftables.ObjTypeCtHelper,
				Obj: &expr.CtHelper{Name: h.typ, L3Proto: l3, L4Proto: unix.IPPROTO_TCP},
			})
		}
		var set *nftables.Set
		if scope := p.scopeOf(f); len(scope) > 0 && (f == p.family || p.helper) {
			set = addScopeSet(conn, t, f, scope)
		}
		var base []*nftables.Chain
		var divert, track, helper *nftables.Chain
		var shifted, established *nftables.Set
		if f == p.family {
			shifted = p.addShiftedSet(conn, t)
			if p.tracked() {
				established = p.establishedSetOf(t)
				var elems []nftables.SetElement
				for _, c := range p.live {
					elems = append(elems, shiftedElems(c)[0]) // client to server
				}
				// AddSet fails only for anonymous sets that are not constant.
				_ = conn.AddSet(established, elems)
			}
			for _, cp := range p.chains {
				hk := nftables.ChainHookPrerouting
				if cp.hook == hookPostrouting {
					hk = nftables.ChainHookPostrouting
				}
				base = append(base, conn.AddChain(&nftables.Chain{
					Name:     cp.name,
					Table:    t,
					Type:     nftables.ChainTypeFilter,
					Hooknum:  hk,
					Priority: nftables.ChainPriorityRef(nftables.ChainPriority(cp.priority)),
					Policy:   &accept,
				}))
			}
			divert = conn.AddChain(&nftables.Chain{Name: divertChain, Table: t})
			if established != nil {
				track = conn.AddChain(&nftables.Chain{
					Name:     trackChain,
					Table:    t,
					Type:     nftables.ChainTypeFilter,
					Hooknum:  nftables.ChainHookPrerouting,
					Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prioMangle)),
					Policy:   &accept,
				})
			}
		}
		if p.helper {
			helper = conn.AddChain(&nftables.Chain{
				Name:     helperChain,
				Table:    t,
				Type:     nftables.ChainTypeFilter,
				Hooknum:  nftables.ChainHookPrerouting,
				Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prioMangle)),
				Policy:   &accept,
			})
		}
		jump := &expr.Verdict{Kind: expr.VerdictJump, Chain: divertChain}
		for _, c := range base {
			if set == nil {
				conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: []expr.Any{jump}})
				continue
			}
			for _, src := range []bool{true, false} {
				e := append(addrMatch(f, src, set), jump)
				conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: e})
			}
		}
		if divert != nil {
			p.addDivertRules(conn, t, divert, shifted, established, native)
		}
		if track != nil {
			if set == nil {
				conn.AddRule(&nftables.Rule{Table: t, Chain: track, Exprs: p.trackExprs(conn, t, established)})
			} else {
				for _, src := range []bool{true, false} {
					e := append(addrMatch(f, src, set), p.trackExprs(conn, t, established)...)
					conn.AddRule(&nftables.Rule{Table: t, Chain: track, Exprs: e})
				}
			}
		}
		if helper != nil {
			for _, src := range []bool{true, false} {
				e := append(addrMatch(f, src, set), p.helperExprs(conn, t, h.obj)...)
				conn.AddRule(&nftables.Rule{Table: t, Chain: helper, Exprs: e})
			}
		}
		if f == familyIP {
			p.addPeerFilter(conn, t)
		}
		if f == familyIP6 {
			p.addOrigin(conn, t)
		}
	}
}

// addScopeSet adds the interval set of the translator's addresses.
func addScopeSet(conn *nftables.Conn, t *nftables.Table, f family, scope []netip.Prefix) *nftables.Set {
	set := &nftables.Set{Table: t, Name: scopeSet, KeyType: nftables.TypeIPAddr, Interval: true}
	if f == familyIP6 {
		set.KeyType = nftables.TypeIP6Addr
	}
	var elems []nftables.SetElement
	for _, q := range scope {
		elems = append(elems, nftables.SetElement{Key: q.Addr().AsSlice()})
		// The interval ends at the first address after the prefix; a
		// prefix that reaches the top of the address space has no end.
		if end, ok := prefixEnd(q); ok {
			elems = append(elems, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	// AddSet fails only for anonymous sets that are not constant.
	_ = conn.AddSet(set, elems)
	return set
}

// prefixEnd returns the first address after q, and false if there is none.
func prefixEnd(q netip.Prefix) (netip.Addr, bool) {
	b := q.Masked().Addr().AsSlice()
	for i := q.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	next := last.Next()
	return next, next.IsValid()
}

// addrMatch builds "ip|ip6 saddr|daddr @translated".
func addrMatch(f family, src bool, set *nftables.Set) []expr.Any {
	off, n := uint32(16), uint32(4) // IPv4 destination address
	switch {
	case f == familyIP && src:
		off = 12
	case f == familyIP6 && src:
		off, n = 8, 16
	case f == familyIP6:
		off, n = 24, 16
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

// portMatch builds "tcp dport|sport <ports>": off is the offset of the port
// in the TCP header.
func (p *plan) portMatch(conn *nftables.Conn, t *nftables.Table, off uint32) []expr.Any {
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
	}
	if len(p.ports) == 1 {
		return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p.ports[0])})
	}
	// An anonymous constant set, as nft makes for "{ 21, 2121 }".
	// AddSet only fails for anonymous sets that are not constant.
	set := &nftables.Set{Table: t, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}
	elems := make([]nftables.SetElement, len(p.ports))
	for i, port := range p.ports {
		elems[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(port)}
	}
	_ = conn.AddSet(set, elems)
	return append(e, &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID})
}

// helperExprs builds `tcp dport <ports> ct state new counter ct helper set "<obj>"`.
func (p *plan) helperExprs(conn *nftables.Conn, t *nftables.Table, obj string) []expr.Any {
	e := p.portMatch(conn, t, 2)
	return append(e,
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Counter{},
		&expr.Objref{Type: int(nftables.ObjTypeCtHelper), Name: obj},
	)
}

// ruleExprs builds "tcp dport|sport <ports> counter queue ...": off is
// the offset of the port in the TCP header.
func (p *plan) ruleExprs(conn *nftables.Conn, t *nftables.Table, off uint32, native bool) []expr.Any {
	return append(p.portMatch(conn, t, off), p.queueExprs(native)...)
}

// queueExprs builds "counter queue ...".
func (p *plan) queueExprs(native bool) []expr.Any {
	e := []expr.Any{&expr.Counter{}}
	if native {
		q := &expr.Queue{Num: p.queueNum, Total: p.queues}
		if p.bypass {
			q.Flag = expr.QueueFlagBypass
		}
		return append(e, q)
	}
	return append(e, &expr.Target{Name: "NFQUEUE", Rev: 3, Info: p.xtInfo()})
}

// xtNFQBypass is NFQ_FLAG_BYPASS of linux/netfilter/xt_NFQUEUE.h.
const xtNFQBypass = 0x01

// xtInfo is struct xt_NFQ_info_v3 (linux/netfilter/xt_NFQUEUE.h): u16
// queuenum, u16 queues_total, u16 flags, u16 padding, in host byte order.
// With queues_total > 1 the xt target balances with the same symmetric
// address hash as nft_queue.
func (p *plan) xtInfo() *xt.Unknown {
	info := make(xt.Unknown, 8)
	binary.NativeEndian.PutUint16(info[0:], p.queueNum)
	binary.NativeEndian.PutUint16(info[2:], p.queues)
	var flags uint16
	if p.bypass {
		flags |= xtNFQBypass
	}
	binary.NativeEndian.PutUint16(info[4:], flags)
	return &info
}

// addDivertRules fills the divert chain: the shifted connections' rule
// (without bypass) first, then the queue rules (of the established
// connections only, when established is not nil) and the counter of the
// clients' packets left unqueued. Install and the handover's queue switch
// both use it, so the two cannot drift.
func (p *plan) addDivertRules(conn *nftables.Conn, t *nftables.Table, divert *nftables.Chain, shifted, established *nftables.Set, native bool) {
	if shifted != nil {
		conn.AddRule(&nftables.Rule{Table: t, Chain: divert, Exprs: p.shiftedExprs(shifted, native)})
	}
	// TCP header offsets of the destination and source ports, in the order
	// Render prints the rules.
	for _, off := range []uint32{2, 0} {
		var e []expr.Any
		if established != nil {
			e = p.establishedQueueExprs(conn, t, established, off, native)
		} else {
			e = p.ruleExprs(conn, t, off, native)
		}
		conn.AddRule(&nftables.Rule{Table: t, Chain: divert, Exprs: e})
	}
	if established != nil {
		e := append(p.portMatch(conn, t, 2), &expr.Counter{})
		conn.AddRule(&nftables.Rule{Table: t, Chain: divert, Exprs: e})
	}
}
