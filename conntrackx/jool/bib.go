package jool

// Jool's BIB (binding information base): static entries the ALG adds
// for data channels, and listings.

import (
	"fmt"
	"net/netip"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// BIBAdd adds e as a static BIB entry. Adding an entry that already exists
// with the same addresses succeeds (Jool makes it static); one that
// collides with a different entry fails with a *Error wrapping EEXIST;
// an IPv4 address not in pool4 fails with EINVAL.
func (j *Client) BIBAdd(e BIBEntry) error {
	m, err := marshalBIBAdd(j.hdr, e)
	if err != nil {
		return fmt.Errorf("jool bib add: %w", err)
	}
	_, _, err = j.execute("bib add", m)
	return err
}

// BIBRemove removes the BIB entry e (with its sessions). A missing entry
// fails with a *Error wrapping ESRCH.
func (j *Client) BIBRemove(e BIBEntry) error {
	m, err := marshalBIBRemove(j.hdr, e)
	if err != nil {
		return fmt.Errorf("jool bib remove: %w", err)
	}
	_, _, err = j.execute("bib remove", m)
	return err
}

// BIBList lists the BIB entries of one protocol (IANA number), both static
// and dynamic, sorted by IPv4 transport address as Jool keeps them.
func (j *Client) BIBList(proto uint8) ([]BIBEntry, error) {
	return bibListing.all(j, proto)
}

// BIBEntry is one binding of Jool's BIB: the IPv6 transport address Addr6
// is seen on the IPv4 side as Addr4.
type BIBEntry struct {
	Addr6, Addr4 netip.AddrPort
	Proto        uint8 // IANA number: 6 TCP, 17 UDP, 1 ICMP
	Static       bool
}

func (e BIBEntry) String() string {
	kind := "dynamic"
	if e.Static {
		kind = "static"
	}
	return fmt.Sprintf("%v <-> %v proto %d %s", e.Addr6, e.Addr4, e.Proto, kind)
}

func checkBIBEntry(e BIBEntry) (uint8, error) {
	if !e.Addr6.Addr().Is6() || e.Addr6.Addr().Is4In6() {
		return 0, fmt.Errorf("bib entry %v: %v is not an IPv6 address", e, e.Addr6.Addr())
	}
	if !e.Addr4.Addr().Unmap().Is4() {
		return 0, fmt.Errorf("bib entry %v: %v is not an IPv4 address", e, e.Addr4.Addr())
	}
	return protoToJool(e.Proto)
}

// bibAttrs encodes a BIB entry as the nested attribute typ. (Jool's STATIC
// is a u8, not a netlink flag, so the entry is built by hand here.)
func bibAttrs(typ uint16, e BIBEntry) ([]byte, error) {
	proto, err := checkBIBEntry(e)
	if err != nil {
		return nil, err
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(typ, func(nae *netlink.AttributeEncoder) error {
		encodeTaddr6(nae, joolBIBSrc6, e.Addr6)
		encodeTaddr4(nae, joolBIBSrc4, e.Addr4)
		nae.Uint8(joolBIBProto, proto)
		var static uint8
		if e.Static {
			static = 1
		}
		nae.Uint8(joolBIBStatic, static)
		return nil
	})
	return ae.Encode()
}

// marshalBIBAdd builds the request that adds e as a static BIB entry
// (`jool bib add`). The module makes every entry added this way static.
func marshalBIBAdd(h joolHeader, e BIBEntry) (genetlink.Message, error) {
	e.Static = true
	attrs, err := bibAttrs(joolAttrOperand, e)
	if err != nil {
		return genetlink.Message{}, err
	}
	return newJoolMessage(h, joolOpBIBAdd, attrs), nil
}

// marshalBIBRemove builds the request that removes e (`jool bib remove`).
func marshalBIBRemove(h joolHeader, e BIBEntry) (genetlink.Message, error) {
	attrs, err := bibAttrs(joolAttrOperand, e)
	if err != nil {
		return genetlink.Message{}, err
	}
	return newJoolMessage(h, joolOpBIBRemove, attrs), nil
}

// marshalBIBForeach builds one page request of a BIB listing: the first
// page names the protocol, later ones the last entry received (which
// carries the protocol itself).
func marshalBIBForeach(h joolHeader, proto uint8, offset *BIBEntry) (genetlink.Message, error) {
	var attrs []byte
	var err error
	if offset == nil {
		attrs, err = protoAttr(proto)
	} else {
		attrs, err = bibAttrs(joolAttrOffset, *offset)
	}
	if err != nil {
		return genetlink.Message{}, err
	}
	return newJoolMessage(h, joolOpBIBForeach, attrs), nil
}

// unmarshalBIBEntries decodes the attributes of a BIB listing page.
func unmarshalBIBEntries(attrs []byte) ([]BIBEntry, error) {
	var out []BIBEntry
	err := decodeList(attrs, func(nad *netlink.AttributeDecoder) error {
		var e BIBEntry
		var jp uint8
		var have6, have4, haveProto bool
		for nad.Next() {
			switch nad.Type() {
			case joolBIBSrc6:
				e.Addr6, have6 = decodeTaddr(nad, 16), true
			case joolBIBSrc4:
				e.Addr4, have4 = decodeTaddr(nad, 4), true
			case joolBIBProto:
				jp, haveProto = nad.Uint8(), true
			case joolBIBStatic:
				e.Static = nad.Uint8() != 0
			}
		}
		if err := nad.Err(); err != nil {
			return err
		}
		if !have6 || !have4 || !haveProto {
			return fmt.Errorf("bib entry lacks an address or protocol")
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
		return nil, fmt.Errorf("%w: bib listing: %v", errMalformed, err)
	}
	return out, nil
}
