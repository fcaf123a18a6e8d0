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
