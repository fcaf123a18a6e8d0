package jool

// Encoding and decoding of Jool's Generic Netlink messages (Jool 4.1).
//
// Everything here is pure: bytes in, values out, no sockets. The numbers
// follow Jool 4.1's src/common/config.h and were checked against messages
// captured from a real Jool 4.1.9 (testdata/).
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

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// Jool's operations (enum joolnl_operation).
const (
	joolOpGlobalForeach  = 8
	joolOpPool4Foreach   = 18
	joolOpPool4Add       = 19
	joolOpPool4Remove    = 20
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
	joolFlagQuick    = 0x04
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

// withFlags returns h with the flags f added.
func (h joolHeader) withFlags(f uint8) joolHeader {
	h.Flags |= f
	return h
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

func protoAttr(proto uint8) ([]byte, error) {
	jp, err := protoToJool(proto)
	if err != nil {
		return nil, err
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint8(joolAttrProto, jp)
	return ae.Encode()
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
