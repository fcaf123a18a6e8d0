package jool

// Encoding and decoding of Jool's Generic Netlink messages (Jool 4.1).
//
// Everything here is pure: bytes in, values out, no sockets. The numbers
// follow Jool 4.1's src/common/config.h and were checked against messages
// captured from a real Jool 4.1.9 (testdata/jool/).
//
// A Jool message is a generic netlink message (family "Jool", requests use
// genl version 1) whose payload starts with a 28-byte header:
//
//	0   magic "jool"
//	4   version, big endian (major<<24 | minor<<16 | rev<<8 | dev)
//	8   xlator type (1 SIIT, 2 NAT64)
//	9   flags (0x01 error, 0x02 force, 0x04 quick, 0x08 more pages)
//	10  2 reserved bytes
//	12  instance name, 16 bytes, NUL padded
//
// then netlink attributes. Integers inside attributes are in host byte
// order (ports included); addresses are raw network-order bytes.
// The kernel echoes the request's header in its reply and sets the flags:
// an error reply carries a u16 errno and a message string; a list reply
// with the "more" flag wants the caller to ask again from the last entry.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// Jool's operations (enum joolnl_operation).
const (
	joolOpGlobalForeach  = 8
	joolOpPool4Foreach   = 18
	joolOpBIBForeach     = 22
	joolOpBIBAdd         = 23
	joolOpBIBRemove      = 24
	joolOpSessionForeach = 25
)

// Root attributes (enum joolnl_attr_root) and list entries.
const (
	joolAttrGlobals = 2
	joolAttrOffset  = 8
	joolAttrOperand = 10
	joolAttrProto   = 11

	joolAttrListEntry = 1
)

// Nested attributes.
const (
	// enum joolnl_attr_prefix
	joolPrefixAddr = 1
	joolPrefixLen  = 2
	// enum joolnl_attr_taddr
	joolTaddrAddr = 1
	joolTaddrPort = 2
	// enum joolnl_attr_pool4
	joolPool4Mark       = 1
	joolPool4Iterations = 2
	joolPool4Flags      = 3
	joolPool4Proto      = 4
	joolPool4Prefix     = 5
	joolPool4PortMin    = 6
	joolPool4PortMax    = 7
	// enum joolnl_attr_bib
	joolBIBSrc6   = 1
	joolBIBSrc4   = 2
	joolBIBProto  = 3
	joolBIBStatic = 4
	// enum joolnl_attr_session
	joolSessionSrc6       = 1
	joolSessionDst6       = 2
	joolSessionSrc4       = 3
	joolSessionDst4       = 4
	joolSessionProto      = 5
	joolSessionState      = 6
	joolSessionTimer      = 7
	joolSessionExpiration = 8
	// enum joolnl_attr_global
	joolGlobalPool6 = 2
	// enum joolnl_attr_error
	joolErrCode = 1
	joolErrMsg  = 2
)

const (
	joolFamily       = "Jool"
	joolGenlVersion  = 1
	joolHeaderLen    = 28
	joolInameMax     = 16
	joolXlatorNAT64  = 2
	joolFlagError    = 0x01
	joolFlagMore     = 0x08
	joolDefaultIname = "default"
)

// Version41 is the version this client announces by default: Jool
// 4.1.x. The module accepts a request whose major and minor numbers match
// its own and ignores the rest.
const Version41 uint32 = 4<<24 | 1<<16

// Jool's layer-4 protocol numbers (enum l4_protocol); the API of this
// package uses IANA protocol numbers instead.
const (
	joolProtoTCP  = 0
	joolProtoUDP  = 1
	joolProtoICMP = 2
)

// IANA protocol numbers accepted by the Jool client.
const (
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMP   uint8 = 1
	ProtoICMPv6 uint8 = 58
)

func protoToJool(p uint8) (uint8, error) {
	switch p {
	case ProtoTCP:
		return joolProtoTCP, nil
	case ProtoUDP:
		return joolProtoUDP, nil
	case ProtoICMP, ProtoICMPv6:
		return joolProtoICMP, nil
	}
	return 0, fmt.Errorf("protocol %d: jool translates only tcp, udp and icmp", p)
}

func protoFromJool(p uint8) (uint8, error) {
	switch p {
	case joolProtoTCP:
		return ProtoTCP, nil
	case joolProtoUDP:
		return ProtoUDP, nil
	case joolProtoICMP:
		return ProtoICMP, nil
	}
	return 0, fmt.Errorf("unknown jool protocol %d", p)
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

// Jool's TCP session states (enum tcp_state, RFC 6146 section 3.5.2).
const (
	TCPEstablished   uint8 = 0
	TCPV6Init        uint8 = 1
	TCPV4Init        uint8 = 2
	TCPV4FinRcv      uint8 = 3
	TCPV6FinRcv      uint8 = 4
	TCPV4FinV6FinRcv uint8 = 5
	TCPTrans         uint8 = 6
)

// SessionEntry is one session of Jool's session table. A session belongs
// to the BIB entry Src6 <-> Src4: the IPv6 node Src6 talks to Dst6, which
// the IPv4 node Dst4 sees as Src4.
type SessionEntry struct {
	Src6, Dst6 netip.AddrPort
	Src4, Dst4 netip.AddrPort
	Proto      uint8 // IANA number
	State      uint8 // TCP* for TCP; 0 otherwise
	Timer      uint8 // Jool's timer kind (0 established, 1 transitory)
	// Expires is how long the session has left, as the kernel reported it.
	Expires time.Duration
}

// Finished says whether a TCP session has seen both FINs or a reset.
func (s SessionEntry) Finished() bool {
	return s.State == TCPV4FinV6FinRcv || s.State == TCPTrans
}

// Error is an error reported by the Jool kernel module itself.
// errors.Is(err, unix.EEXIST) and the like work through Unwrap.
type Error struct {
	Op      string        // the operation, such as "bib add"
	Errno   syscall.Errno // the module's error code
	Message string        // the module's own explanation
}

func (e *Error) Error() string {
	msg := strings.Join(strings.Fields(e.Message), " ")
	if msg == "" {
		return fmt.Sprintf("jool %s: %v", e.Op, e.Errno)
	}
	return fmt.Sprintf("jool %s: %s (%v)", e.Op, msg, e.Errno)
}

// Unwrap returns the errno.
func (e *Error) Unwrap() error { return e.Errno }

// joolHeader is the part of the 28-byte header a caller chooses or reads.
type joolHeader struct {
	Version  uint32
	Flags    uint8
	Instance string
}

func appendJoolHeader(b []byte, h joolHeader) []byte {
	var hdr [joolHeaderLen]byte
	copy(hdr[0:4], "jool")
	binary.BigEndian.PutUint32(hdr[4:8], h.Version)
	hdr[8] = joolXlatorNAT64
	hdr[9] = h.Flags
	copy(hdr[12:], h.Instance) // validated by the caller to fit with its NUL
	return append(b, hdr[:]...)
}

func validInstance(name string) error {
	if len(name) >= joolInameMax {
		return fmt.Errorf("jool instance name %q: longer than %d bytes", name, joolInameMax-1)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("jool instance name %q: contains a NUL byte", name)
	}
	return nil
}

// newJoolMessage builds a request for op carrying the attributes attrs.
func newJoolMessage(h joolHeader, op uint8, attrs []byte) genetlink.Message {
	data := make([]byte, 0, joolHeaderLen+len(attrs))
	data = appendJoolHeader(data, h)
	data = append(data, attrs...)
	return genetlink.Message{
		Header: genetlink.Header{Command: op, Version: joolGenlVersion},
		Data:   data,
	}
}

func encodeTaddr6(ae *netlink.AttributeEncoder, typ uint16, a netip.AddrPort) {
	ae.Nested(typ, func(nae *netlink.AttributeEncoder) error {
		b := a.Addr().As16()
		nae.Bytes(joolTaddrAddr, b[:])
		nae.Uint16(joolTaddrPort, a.Port())
		return nil
	})
}

func encodeTaddr4(ae *netlink.AttributeEncoder, typ uint16, a netip.AddrPort) {
	ae.Nested(typ, func(nae *netlink.AttributeEncoder) error {
		b := a.Addr().Unmap().As4()
		nae.Bytes(joolTaddrAddr, b[:])
		nae.Uint16(joolTaddrPort, a.Port())
		return nil
	})
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

func protoAttr(proto uint8) ([]byte, error) {
	jp, err := protoToJool(proto)
	if err != nil {
		return nil, err
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint8(joolAttrProto, jp)
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

// marshalSessionForeach builds one page request of a session listing. The
// protocol is always named; later pages add the last session received (the
// module reads only its IPv4 addresses) and start strictly after it.
func marshalSessionForeach(h joolHeader, proto uint8, offset *SessionEntry) (genetlink.Message, error) {
	jp, err := protoToJool(proto)
	if err != nil {
		return genetlink.Message{}, err
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint8(joolAttrProto, jp)
	if offset != nil {
		ae.Nested(joolAttrOffset, func(nae *netlink.AttributeEncoder) error {
			encodeTaddr6(nae, joolSessionSrc6, offset.Src6)
			encodeTaddr6(nae, joolSessionDst6, offset.Dst6)
			encodeTaddr4(nae, joolSessionSrc4, offset.Src4)
			encodeTaddr4(nae, joolSessionDst4, offset.Dst4)
			nae.Uint8(joolSessionProto, jp)
			nae.Uint8(joolSessionState, offset.State)
			nae.Uint32(joolSessionExpiration, uint32(offset.Expires/time.Millisecond))
			return nil
		})
	}
	attrs, err := ae.Encode()
	if err != nil {
		return genetlink.Message{}, err
	}
	return newJoolMessage(h, joolOpSessionForeach, attrs), nil
}

// marshalGlobalForeach builds the request for the instance's global
// configuration (`jool global display`).
func marshalGlobalForeach(h joolHeader) genetlink.Message {
	return newJoolMessage(h, joolOpGlobalForeach, nil)
}

// errMalformed marks replies that do not follow Jool's protocol.
var errMalformed = errors.New("malformed jool reply")

// parseJoolReply checks a reply's Jool header and returns its flags and
// attributes. An error reply becomes a *Error for op.
func parseJoolReply(op string, data []byte) (flags uint8, attrs []byte, err error) {
	if len(data) < joolHeaderLen {
		return 0, nil, fmt.Errorf("jool %s: %w: %d bytes, shorter than the jool header", op, errMalformed, len(data))
	}
	if !bytes.Equal(data[0:4], []byte("jool")) {
		return 0, nil, fmt.Errorf("jool %s: %w: bad magic %q", op, errMalformed, data[0:4])
	}
	flags, attrs = data[9], data[joolHeaderLen:]
	if flags&joolFlagError == 0 {
		return flags, attrs, nil
	}
	je := &Error{Op: op, Errno: syscall.EINVAL}
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return flags, nil, fmt.Errorf("jool %s: %w: error reply: %v", op, errMalformed, err)
	}
	for ad.Next() {
		switch ad.Type() {
		case joolErrCode:
			je.Errno = syscall.Errno(ad.Uint16())
		case joolErrMsg:
			je.Message = ad.String()
		}
	}
	if err := ad.Err(); err != nil {
		return flags, nil, fmt.Errorf("jool %s: %w: error reply: %v", op, errMalformed, err)
	}
	return flags, nil, je
}

func decodeTaddr(nad *netlink.AttributeDecoder, size int) netip.AddrPort {
	var out netip.AddrPort
	nad.Nested(func(d *netlink.AttributeDecoder) error {
		var addr netip.Addr
		var port uint16
		for d.Next() {
			switch d.Type() {
			case joolTaddrAddr:
				b := d.Bytes()
				if len(b) != size {
					return fmt.Errorf("address of %d bytes, want %d", len(b), size)
				}
				addr, _ = netip.AddrFromSlice(b)
			case joolTaddrPort:
				port = d.Uint16()
			}
		}
		if !addr.IsValid() {
			return errors.New("transport address lacks an address")
		}
		out = netip.AddrPortFrom(addr, port)
		return nil
	})
	return out
}

func decodePrefix(nad *netlink.AttributeDecoder, size int) netip.Prefix {
	var out netip.Prefix
	nad.Nested(func(d *netlink.AttributeDecoder) error {
		var addr netip.Addr
		bits := -1
		for d.Next() {
			switch d.Type() {
			case joolPrefixAddr:
				b := d.Bytes()
				if len(b) != size {
					return fmt.Errorf("prefix address of %d bytes, want %d", len(b), size)
				}
				addr, _ = netip.AddrFromSlice(b)
			case joolPrefixLen:
				bits = int(d.Uint8())
			}
		}
		if !addr.IsValid() || bits < 0 || bits > addr.BitLen() {
			return fmt.Errorf("bad prefix %v/%d", addr, bits)
		}
		out = netip.PrefixFrom(addr, bits) // host bits kept as Jool sent them
		return nil
	})
	return out
}

// decodeList walks a list reply: every root attribute must be a list entry,
// handed to fn to decode.
func decodeList(attrs []byte, fn func(nad *netlink.AttributeDecoder) error) error {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return err
	}
	for ad.Next() {
		if ad.Type() != joolAttrListEntry {
			return fmt.Errorf("unexpected root attribute %d in a list", ad.Type())
		}
		ad.Nested(fn)
	}
	return ad.Err()
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

// unmarshalSessionEntries decodes the attributes of a session listing page.
func unmarshalSessionEntries(attrs []byte) ([]SessionEntry, error) {
	var out []SessionEntry
	err := decodeList(attrs, func(nad *netlink.AttributeDecoder) error {
		var s SessionEntry
		var jp uint8
		var seen int
		for nad.Next() {
			switch nad.Type() {
			case joolSessionSrc6:
				s.Src6 = decodeTaddr(nad, 16)
				seen |= 1
			case joolSessionDst6:
				s.Dst6 = decodeTaddr(nad, 16)
				seen |= 2
			case joolSessionSrc4:
				s.Src4 = decodeTaddr(nad, 4)
				seen |= 4
			case joolSessionDst4:
				s.Dst4 = decodeTaddr(nad, 4)
				seen |= 8
			case joolSessionProto:
				jp = nad.Uint8()
				seen |= 16
			case joolSessionState:
				s.State = nad.Uint8()
			case joolSessionTimer:
				s.Timer = nad.Uint8()
			case joolSessionExpiration:
				s.Expires = time.Duration(nad.Uint32()) * time.Millisecond
			}
		}
		if err := nad.Err(); err != nil {
			return err
		}
		if seen != 31 {
			return fmt.Errorf("session entry lacks an address or protocol")
		}
		p, err := protoFromJool(jp)
		if err != nil {
			return err
		}
		s.Proto = p
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: session listing: %v", errMalformed, err)
	}
	return out, nil
}

// unmarshalGlobalPool6 finds pool6 in a global configuration reply. ok is
// false when the instance has none.
func unmarshalGlobalPool6(attrs []byte) (pool6 netip.Prefix, ok bool, err error) {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("%w: globals: %v", errMalformed, err)
	}
	for ad.Next() {
		if ad.Type() == joolGlobalPool6 {
			pool6, ok = decodePrefix(ad, 16), true
		}
	}
	if err := ad.Err(); err != nil {
		return netip.Prefix{}, false, fmt.Errorf("%w: globals: %v", errMalformed, err)
	}
	return pool6, ok, nil
}
