package conntrackx

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/ftpalg/ftpalg/mangle/tayga"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
)

// TaygaConntrackConfig configures a TaygaConntrack. A nil
// *TaygaConntrackConfig means defaults.
type TaygaConntrackConfig struct {
	// Prefix is Tayga's RFC 6052 prefix ("prefix" in tayga.conf). Required.
	Prefix netip.Prefix
	// Pool is Tayga's "dynamic-pool", if known. Lookup6 then answers only
	// for a client inside it and Lookup4 only with an address inside it,
	// which keeps an ordinary IPv4 host that happens to use the same
	// source port off the answers.
	Pool netip.Prefix
	// Guess, if set, proposes the pool address of an IPv6 host (the
	// mapper's PredictDynamic). Lookup4 first asks conntrack for that
	// exact flow (one Get) and dumps the IPv4 table only if it is not
	// there. tayga.Load hands the resolver its mapper:
	//
	//	l, err := tayga.Load(path, func(cfg *tayga.Config, m *tayga.Mapper) (tayga.DynamicResolver, error) {
	//		return conntrackx.DialTaygaConntrack(&conntrackx.TaygaConntrackConfig{
	//			Prefix: cfg.Prefix, Pool: cfg.DynamicPool, Guess: m.PredictDynamic,
	//		})
	//	})
	Guess func(v6 netip.Addr) netip.Addr
	// NetNS is a network namespace file descriptor (the namespace Tayga
	// forwards in); 0 means the current one. No goroutine switches
	// namespace: the socket is opened in it.
	NetNS int
}

// TaygaConntrack finds the dynamic-pool bindings of a Tayga NAT64 in the
// conntrack table of the namespace Tayga forwards in. It implements
// tayga.DynamicResolver.
//
// Tayga is userspace over a TUN device, so both legs of a translated
// connection are ordinary forwarded flows in that namespace, and Tayga
// keeps ports: an IPv6 client C6:cport talking to Pref::S4:sport appears as
// C6:cport -> Pref::S4:sport on the IPv6 leg and as C4':cport -> S4:sport
// on the IPv4 leg, where C4' is the pool address Tayga gave C6. The
// lookups match the two legs on (server, client port, server port).
//
// Conntrack must be tracking in that namespace: the kernel tracks only
// once some rule there uses conntrack (ftpalg's rules or any "ct state"
// rule of the firewall).
//
// Cost: a lookup the Guess gets right is one netlink round trip; any
// other is a dump of one family's whole conntrack table, filtered here
// (the kernel's dump filter cannot select by address or port through
// ti-mo/conntrack v0.6.0), and a dump of the other family when the
// control connection's own other leg is missing. Lookups happen once
// per new control connection of an unknown pool host; the mapper
// remembers the answers.
//
// It is safe for concurrent use: requests are serialized on one socket.
type TaygaConntrack struct {
	cfg TaygaConntrackConfig

	mu   sync.Mutex
	conn *conntrack.Conn
}

var _ tayga.DynamicResolver = (*TaygaConntrack)(nil)

// DialTaygaConntrack opens a conntrack socket as cfg says.
func DialTaygaConntrack(cfg *TaygaConntrackConfig) (*TaygaConntrack, error) {
	if cfg == nil || !cfg.Prefix.IsValid() {
		return nil, errors.New("tayga conntrack: prefix required")
	}
	if _, ok := mangle.EmbedRFC6052(cfg.Prefix, netip.AddrFrom4([4]byte{192, 0, 2, 1})); !ok {
		return nil, fmt.Errorf("tayga conntrack: %v is not an RFC 6052 prefix", cfg.Prefix)
	}
	c, err := conntrack.Dial(&netlink.Config{NetNS: cfg.NetNS})
	if err != nil {
		return nil, fmt.Errorf("tayga conntrack: dial: %w", err)
	}
	return &TaygaConntrack{cfg: *cfg, conn: c}, nil
}

// Close closes the conntrack socket.
func (t *TaygaConntrack) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conn.Close()
}

// Lookup6 implements tayga.DynamicResolver: the IPv6 host behind the
// pool address of the IPv4-leg flow client4:cport -> server4:sport. It
// looks for that flow's IPv6 leg, C6:cport -> Pref::S4:sport, and if it
// is not there (yet, or any more), for the IPv6 leg of any other TCP or
// UDP flow of client4 through Tayga. It answers false if no flow or more
// than one host matches, or on any error.
func (t *TaygaConntrack) Lookup6(client4, server4 netip.AddrPort) (netip.Addr, bool) {
	for _, fs := range dumpPasses {
		if a, ok := t.lookup6(client4, server4, fs); ok {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (t *TaygaConntrack) lookup6(client4, server4 netip.AddrPort, fs [2]conntrack.Filter) (netip.Addr, bool) {
	c4, s4 := client4.Addr().Unmap(), server4.Addr().Unmap()
	if !c4.Is4() || !s4.Is4() || (t.cfg.Pool.IsValid() && !t.cfg.Pool.Contains(c4)) {
		return netip.Addr{}, false
	}
	dst, ok := mangle.EmbedRFC6052(t.cfg.Prefix, s4)
	if !ok {
		return netip.Addr{}, false
	}
	host6 := func(src netip.Addr) bool { return src.Is6() && !src.Is4In6() && !t.cfg.Prefix.Contains(src) }
	flows6, err := t.dump(fs[1])
	if err != nil {
		return netip.Addr{}, false
	}
	if a, ok := unique(flows6, dst, client4.Port(), server4.Port(), host6); ok {
		return a, true
	}
	flows4, err := t.dump(fs[0])
	if err != nil {
		return netip.Addr{}, false
	}
	return join(flows4, c4, identity4, flows6, t.extract, host6)
}

// Lookup4 implements tayga.DynamicResolver: the pool address Tayga gave
// the IPv6 host of the IPv6-leg flow client6:cport -> Pref::S4:sport. It
// looks for that flow's IPv4 leg, C4':cport -> S4:sport (first with one
// Get on the Guess, if any), and if it is not there (yet: on the IPv6 leg
// a SYN reaches the ALG before Tayga has translated it), for the IPv4 leg
// of any other TCP or UDP flow of client6 through Tayga. It answers false
// if no flow or more than one address matches, or on any error.
func (t *TaygaConntrack) Lookup4(client6, server6 netip.AddrPort) (netip.Addr, bool) {
	c6 := client6.Addr()
	if !c6.Is6() || c6.Is4In6() {
		return netip.Addr{}, false
	}
	s4, ok := mangle.ExtractRFC6052(t.cfg.Prefix, server6.Addr())
	if !ok {
		return netip.Addr{}, false
	}
	inPool := func(src netip.Addr) bool {
		return src.Is4() && (!t.cfg.Pool.IsValid() || t.cfg.Pool.Contains(src))
	}
	if t.cfg.Guess != nil {
		if g := t.cfg.Guess(c6); g.IsValid() && inPool(g) && t.exists(g, client6.Port(), s4, server6.Port()) {
			return g, true
		}
	}
	for _, fs := range dumpPasses {
		if a, ok := t.lookup4(c6, s4, client6, server6, inPool, fs); ok {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (t *TaygaConntrack) lookup4(c6, s4 netip.Addr, client6, server6 netip.AddrPort, inPool func(netip.Addr) bool, fs [2]conntrack.Filter) (netip.Addr, bool) {
	flows4, err := t.dump(fs[0])
	if err != nil {
		return netip.Addr{}, false
	}
	if a, ok := unique(flows4, s4, client6.Port(), server6.Port(), inPool); ok {
		return a, true
	}
	flows6, err := t.dump(fs[1])
	if err != nil {
		return netip.Addr{}, false
	}
	return join(flows6, c6, t.extract, flows4, identity4, inPool)
}

func (t *TaygaConntrack) extract(a netip.Addr) (netip.Addr, bool) {
	return mangle.ExtractRFC6052(t.cfg.Prefix, a)
}

func identity4(a netip.Addr) (netip.Addr, bool) {
	a = a.Unmap()
	return a, a.Is4()
}

// legKey names a flow by what Tayga keeps from one leg to the other: the
// protocol, both ports and the IPv4 address of the far end.
type legKey struct {
	proto        uint8
	sport, dport uint16
	far4         netip.Addr
}

// join finds host's address on the other leg: the keys of host's TCP and
// UDP flows in from (far4 maps their destination to IPv4) are looked up
// among the flows of the other leg, whose sources ok accepts. The answer
// must be unique.
func join(from []conntrack.Flow, host netip.Addr, far4 func(netip.Addr) (netip.Addr, bool),
	to []conntrack.Flow, toFar4 func(netip.Addr) (netip.Addr, bool), ok func(netip.Addr) bool) (netip.Addr, bool) {
	keys := map[legKey]bool{}
	for i := range from {
		o := &from[i].TupleOrig
		if o.IP.SourceAddress.Unmap() != host || (o.Proto.Protocol != protoTCP && o.Proto.Protocol != protoUDP) {
			continue
		}
		if d, isTrans := far4(o.IP.DestinationAddress); isTrans {
			keys[legKey{o.Proto.Protocol, o.Proto.SourcePort, o.Proto.DestinationPort, d}] = true
		}
	}
	if len(keys) == 0 {
		return netip.Addr{}, false
	}
	var found netip.Addr
	for i := range to {
		o := &to[i].TupleOrig
		d, isTrans := toFar4(o.IP.DestinationAddress)
		if !isTrans || !keys[legKey{o.Proto.Protocol, o.Proto.SourcePort, o.Proto.DestinationPort, d}] {
			continue
		}
		src := o.IP.SourceAddress.Unmap()
		if !ok(src) {
			continue
		}
		if found.IsValid() && found != src {
			return netip.Addr{}, false
		}
		found = src
	}
	return found, found.IsValid()
}

// exists asks conntrack for one TCP flow by its original tuple.
func (t *TaygaConntrack) exists(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) bool {
	q := conntrack.Flow{TupleOrig: conntrack.Tuple{
		IP:    conntrack.IPTuple{SourceAddress: src, DestinationAddress: dst},
		Proto: conntrack.ProtoTuple{Protocol: protoTCP, SourcePort: sport, DestinationPort: dport},
	}}
	t.mu.Lock()
	defer t.mu.Unlock()
	f, err := t.conn.Get(q)
	return err == nil && f.TupleOrig.IP.SourceAddress == src
}

func (t *TaygaConntrack) dump(f conntrack.Filter) ([]conntrack.Flow, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conn.DumpFilter(f, nil)
}

// Address families for conntrack dumps (AF_INET, AF_INET6) and TCP.
const (
	afInet   = 2
	afInet6  = 10
	protoTCP = 6
	protoUDP = 17
)

// dumpPasses are the filters (IPv4, IPv6) of the dumps a lookup makes, in
// order. First only assured flows (a completed handshake, or a connection
// conntrack picked up whose other side answered), filtered in the kernel
// (Linux 5.15 and later; older kernels ignore the filter): under a flood
// of spoofed SYNs or garbage segments the table holds hundreds of
// thousands of unassured flows, and dumping them all cost the daemon about
// 100 MB for one lookup (measured with 'make flood'). A control
// connection the daemon first meets at its greeting, or in the middle
// after a restart, is assured on both legs. Then every flow, for a
// connection met at its SYN (fail-closed rules queue the handshake too).
var dumpPasses = [][2]conntrack.Filter{
	{
		conntrack.NewFilter().Family(afInet).Status(conntrack.StatusAssured),
		conntrack.NewFilter().Family(afInet6).Status(conntrack.StatusAssured),
	},
	{conntrack.NewFilter().Family(afInet), conntrack.NewFilter().Family(afInet6)},
}

// unique returns the one source address, accepted by ok, of the TCP
// flows to dst:dport from port sport.
func unique(flows []conntrack.Flow, dst netip.Addr, sport, dport uint16, ok func(netip.Addr) bool) (netip.Addr, bool) {
	var found netip.Addr
	for i := range flows {
		o := &flows[i].TupleOrig
		if o.Proto.Protocol != protoTCP || o.Proto.SourcePort != sport || o.Proto.DestinationPort != dport ||
			o.IP.DestinationAddress.Unmap() != dst {
			continue
		}
		src := o.IP.SourceAddress.Unmap()
		if !ok(src) {
			continue
		}
		if found.IsValid() && found != src {
			return netip.Addr{}, false // two clients: do not guess
		}
		found = src
	}
	return found, found.IsValid()
}
