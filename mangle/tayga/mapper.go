package tayga

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"sync"

	"github.com/ftpalg/ftpalg/mangle"
)

// taygaEmbed is Tayga's append_to_prefix: RFC 6052 embedding with its
// validity and well-known-prefix rules.
func taygaEmbed(prefix netip.Prefix, v4 netip.Addr, wkStrict bool) (netip.Addr, bool) {
	if !taygaPrefixable4(v4, wkStrict) {
		return netip.Addr{}, false
	}
	return mangle.EmbedRFC6052(prefix, v4)
}

// taygaPrefixable4 says whether Tayga translates the IPv4 address a
// through its prefix: not reserved, not link-local (append_to_prefix and
// extract_from_prefix drop 169.254.0.0/16 although a map may use it), and
// global if the prefix is the well-known one and wkpf-strict is on.
func taygaPrefixable4(a netip.Addr, wkStrict bool) bool {
	b := a.As4()
	return !taygaReserved4(a) && !(b[0] == 169 && b[1] == 254) && !(wkStrict && taygaNonGlobal4(a))
}

// DynamicResolver tells a dynamic-pool host's other address; the daemon
// backs it with conntrack.
type DynamicResolver interface {
	// Lookup6 returns the IPv6 address of the dynamic-pool client whose
	// control connection is client4 -> server4 on the IPv4 leg (client4 is
	// the pool address).
	Lookup6(client4, server4 netip.AddrPort) (netip.Addr, bool)
	// Lookup4 returns the pool address Tayga gave the IPv6 host client6
	// whose control connection is client6 -> server6 on the IPv6 leg.
	Lookup4(client6, server6 netip.AddrPort) (netip.Addr, bool)
}

// Mapper is a Mapper for Tayga. It is pure (no syscalls), safe for
// concurrent use, and allocates nothing in Classify and MapData once its
// dynamic bindings are known.
type Mapper struct {
	prefix   netip.Prefix
	wkStrict bool // prefix is the well-known prefix and wkpf-strict is on
	maps     []Map
	pool     netip.Prefix
	own4     netip.Addr
	own6     netip.Addr
	res      DynamicResolver

	mu   sync.RWMutex
	dyn4 map[netip.Addr]netip.Addr // pool address -> IPv6 host
	dyn6 map[netip.Addr]netip.Addr // IPv6 host -> pool address
}

var _ mangle.Mapper = (*Mapper)(nil)

// NewMapper returns a mapper for the Tayga configured by cfg (as
// ParseConfig returns it). res may be nil: dynamic-pool hosts are then
// known only through Learn, LoadDynamicMap and PredictDynamic.
func NewMapper(cfg *Config, res DynamicResolver) *Mapper {
	m := &Mapper{
		prefix:   cfg.Prefix,
		wkStrict: cfg.WKPFStrict && cfg.Prefix == wkpf,
		maps:     append([]Map(nil), cfg.Maps...),
		pool:     cfg.DynamicPool,
		own4:     cfg.IPv4Addr,
		own6:     cfg.IPv6Addr,
		res:      res,
		dyn4:     map[netip.Addr]netip.Addr{},
		dyn6:     map[netip.Addr]netip.Addr{},
	}
	if !m.own6.IsValid() && m.own4.IsValid() {
		m.own6, _ = mangle.EmbedRFC6052(m.prefix, m.own4)
	}
	return m
}

// Learn remembers that Tayga gave the IPv6 host v6 the pool address v4
// (from dynamic.map or the resolver). A newer binding of either address
// replaces the older one. Addresses outside the dynamic pool, or that a
// static map or the prefix already covers, are ignored.
func (m *Mapper) Learn(v4, v6 netip.Addr) {
	v4 = v4.Unmap()
	if !m.learnable(v4, v6) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.dyn4[v4]; ok {
		delete(m.dyn6, old)
	}
	if old, ok := m.dyn6[v6]; ok {
		delete(m.dyn4, old)
	}
	m.dyn4[v4] = v6
	m.dyn6[v6] = v4
}

// learnable says whether v4 -> v6 can be a dynamic-pool binding.
func (m *Mapper) learnable(v4, v6 netip.Addr) bool {
	if !v4.Is4() || !v6.Is6() || v6.Is4In6() || !m.pool.Contains(v4) || v4 == m.own4 || v4 == m.pool.Addr() ||
		m.prefix.Contains(v6) || v6 == m.own6 {
		return false
	}
	_, static := m.static6(v6)
	return !static
}

// LoadDynamicMap reads Tayga's data-dir/dynamic.map (dynamic.c:
// "ipv4<TAB>ipv6<TAB>last-use-unix-seconds" lines, "#" comments) and
// learns the bindings in it. Tayga writes that file on exit and at most
// every few days while running, so it may be stale: a newer binding
// learned later replaces it. Like Tayga's load_map it skips malformed
// lines, bindings outside the pool or covered by a static map or the
// prefix, and a second line for the same IPv4 address; of two lines for
// the same IPv6 host the most recently used wins (Tayga revives that
// one). It returns an error naming the first malformed line after
// learning the others. Lease expiry (Tayga forgets dormant bindings after
// 14 days) is not applied.
func (m *Mapper) LoadDynamicMap(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	type binding struct {
		v4, v6 netip.Addr
		used   int64
	}
	var (
		bad      error
		bindings []binding
		seen4    = map[netip.Addr]bool{}
		at6      = map[netip.Addr]int{}
	)
	ln := 0
	for sc.Scan() {
		ln++
		f := taygaFields(sc.Text())
		if len(f) == 0 {
			continue
		}
		v4, err4 := netip.ParseAddr(f[0])
		var v6 netip.Addr
		var err6 error
		if len(f) > 1 {
			v6, err6 = netip.ParseAddr(f[1])
		}
		var t int64
		errt := strconv.ErrSyntax
		if len(f) > 2 {
			t, errt = strconv.ParseInt(f[2], 10, 64)
		}
		if len(f) != 3 || err4 != nil || !v4.Is4() || err6 != nil || !v6.Is6() || v6.Is4In6() ||
			errt != nil || t <= 0 {
			if bad == nil {
				bad = fmt.Errorf("dynamic.map:%d: malformed line %q", ln, sc.Text())
			}
			continue
		}
		if !m.learnable(v4, v6) || seen4[v4] {
			continue
		}
		seen4[v4] = true
		if i, ok := at6[v6]; ok {
			if t > bindings[i].used {
				bindings[i] = binding{v4, v6, t}
			}
			continue
		}
		at6[v6] = len(bindings)
		bindings = append(bindings, binding{v4, v6, t})
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read dynamic.map: %w", err)
	}
	for _, b := range bindings {
		m.Learn(b.v4, b.v6)
	}
	return bad
}

// static4 maps an IPv4 address through the static maps.
func (m *Mapper) static4(a netip.Addr) (netip.Addr, bool) {
	for i := range m.maps {
		mp := &m.maps[i]
		if mp.V4.Contains(a) {
			host := u32(a) & hostMask4(mp.V4.Bits())
			b := mp.V6.Addr().As16()
			binary.BigEndian.PutUint32(b[12:], binary.BigEndian.Uint32(b[12:])|host)
			return netip.AddrFrom16(b), true
		}
	}
	return netip.Addr{}, false
}

// staticBits4 reports whether a static map covers a, and its length.
func (m *Mapper) staticBits4(a netip.Addr) (int, bool) {
	for i := range m.maps {
		if m.maps[i].V4.Contains(a) {
			return m.maps[i].V4.Bits(), true
		}
	}
	return 0, false
}

// static6 maps an IPv6 address through the static maps.
func (m *Mapper) static6(a netip.Addr) (netip.Addr, bool) {
	for i := range m.maps {
		mp := &m.maps[i]
		if mp.V6.Contains(a) {
			b := a.As16()
			host := binary.BigEndian.Uint32(b[12:]) & hostMask4(mp.V4.Bits())
			var o [4]byte
			binary.BigEndian.PutUint32(o[:], u32(mp.V4.Addr())|host)
			return netip.AddrFrom4(o), true
		}
	}
	return netip.Addr{}, false
}

// u32 is an IPv4 address as a number.
func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func hostMask4(bits int) uint32 {
	if bits >= 32 {
		return 0
	}
	return ^uint32(0) >> bits
}

// addr4 classes, from Tayga's point of view.
type class4 uint8

const (
	c4Untranslated class4 = iota // reserved, or refused by wkpf-strict
	c4Plain                      // an ordinary IPv4 host: Prefix::a
	c4Static                     // in a static map
	c4Pool                       // in the dynamic pool
	c4Own                        // Tayga's ipv4-addr
)

func (m *Mapper) class4(a netip.Addr) class4 {
	if a == m.own4 {
		return c4Own
	}
	// Tayga keeps static maps and the dynamic pool in one table and
	// takes the longest match: a map inside the pool wins over it, a
	// map around the pool loses to it.
	bits, static := m.staticBits4(a)
	if m.pool.Contains(a) && (!static || bits <= m.pool.Bits()) {
		return c4Pool
	}
	if static {
		return c4Static
	}
	if !taygaPrefixable4(a, m.wkStrict) {
		return c4Untranslated
	}
	return c4Plain
}

// extract returns the IPv4 host that an address in the prefix stands
// for, with Tayga's rules: valid, allowed by wkpf-strict, and not an
// address some other map covers (Tayga drops that hairpin).
func (m *Mapper) extract(a netip.Addr) (netip.Addr, bool) {
	v4, ok := mangle.ExtractRFC6052(m.prefix, a)
	if !ok || m.class4(v4) != c4Plain {
		return netip.Addr{}, false
	}
	return v4, true
}

func (m *Mapper) learned4(v4 netip.Addr) (netip.Addr, bool) {
	m.mu.RLock()
	v6, ok := m.dyn4[v4]
	m.mu.RUnlock()
	return v6, ok
}

func (m *Mapper) learned6(v6 netip.Addr) (netip.Addr, bool) {
	m.mu.RLock()
	v4, ok := m.dyn6[v6]
	m.mu.RUnlock()
	return v4, ok
}

// To6 maps an IPv4 address to IPv6 as Tayga would: static map, then a
// known dynamic binding, else the prefix. It does not ask the resolver.
func (m *Mapper) To6(v4 netip.Addr) (netip.Addr, bool) {
	v4 = v4.Unmap()
	if !v4.Is4() {
		return netip.Addr{}, false
	}
	switch m.class4(v4) {
	case c4Own:
		return m.own6, m.own6.IsValid()
	case c4Static:
		return m.static4(v4)
	case c4Pool:
		return m.learned4(v4)
	case c4Plain:
		return mangle.EmbedRFC6052(m.prefix, v4)
	}
	return netip.Addr{}, false
}

// To4 maps an IPv6 address to IPv4 as Tayga would: the prefix, then a
// static map, then a known dynamic binding. It neither asks the resolver
// nor predicts.
func (m *Mapper) To4(v6 netip.Addr) (netip.Addr, bool) {
	if !v6.Is6() || v6.Is4In6() {
		return netip.Addr{}, false
	}
	switch {
	case v6 == m.own6:
		return m.own4, true
	case m.prefix.Contains(v6):
		return m.extract(v6)
	}
	if v4, ok := m.static6(v6); ok {
		return v4, true
	}
	return m.learned6(v6)
}

// Classify implements Mapper (names as in mangle.Session). On the IPv4 leg a client in a static map or the dynamic pool talking to an
// ordinary IPv4 server is a 64 session, an ordinary IPv4 client talking
// to a mapped server a 46 session; on the IPv6 leg a server inside the
// prefix makes a 64 session and a client inside it a 46 session.
// Connections to or from Tayga's own addresses, between two hosts on the
// same side, or with addresses Tayga does not translate are not
// translated (ok false).
func (m *Mapper) Classify(client, server netip.AddrPort) (mangle.Session, bool) {
	c, s := client.Addr().Unmap(), server.Addr().Unmap()
	switch {
	case c.Is4() && s.Is4():
		return m.classify4(client, server, c, s)
	case c.Is6() && s.Is6():
		return m.classify6(client, server, c, s)
	}
	return mangle.Session{}, false
}

func (m *Mapper) classify4(client, server netip.AddrPort, c, s netip.Addr) (mangle.Session, bool) {
	cc, sc := m.class4(c), m.class4(s)
	switch {
	case cc == c4Plain && (sc == c4Static || sc == c4Pool):
		var s6 netip.Addr
		var ok bool
		if sc == c4Static {
			s6, ok = m.static4(s)
		} else {
			// An IPv6 server in the pool: only a known binding helps;
			// the IPv4 client could not have reached it otherwise.
			s6, ok = m.learned4(s)
		}
		if !ok {
			return mangle.Session{}, false
		}
		c6, _ := mangle.EmbedRFC6052(m.prefix, c)
		return mangle.Session{Kind: mangle.Kind46, Client4: c, Client6: c6, Server4: s, Server6: s6}, true
	case sc == c4Plain && (cc == c4Static || cc == c4Pool):
		var c6 netip.Addr
		if cc == c4Static {
			c6, _ = m.static4(c)
		} else if v6, ok := m.learned4(c); ok {
			c6 = v6
		} else if m.res != nil {
			if v6, ok := m.res.Lookup6(netip.AddrPortFrom(c, client.Port()), netip.AddrPortFrom(s, server.Port())); ok {
				m.Learn(c, v6)
				if v4, ok := m.learned6(v6); ok && v4 == c {
					c6 = v6
				}
			}
		}
		s6, _ := mangle.EmbedRFC6052(m.prefix, s)
		return mangle.Session{Kind: mangle.Kind64, Client4: c, Client6: c6, Server4: s, Server6: s6}, true
	}
	return mangle.Session{}, false
}

func (m *Mapper) classify6(client, server netip.AddrPort, c, s netip.Addr) (mangle.Session, bool) {
	if c == m.own6 || s == m.own6 || c.Zone() != "" || s.Zone() != "" {
		return mangle.Session{}, false
	}
	cIn, sIn := m.prefix.Contains(c), m.prefix.Contains(s)
	switch {
	case sIn && !cIn:
		s4, ok := m.extract(s)
		if !ok {
			return mangle.Session{}, false
		}
		c4, ok := m.static6(c)
		if !ok {
			if !m.pool.IsValid() {
				return mangle.Session{}, false // Tayga has no address for this host
			}
			c4 = m.dynamic4(client, server, c)
		}
		return mangle.Session{Kind: mangle.Kind64, Client6: c, Client4: c4, Server6: s, Server4: s4}, true
	case cIn && !sIn:
		c4, ok := m.extract(c)
		if !ok {
			return mangle.Session{}, false
		}
		s4, ok := m.static6(s)
		if !ok {
			if s4, ok = m.learned6(s); !ok {
				return mangle.Session{}, false
			}
		}
		return mangle.Session{Kind: mangle.Kind46, Client6: c, Client4: c4, Server6: s, Server4: s4}, true
	}
	return mangle.Session{}, false
}

// dynamic4 finds the pool address of the IPv6 client c: a known binding,
// the resolver, else Tayga's first choice (PredictDynamic).
func (m *Mapper) dynamic4(client, server netip.AddrPort, c netip.Addr) netip.Addr {
	if v4, ok := m.learned6(c); ok {
		return v4
	}
	if m.res != nil {
		if v4, ok := m.res.Lookup4(netip.AddrPortFrom(c, client.Port()), server); ok && m.pool.Contains(v4.Unmap()) {
			m.Learn(v4.Unmap(), c)
			return v4.Unmap()
		}
	}
	return m.PredictDynamic(c)
}

// PredictDynamic returns the pool address Tayga would give the IPv6 host
// v6 if it assigned one now, or its known binding.
//
// Tayga's assign_dynamic (dynamic.c, the same in 0.9.2 and 0.9.6) is
// deterministic: it folds the sum of the address's four 32-bit words,
// read in the host's byte order, into the pool's host bits (end-around
// carry) and takes the first free address from there upwards, wrapping,
// skipping the pool's network address and addresses other maps cover.
// This reproduces it with what the mapper knows. The prediction is wrong
// when:
//   - another IPv6 host holds that address and the mapper has not
//     learned that binding (Tayga then takes the next free one);
//   - the host had a binding before (from dynamic.map or an earlier,
//     now dormant lease) that the mapper has not learned: Tayga revives
//     the old address;
//   - the pool is full: Tayga takes over the least recently used dormant
//     binding;
//   - Tayga runs on a machine of the other byte order (the hash reads the
//     address in host order; this uses the byte order of the machine
//     running ftpalg).
//
// It returns the zero Addr when there is no dynamic pool or v6 is not an
// IPv6 address Tayga would put in the pool.
func (m *Mapper) PredictDynamic(v6 netip.Addr) netip.Addr {
	if !m.pool.IsValid() || !v6.Is6() || v6.Is4In6() || m.prefix.Contains(v6) || v6 == m.own6 {
		return netip.Addr{}
	}
	if _, ok := m.static6(v6); ok {
		return netip.Addr{}
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if v4, ok := m.dyn6[v6]; ok {
		return v4
	}
	hostBits := uint(32 - m.pool.Bits())
	maxHost := uint32(1)<<hostBits - 1
	b := v6.As16()
	var base uint32
	for i := 0; i < 16; i += 4 {
		base += binary.NativeEndian.Uint32(b[i:])
		for base&^maxHost != 0 {
			base = base&maxHost + base>>hostBits
		}
	}
	net := u32(m.pool.Addr())
	for i := uint32(0); i <= maxHost; i++ {
		a := net | (base+i)&maxHost
		if a == net {
			continue
		}
		var o [4]byte
		binary.BigEndian.PutUint32(o[:], a)
		v4 := netip.AddrFrom4(o)
		if v4 == m.own4 {
			continue
		}
		if _, taken := m.dyn4[v4]; taken {
			continue
		}
		if _, ok := m.static4(v4); ok {
			continue
		}
		return v4
	}
	return netip.Addr{}
}

// MapData implements Mapper. Tayga keeps ports and needs no mapping: the
// far peer is told the same host's address in the other family with the
// same port. It changes no state.
func (m *Mapper) MapData(req mangle.DataRequest) (netip.AddrPort, error) {
	var a netip.Addr
	switch req.Mode {
	case mangle.Passive46:
		a = req.Session.Server4
	case mangle.Active46:
		a = req.Session.Client6
	case mangle.Passive64:
		a = req.Session.Server6
	case mangle.Active64:
		a = req.Session.Client4
	default:
		return netip.AddrPort{}, errTaygaMode
	}
	if !a.IsValid() {
		return netip.AddrPort{}, errTaygaUnknown
	}
	if req.Target.Port() == 0 {
		return netip.AddrPort{}, errTaygaPort
	}
	return netip.AddrPortFrom(a, req.Target.Port()), nil
}

var (
	errTaygaMode    = errors.New("tayga: unknown data mode")
	errTaygaUnknown = errors.New("tayga: the translated address of this session's peer is not known")
	errTaygaPort    = errors.New("tayga: port 0")
)
