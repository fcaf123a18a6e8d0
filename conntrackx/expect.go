package conntrackx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Expectation is a conntrack expectation for the data connection of an FTP
// control connection: a pinhole. A new TCP connection from From (any
// source port) to To is then "related" to the control connection, and a
// firewall that admits "ct state established,related" admits it, on the
// leg of the translator (address family) the expectation is made in.
//
// All addresses are of one family. The control connection must be in
// conntrack with a helper attached (on the leg the daemon rewrites, the
// carrier helper of ftpalg's rules, rules.Config.Helper); the kernel
// refuses expectations, EOPNOTSUPP, for a connection without one, and for
// one whose helper was detached through ctnetlink (tested on 6.18).
type Expectation struct {
	// Client and Server are the control connection in its original
	// direction: the FTP client's end and the FTP server's end (port 21).
	Client, Server netip.AddrPort
	// From is the address the data connection comes from (any port).
	From netip.Addr
	// To is the address and port the data connection goes to.
	To netip.AddrPort
}

func (e Expectation) String() string {
	return fmt.Sprintf("%s:* -> %s (control %s -> %s)", addrText(e.From), e.To, e.Client, e.Server)
}

func addrText(a netip.Addr) string {
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

// family returns the expectation's address family (unix.AF_INET or
// unix.AF_INET6), or an error if its addresses are missing or mixed.
// IPv4-mapped IPv6 addresses count as IPv4.
func (e Expectation) family() (uint8, error) {
	addrs := [...]netip.Addr{e.Client.Addr(), e.Server.Addr(), e.From, e.To.Addr()}
	is4 := addrs[0].Unmap().Is4()
	for _, a := range addrs {
		if !a.IsValid() {
			return 0, errors.New("address missing")
		}
		if a.Unmap().Is4() != is4 {
			return 0, errors.New("addresses of both families")
		}
	}
	if e.To.Port() == 0 {
		return 0, errors.New("port 0")
	}
	if is4 {
		return unix.AF_INET, nil
	}
	return unix.AF_INET6, nil
}

// Netlink constants of linux/netfilter/nfnetlink_conntrack.h and
// linux/netfilter/nfnetlink.h. golang.org/x/sys/unix has the subsystem
// but not the expectation attributes.
const (
	ipctnlMsgCtNew  = 0 // IPCTNL_MSG_CT_NEW
	ipctnlMsgExpNew = 0 // IPCTNL_MSG_EXP_NEW

	ctaTupleOrig = 1 // CTA_TUPLE_ORIG
	ctaProtoinfo = 4 // CTA_PROTOINFO

	ctaProtoinfoTCP           = 1 // CTA_PROTOINFO_TCP
	ctaProtoinfoTCPFlagsOrig  = 4 // CTA_PROTOINFO_TCP_FLAGS_ORIGINAL
	ctaProtoinfoTCPFlagsReply = 5 // CTA_PROTOINFO_TCP_FLAGS_REPLY

	// tcpFlagBeLiberal is IP_CT_TCP_FLAG_BE_LIBERAL of
	// linux/netfilter/nf_conntrack_tcp.h.
	tcpFlagBeLiberal = 0x08

	ctaExpectMaster  = 1 // CTA_EXPECT_MASTER
	ctaExpectTuple   = 2 // CTA_EXPECT_TUPLE
	ctaExpectMask    = 3 // CTA_EXPECT_MASK
	ctaExpectTimeout = 4 // CTA_EXPECT_TIMEOUT

	ctaTupleIP    = 1 // CTA_TUPLE_IP
	ctaTupleProto = 2 // CTA_TUPLE_PROTO

	ctaIPv4Src = 1 // CTA_IP_V4_SRC
	ctaIPv4Dst = 2 // CTA_IP_V4_DST
	ctaIPv6Src = 3 // CTA_IP_V6_SRC
	ctaIPv6Dst = 4 // CTA_IP_V6_DST

	ctaProtoNum     = 1 // CTA_PROTO_NUM
	ctaProtoSrcPort = 2 // CTA_PROTO_SRC_PORT
	ctaProtoDstPort = 3 // CTA_PROTO_DST_PORT
)

// expectMessage encodes an IPCTNL_MSG_EXP_NEW request for e.
//
// The kernel (net/netfilter/nf_conntrack_netlink.c, ctnetlink_new_expect)
// looks the master up by CTA_EXPECT_MASTER, matches new connections on
// CTA_EXPECT_TUPLE with the source part of CTA_EXPECT_MASK (the
// destination always matches exactly; the mask's destination is parsed
// but not used), and requires every tuple to carry both addresses, the
// protocol and both ports. No CTA_EXPECT_HELP_NAME: it is optional, and
// recent kernels ignore it and use the master's helper.
//
// With create, the request makes the expectation (NLM_F_CREATE; without
// NLM_F_EXCL, an identical expectation that already exists is updated
// instead, which is not an error). The kernel ignores CTA_EXPECT_TIMEOUT
// when it creates an expectation (the master's helper policy sets it: 300
// s for "ftp" and "sane"); a request without create and with timeout > 0
// changes the timeout of an existing one. The master's helper policy also
// caps its pending expectations ("ftp" and "sane": one); a new one
// replaces the oldest.
func expectMessage(e Expectation, create bool, timeout time.Duration) (netlink.Message, error) {
	fam, err := e.family()
	if err != nil {
		return netlink.Message{}, fmt.Errorf("expectation %v: %w", e, err)
	}
	ones := netip.AddrFrom4([4]byte{0xff, 0xff, 0xff, 0xff})
	if fam == unix.AF_INET6 {
		ones = netip.AddrFrom16([16]byte{0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff,
			8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff})
	}
	tuple := func(typ uint16, from, to netip.Addr, sport, dport uint16) func(*netlink.AttributeEncoder) {
		return func(ae *netlink.AttributeEncoder) { encodeTuple(ae, typ, fam, from, to, sport, dport) }
	}
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	tuple(ctaExpectMaster, e.Client.Addr(), e.Server.Addr(), e.Client.Port(), e.Server.Port())(ae)
	tuple(ctaExpectTuple, e.From, e.To.Addr(), 0, e.To.Port())(ae)
	// The source port mask 0 is the wildcard: any source port.
	tuple(ctaExpectMask, ones, ones, 0, 0xffff)(ae)
	if timeout > 0 {
		ae.Uint32(ctaExpectTimeout, uint32((timeout+time.Second-1)/time.Second))
	}
	attrs, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, fmt.Errorf("expectation %v: %w", e, err)
	}
	flags := netlink.Request | netlink.Acknowledge
	if create {
		flags |= netlink.Create
	}
	return nfMessage(unix.NFNL_SUBSYS_CTNETLINK_EXP, ipctnlMsgExpNew, flags, fam, attrs), nil
}

// nfMessage is a netfilter netlink message: struct nfgenmsg (family,
// version NFNETLINK_V0, resource id 0), then the attributes.
func nfMessage(subsys, msg uint16, flags netlink.HeaderFlags, fam uint8, attrs []byte) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(subsys<<8 | msg), Flags: flags},
		Data:   append([]byte{fam, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
}

// encodeTuple writes a nested conntrack tuple of TCP (CTA_TUPLE_IP with
// both addresses, CTA_TUPLE_PROTO with the protocol and both ports).
func encodeTuple(ae *netlink.AttributeEncoder, typ uint16, fam uint8, from, to netip.Addr, sport, dport uint16) {
	src, dst := uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
	if fam == unix.AF_INET6 {
		src, dst = ctaIPv6Src, ctaIPv6Dst
	}
	ae.Nested(typ, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(ctaTupleIP, func(ae *netlink.AttributeEncoder) error {
			ae.Bytes(src, from.Unmap().AsSlice())
			ae.Bytes(dst, to.Unmap().AsSlice())
			return nil
		})
		ae.Nested(ctaTupleProto, func(ae *netlink.AttributeEncoder) error {
			ae.Uint8(ctaProtoNum, unix.IPPROTO_TCP)
			ae.Uint16(ctaProtoSrcPort, sport)
			ae.Uint16(ctaProtoDstPort, dport)
			return nil
		})
		return nil
	})
}

// liberalMessage encodes an IPCTNL_MSG_CT_NEW update of the connection
// client -> server (its original direction) that sets
// IP_CT_TCP_FLAG_BE_LIBERAL in both directions: conntrack then stops
// marking its packets INVALID for sequence or acknowledgement numbers
// outside the window it tracked (struct nf_ct_tcp_flags: flags, mask).
func liberalMessage(client, server netip.AddrPort) (netlink.Message, error) {
	e := Expectation{Client: client, Server: server, From: server.Addr(), To: client}
	fam, err := e.family()
	if err != nil {
		return netlink.Message{}, fmt.Errorf("connection %v -> %v: %w", client, server, err)
	}
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	encodeTuple(ae, ctaTupleOrig, fam, client.Addr(), server.Addr(), client.Port(), server.Port())
	ae.Nested(ctaProtoinfo, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(ctaProtoinfoTCP, func(ae *netlink.AttributeEncoder) error {
			ae.Bytes(ctaProtoinfoTCPFlagsOrig, []byte{tcpFlagBeLiberal, tcpFlagBeLiberal})
			ae.Bytes(ctaProtoinfoTCPFlagsReply, []byte{tcpFlagBeLiberal, tcpFlagBeLiberal})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, fmt.Errorf("connection %v -> %v: %w", client, server, err)
	}
	return nfMessage(unix.NFNL_SUBSYS_CTNETLINK, ipctnlMsgCtNew, netlink.Request|netlink.Acknowledge, fam, attrs), nil
}

// ExpecterConfig configures an Expecter. A nil *ExpecterConfig means
// defaults.
type ExpecterConfig struct {
	// Timeout is how long an expectation waits for its data connection.
	// Zero keeps the kernel's: the master's helper policy, 300 s for the
	// "ftp" and "sane" helpers. Any other value costs a second request per
	// expectation (the kernel sets the timeout only on an update).
	Timeout time.Duration
	// NetNS is a network namespace file descriptor (the namespace the
	// translator forwards in); 0 means the current one. No goroutine
	// switches namespace: the socket is opened in it.
	NetNS int
}

// Expecter creates conntrack expectations over ctnetlink. It is safe for
// concurrent use: requests are serialized on one socket.
type Expecter struct {
	timeout time.Duration

	mu   sync.Mutex
	conn *netlink.Conn
}

// DialExpecter opens a ctnetlink socket for expectations.
func DialExpecter(cfg *ExpecterConfig) (*Expecter, error) {
	if cfg == nil {
		cfg = &ExpecterConfig{}
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: cfg.NetNS})
	if err != nil {
		return nil, fmt.Errorf("dial ctnetlink: %w", err)
	}
	return newExpecter(conn, cfg), nil
}

func newExpecter(conn *netlink.Conn, cfg *ExpecterConfig) *Expecter {
	if cfg == nil {
		cfg = &ExpecterConfig{}
	}
	return &Expecter{conn: conn, timeout: cfg.Timeout}
}

// Create makes the expectation e, or refreshes an identical one. Errors
// wrap the kernel's errno: unix.ENOENT when the control connection is not
// in conntrack (conntrack not tracking in that namespace, or a tuple of
// the wrong leg), unix.EOPNOTSUPP when it has no helper attached,
// unix.EINVAL for a malformed request.
func (x *Expecter) Create(e Expectation) error {
	msg, err := expectMessage(e, true, 0)
	if err != nil {
		return err
	}
	var upd netlink.Message
	if x.timeout > 0 {
		if upd, err = expectMessage(e, false, x.timeout); err != nil {
			return err
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, err := x.conn.Execute(msg); err != nil {
		return fmt.Errorf("create expectation %v: %w", e, err)
	}
	if x.timeout > 0 {
		if _, err := x.conn.Execute(upd); err != nil {
			// The expectation exists, with the helper's timeout.
			return fmt.Errorf("set the timeout of expectation %v: %w", e, err)
		}
	}
	return nil
}

// Liberal makes conntrack's TCP window tracking liberal for the control
// connection client -> server (its original direction, on the leg the
// daemon rewrites).
//
// The daemon rewrites both directions of that leg before conntrack: a
// reply in the client's sequence space, but the client's acknowledgements
// of it mapped back into the server's space. When a rewrite shortens a
// reply (227 -> 229), conntrack then sees the client acknowledge bytes it
// never saw sent and marks those packets INVALID; a firewall that admits
// only "established,related" drops them and the control connection stalls
// (measured through Tayga on Linux 6.18). Liberal tracking, per
// connection, is what net.netfilter.nf_conntrack_tcp_be_liberal=1 does for
// all connections.
func (x *Expecter) Liberal(client, server netip.AddrPort) error {
	msg, err := liberalMessage(client, server)
	if err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, err := x.conn.Execute(msg); err != nil {
		return fmt.Errorf("liberal tracking of %v -> %v: %w", client, server, err)
	}
	return nil
}

// Close closes the socket. Expectations stay in the kernel until they are
// used or time out.
func (x *Expecter) Close() error {
	return x.conn.Close()
}
