package mangle

import (
	"net/netip"
)

// Kind is the kind of a translated FTP session.
type Kind uint8

const (
	// KindNone is a connection the ALG does not translate.
	KindNone Kind = iota
	// Kind46 is an IPv4 client talking to an IPv6 server (draft-tsou-behave-ftp46).
	Kind46
	// Kind64 is an IPv6 client talking to an IPv4 server (RFC 6384).
	Kind64
)

func (k Kind) String() string {
	switch k {
	case Kind46:
		return "46"
	case Kind64:
		return "64"
	}
	return "none"
}

// Dir is the direction of a packet within a control connection.
type Dir uint8

const (
	// ToServer carries commands, from the FTP client to the FTP server.
	ToServer Dir = iota
	// ToClient carries replies, from the FTP server to the FTP client.
	ToClient
)

func (d Dir) String() string {
	if d == ToServer {
		return "client->server"
	}
	return "server->client"
}

// Session describes a translated control connection: its kind and the
// addresses of both ends as each side of the translator knows them.
//
// Names follow docs/PROTOCOL.md. In a 46 session Client4 is the IPv4 client C4,
// Client6 the address the IPv6 server sees for it (Pref::C4), Server6 the
// IPv6 server S6 and Server4 the IPv4 address the client dialled (S4). In a
// 64 session Client6 is the IPv6 client C6, Client4 the IPv4 address the
// server sees for it (C4'), Server4 the IPv4 server S4 and Server6 the
// address the client dialled (Pref::S4).
//
// An address the mapper cannot know yet (for example a dynamic-pool
// client's IPv6 address seen only from the IPv4 leg) is the zero
// netip.Addr; rewrites that need it are then not made.
type Session struct {
	Kind             Kind
	Client4, Client6 netip.Addr
	Server4, Server6 netip.Addr
}

// DataMode says which data-channel endpoint a rewrite needs (the rows of
// docs/PROTOCOL.md in brackets).
type DataMode uint8

const (
	// Passive46: the IPv6 server announced S6:p6 in a 229 reply; the IPv4
	// client must be told S4:p4 (always on Session.Server4). [P46-1, P46-2]
	Passive46 DataMode = iota + 1
	// Active46: the IPv4 client named C4:p in PORT/EPRT |1|; the IPv6 server
	// must be told an IPv6 endpoint (Pref::C4:p through a stateless path).
	// [P46-4, P46-5]
	Active46
	// Passive64: the IPv4 server announced S4:p in a 227 reply; the IPv6
	// client must be told a port on Session.Server6. [P64-1, P64-10]
	Passive64
	// Active64: the IPv6 client named C6:p in EPRT |2|/LPRT; the IPv4 server
	// must be told C4':p4 (always on Session.Client4). [P64-4, P64-11]
	Active64
)

func (m DataMode) String() string {
	switch m {
	case Passive46:
		return "passive46"
	case Active46:
		return "active46"
	case Passive64:
		return "passive64"
	case Active64:
		return "active64"
	}
	return "unknown"
}

// DataRequest asks the Mapper for the far side of a data channel.
type DataRequest struct {
	Session Session
	Mode    DataMode
	// Target is the endpoint the message named, in its own family. The
	// engine checked it belongs to the control connection's own peer,
	// except for Active64 when Session.Client6 is unknown: a Mapper that
	// creates state toward the target must then check it itself.
	Target netip.AddrPort
	// Client and Server are the control connection's endpoints on the leg
	// the engine sees (for a pinhole or expectation keyed on it).
	Client, Server netip.AddrPort
	// Long says the exchange is RFC 1639's (LPSV and its 228, or LPRT),
	// which the kernel's FTP conntrack helper does not parse: a Mapper
	// that opens firewall pinholes must then open the other leg's too.
	Long bool
}

// Mapper translates addresses between the two sides of a NAT64 and sets up
// data-channel mappings. The engine owns this interface; the Tayga
// implementation lives in this package (pure), kernel-backed ones
// (Jool static BIB entries, conntrack lookups) in conntrackx.
//
// Implementations are called from the packet path: they must not block for
// long, and they must be safe for use by one engine (the engine never calls
// them concurrently; a daemon with several queues has one engine per queue
// and shares a Mapper that must then be safe for concurrent use).
type Mapper interface {
	// Classify resolves a control connection seen on one leg of the
	// translator, from its client to its server (both endpoints in that
	// leg's family), into a Session. ok is false for a connection the
	// translator does not translate (the engine then passes it untouched).
	// The engine calls it once per new flow; the ports let a stateful
	// backend find the flow in the translator's or conntrack's tables.
	Classify(client, server netip.AddrPort) (s Session, ok bool)

	// MapData returns the endpoint, in the other family, that the far peer
	// must use to reach req.Target, creating whatever mapping the translator
	// needs. Calling it twice for the same target and session returns the
	// same endpoint. An error leaves the message untranslated (or answered
	// with 425 where the command was already translated).
	MapData(req DataRequest) (netip.AddrPort, error)
}

// LengthWatcher is an optional interface of a Mapper. The engine calls
// LengthChanged once per control connection, when it first rewrites a line
// into one of another length, before the packet carrying it is sent:
// from then on the numbers the two peers use differ, which a stateful
// firewall on the rewritten leg has to be told (conntrack's window
// tracking made liberal, say). client and server are the connection's
// endpoints on the engine's leg.
type LengthWatcher interface {
	LengthChanged(client, server netip.AddrPort)
}

// ActiveChecker is an optional interface of a Mapper. The engine calls
// CanMapActive64 to learn whether MapData can map an EPRT (Active64) of
// session s: Jool, for one, cannot without a port range reserved for the
// ALG. When it says no, EPRT and LPRT pass unchanged and ALGS answers the
// token EPSV (RFC 6384 section 11: the token must be true). A Mapper that
// does not implement it can map every EPRT.
type ActiveChecker interface {
	CanMapActive64(s Session) bool
}
