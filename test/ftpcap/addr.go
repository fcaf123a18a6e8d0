package ftpcap

import "net/netip"

// Leg is one control connection as seen on one side of the translator: the
// client's and the server's endpoints in that side's address family.
type Leg struct {
	Client, Server netip.AddrPort
}

// Is6 says whether the leg carries IPv6 packets.
func (l Leg) Is6() bool { return l.Client.Addr().Is6() && !l.Client.Addr().Is4In6() }

// Session is one control connection through a stateless translator
// (Tayga): the same connection on its IPv4 leg and on its IPv6 leg. Ports
// are the same on both legs.
type Session struct {
	V4, V6 Leg
}

// Leg returns the IPv6 leg when v6 is true, the IPv4 leg otherwise.
func (s Session) Leg(v6 bool) Leg {
	if v6 {
		return s.V6
	}
	return s.V4
}

// The addressing of the project's Tayga lab (tayga.conf: prefix
// 2001:db8:64::/96, ipv4-addr 192.168.255.1, dynamic-pool
// 192.168.255.0/24, map 203.0.113.10 2001:db8:1::10) with one more static
// map for an IPv6 client, 192.168.254.20 2001:db8:2::20, outside the
// dynamic pool: Tayga 0.9.2 accepts a map inside its pool (the longer
// prefix wins), but ftpalg's tayga.conf parser refuses one.
var (
	// Prefix is the translator's NAT64 prefix.
	Prefix = netip.MustParsePrefix("2001:db8:64::/96")

	// Server6 is the IPv6 FTP server of 46 sessions; IPv4 clients reach it
	// as Server6As4 through a static map.
	Server6    = netip.MustParseAddr("2001:db8:1::10")
	Server6As4 = netip.MustParseAddr("203.0.113.10")
	// Client4 is the IPv4 client of 46 sessions; the server sees it as
	// Client4As6 (Prefix::Client4).
	Client4    = netip.MustParseAddr("192.0.2.10")
	Client4As6 = netip.MustParseAddr("2001:db8:64::c000:20a")

	// Server4 is the IPv4 FTP server of 64 sessions; IPv6 clients dial
	// Server4As6 (Prefix::Server4).
	Server4    = netip.MustParseAddr("198.51.100.10")
	Server4As6 = netip.MustParseAddr("2001:db8:64::c633:640a")
	// Client6 is the IPv6 client of 64 sessions, statically mapped to
	// Client6As4 so captures are deterministic.
	Client6    = netip.MustParseAddr("2001:db8:2::20")
	Client6As4 = netip.MustParseAddr("192.168.254.20")
	// DynClient6 is an IPv6 client that gets an address from the dynamic
	// pool (see TaygaDynamicMap).
	DynClient6    = netip.MustParseAddr("2001:db8:2::10")
	DynClient6As4 = netip.MustParseAddr("192.168.255.77")
)

// TaygaConf is the tayga.conf of the addressing above, without data-dir
// (Tayga wants an absolute path there: append one).
const TaygaConf = `# tayga.conf of the ftpcap test addressing
tun-device nat64
ipv4-addr 192.168.255.1
ipv6-addr 2001:db8:ffff::1
prefix 2001:db8:64::/96
dynamic-pool 192.168.255.0/24
map 203.0.113.10 2001:db8:1::10
map 192.168.254.20 2001:db8:2::20
`

// TaygaDynamicMap is a dynamic.map (Tayga's data-dir) that gives
// DynClient6 the pool address DynClient6As4. Tayga writes one line per
// entry: IPv4 address, IPv6 address, last use in seconds since the epoch.
const TaygaDynamicMap = "192.168.255.77 2001:db8:2::10 1767225600\n"

// Session46 is an IPv4 client talking to the IPv6 server with the given
// client port (draft-tsou-behave-ftp46).
func Session46(clientPort uint16) Session {
	return Session{
		V4: Leg{netip.AddrPortFrom(Client4, clientPort), netip.AddrPortFrom(Server6As4, 21)},
		V6: Leg{netip.AddrPortFrom(Client4As6, clientPort), netip.AddrPortFrom(Server6, 21)},
	}
}

// Session64 is the statically mapped IPv6 client talking to the IPv4
// server with the given client port (RFC 6384).
func Session64(clientPort uint16) Session {
	return Session{
		V6: Leg{netip.AddrPortFrom(Client6, clientPort), netip.AddrPortFrom(Server4As6, 21)},
		V4: Leg{netip.AddrPortFrom(Client6As4, clientPort), netip.AddrPortFrom(Server4, 21)},
	}
}

// Session64Dyn is like Session64 for the dynamically mapped client.
func Session64Dyn(clientPort uint16) Session {
	return Session{
		V6: Leg{netip.AddrPortFrom(DynClient6, clientPort), netip.AddrPortFrom(Server4As6, 21)},
		V4: Leg{netip.AddrPortFrom(DynClient6As4, clientPort), netip.AddrPortFrom(Server4, 21)},
	}
}
