package jool

// Jool's pool4: the IPv4 transport addresses it translates to.

import (
	"fmt"
	"net/netip"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// Pool4List lists the pool4 ranges of one protocol (IANA number).
func (j *Client) Pool4List(proto uint8) ([]Pool4Entry, error) {
	return pool4Listing.all(j, proto)
}

// Pool4Entry is one range of Jool's pool4.
type Pool4Entry struct {
	Mark             uint32
	Proto            uint8 // IANA number
	Prefix           netip.Prefix
	PortMin, PortMax uint16
	// Iterations and IterFlags are Jool's port-search settings, kept so a
	// listing can be resumed from an entry exactly as the kernel sent it.
	Iterations uint32
	IterFlags  uint8
}

// Contains says whether the range covers the transport address a.
func (p Pool4Entry) Contains(a netip.AddrPort) bool {
	return p.Prefix.Contains(a.Addr()) && a.Port() >= p.PortMin && a.Port() <= p.PortMax
}

// marshalPool4Foreach builds one page request of a pool4 listing.
func marshalPool4Foreach(h joolHeader, proto uint8, offset *Pool4Entry) (genetlink.Message, error) {
	if offset == nil {
		attrs, err := protoAttr(proto)
		if err != nil {
			return genetlink.Message{}, err
		}
		return newJoolMessage(h, joolOpPool4Foreach, attrs), nil
	}
	jp, err := protoToJool(offset.Proto)
	if err != nil {
		return genetlink.Message{}, err
	}
	if !offset.Prefix.Addr().Is4() {
		return genetlink.Message{}, fmt.Errorf("pool4 offset %v: not an IPv4 prefix", offset.Prefix)
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(joolAttrOffset, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(joolPool4Mark, offset.Mark)
		nae.Uint32(joolPool4Iterations, offset.Iterations)
		nae.Uint8(joolPool4Flags, offset.IterFlags)
		nae.Uint8(joolPool4Proto, jp)
		nae.Nested(joolPool4Prefix, func(pae *netlink.AttributeEncoder) error {
			a := offset.Prefix.Addr().As4()
			pae.Bytes(joolPrefixAddr, a[:])
			pae.Uint8(joolPrefixLen, uint8(offset.Prefix.Bits()))
			return nil
		})
		nae.Uint16(joolPool4PortMin, offset.PortMin)
		nae.Uint16(joolPool4PortMax, offset.PortMax)
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return genetlink.Message{}, err
	}
	return newJoolMessage(h, joolOpPool4Foreach, attrs), nil
}

// unmarshalPool4Entries decodes the attributes of a pool4 listing page.
func unmarshalPool4Entries(attrs []byte) ([]Pool4Entry, error) {
	var out []Pool4Entry
	err := decodeList(attrs, func(nad *netlink.AttributeDecoder) error {
		var e Pool4Entry
		var jp uint8
		var havePrefix, haveProto bool
		for nad.Next() {
			switch nad.Type() {
			case joolPool4Mark:
				e.Mark = nad.Uint32()
			case joolPool4Iterations:
				e.Iterations = nad.Uint32()
			case joolPool4Flags:
				e.IterFlags = nad.Uint8()
			case joolPool4Proto:
				jp, haveProto = nad.Uint8(), true
			case joolPool4Prefix:
				e.Prefix, havePrefix = decodePrefix(nad, 4), true
			case joolPool4PortMin:
				e.PortMin = nad.Uint16()
			case joolPool4PortMax:
				e.PortMax = nad.Uint16()
			}
		}
		if err := nad.Err(); err != nil {
			return err
		}
		if !havePrefix || !haveProto {
			return fmt.Errorf("pool4 entry lacks a prefix or protocol")
		}
		p, err := protoFromJool(jp)
		if err != nil {
			return err
		}
		e.Proto = p
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: pool4 listing: %v", errMalformed, err)
	}
	return out, nil
}

// Pool4Add adds the range e to pool4 under e.Mark (`jool pool4 add`).
// Ranges of one mark that touch are fused; the same address and ports
// under another mark are no conflict (Jool keeps one table per mark for
// the IPv6-to-IPv4 direction, and one per address for the other). A zero
// IterFlags leaves the mark's port-search settings as they are.
func (j *Client) Pool4Add(e Pool4Entry) error {
	m, err := marshalPool4Entry(j.hdr, joolOpPool4Add, e)
	if err != nil {
		return fmt.Errorf("jool pool4 add: %w", err)
	}
	_, _, err = j.execute("pool4 add", m)
	return err
}

// Pool4Remove removes the range e from pool4's mark e.Mark, "quick"
// (`jool pool4 remove --quick`): without it Jool also removes every BIB
// entry, static ones included, whose IPv4 transport address is in the
// range, whatever their mark. Note that Jool removes the range from its
// per-address table too, where ranges of every mark are fused: ports of
// the range that another mark also holds stop being pool4 for IPv4-to-IPv6
// packets and static BIB entries until that mark's range is added again
// (Pool4Add of the same range, which changes nothing else).
func (j *Client) Pool4Remove(e Pool4Entry) error {
	m, err := marshalPool4Entry(j.hdr.withFlags(joolFlagQuick), joolOpPool4Remove, e)
	if err != nil {
		return fmt.Errorf("jool pool4 remove: %w", err)
	}
	_, _, err = j.execute("pool4 remove", m)
	return err
}

// marshalPool4Entry builds a pool4 add or remove request: the entry as the
// OPERAND, in the layout of a listing's entries.
func marshalPool4Entry(h joolHeader, op uint8, e Pool4Entry) (genetlink.Message, error) {
	jp, err := protoToJool(e.Proto)
	if err != nil {
		return genetlink.Message{}, err
	}
	if !e.Prefix.IsValid() || !e.Prefix.Addr().Is4() {
		return genetlink.Message{}, fmt.Errorf("pool4 entry %v: not an IPv4 prefix", e.Prefix)
	}
	if e.PortMin > e.PortMax {
		return genetlink.Message{}, fmt.Errorf("pool4 entry %v: ports %d-%d", e.Prefix, e.PortMin, e.PortMax)
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(joolAttrOperand, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(joolPool4Mark, e.Mark)
		nae.Uint32(joolPool4Iterations, e.Iterations)
		nae.Uint8(joolPool4Flags, e.IterFlags)
		nae.Uint8(joolPool4Proto, jp)
		nae.Nested(joolPool4Prefix, func(pae *netlink.AttributeEncoder) error {
			a := e.Prefix.Addr().As4()
			pae.Bytes(joolPrefixAddr, a[:])
			pae.Uint8(joolPrefixLen, uint8(e.Prefix.Bits()))
			return nil
		})
		nae.Uint16(joolPool4PortMin, e.PortMin)
		nae.Uint16(joolPool4PortMax, e.PortMax)
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return genetlink.Message{}, err
	}
	return newJoolMessage(h, op, attrs), nil
}
