//go:build linux

package rules

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// dynsetOpUpdate is NFT_DYNSET_OP_UPDATE (linux/netfilter/nf_tables.h):
// add the element, or refresh its timeout.
const dynsetOpUpdate = 1

// ctStatusAssured is IPS_ASSURED (linux/netfilter/nf_conntrack_common.h).
const ctStatusAssured = 1 << 2

// establishedSetOf describes the set in table t (not yet created).
func (p *plan) establishedSetOf(t *nftables.Table) *nftables.Set {
	a := nftables.TypeIPAddr
	if p.family == familyIP6 {
		a = nftables.TypeIP6Addr
	}
	return &nftables.Set{
		Table: t, Name: EstablishedSet, Concatenation: true,
		Dynamic: true, HasTimeout: true, Timeout: EstablishedTimeout, Size: establishedSize,
		KeyType: nftables.MustConcatSetType(a, nftables.TypeInetService, a, nftables.TypeInetService),
	}
}

// tupleLoad loads "saddr . tcp sport . daddr . tcp dport" of the leg's
// family, or with reverse "daddr . tcp dport . saddr . tcp sport", into
// the registers from NFT_REG32_00 on; it returns that register.
func (p *plan) tupleLoad(reverse bool) (uint32, []expr.Any) {
	alen, saddr, daddr := uint32(4), uint32(12), uint32(16)
	if p.family == familyIP6 {
		alen, saddr, daddr = 16, 8, 24
	}
	sport, dport := uint32(0), uint32(2)
	if reverse {
		saddr, daddr, sport, dport = daddr, saddr, dport, sport
	}
	r := uint32(8) // NFT_REG32_00
	r2 := r + alen/4
	r3 := r2 + 1
	r4 := r3 + alen/4
	return r, []expr.Any{
		&expr.Payload{DestRegister: r, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: alen},
		&expr.Payload{DestRegister: r2, Base: expr.PayloadBaseTransportHeader, Offset: sport, Len: 2},
		&expr.Payload{DestRegister: r3, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: alen},
		&expr.Payload{DestRegister: r4, Base: expr.PayloadBaseTransportHeader, Offset: dport, Len: 2},
	}
}

// establishedQueueExprs builds "tcp dport <ports> saddr . sport . daddr .
// dport @established counter queue ..." (off 2), or the reply direction's
// "tcp sport <ports> daddr . dport . saddr . sport @established ..." (off 0).
func (p *plan) establishedQueueExprs(conn *nftables.Conn, t *nftables.Table, set *nftables.Set, off uint32, native bool) []expr.Any {
	e := p.portMatch(conn, t, off)
	r, load := p.tupleLoad(off == 0)
	e = append(e, load...)
	e = append(e, &expr.Lookup{SourceRegister: r, SetName: set.Name, SetID: set.ID})
	return append(e, p.queueExprs(native)...)
}

// trackExprs builds "tcp dport <ports> ct state established update
// @established { saddr . tcp sport . daddr . tcp dport }".
func (p *plan) trackExprs(conn *nftables.Conn, t *nftables.Table, set *nftables.Set) []expr.Any {
	e := p.portMatch(conn, t, 2)
	e = append(e,
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ctStatusAssured),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	)
	r, load := p.tupleLoad(false)
	e = append(e, load...)
	return append(e, &expr.Dynset{SrcRegKey: r, SetName: set.Name, SetID: set.ID, Operation: dynsetOpUpdate})
}
