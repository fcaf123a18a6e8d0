package jool

// The Jool Mapper: mangle.Mapper for a Jool NAT64, backed by Jool's own
// tables (pool4, BIB, sessions) and by static BIB entries it adds for data
// channels.
//
// Operator setup. The mapper needs explicit pool4 entries (Jool's "empty
// pool4" mode, which borrows interface addresses, cannot be listed) and a
// port range on them reserved for the ALG's static BIB entries, given as
// ReservedPorts (ftpalg run --jool-ports). The range must be in pool4 or
// Jool refuses the entries; give it a mark no packet carries so that Jool's
// own dynamic port allocation (which only uses ranges of the packet's mark)
// never takes ports from it:
//
//	jool pool4 add 192.0.2.1 1024-60999 --tcp             # ordinary NAPT, mark 0
//	jool pool4 add 192.0.2.1 61000-61999 --tcp --mark 4242 # the ALG's range
//
// (`jool pool4 add 192.0.2.1 61000-61999 --tcp` without a mark also works,
// but Jool may then hand those ports to ordinary flows; the mapper skips
// ports it finds taken.) Every static entry inside the reserved range on a
// pool4 address belongs to the ALG: Cleanup removes them at start.
// An IPv6 FTP server reached by IPv4 clients (46) needs the operator's own
// static entry for its control port, for example
// `jool bib add 2001:db8::10#21 192.0.2.1#21 --tcp`: that entry is how the
// mapper recognises a 46 control connection. With an OriginMarker the mapper
// also adds pool4 entries of its own (mapper_origin.go), under marks the
// operator leaves to it.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
)

// Tables is what the Mapper needs from Jool; *Client implements it.
// Protocols are IANA numbers.
type Tables interface {
	BIBAdd(e BIBEntry) error
	BIBRemove(e BIBEntry) error
	BIBList(proto uint8) ([]BIBEntry, error)
	Pool4List(proto uint8) ([]Pool4Entry, error)
	SessionList(proto uint8) ([]SessionEntry, error)
}

// Optional abilities of a Tables (both implemented by *Client).
type (
	joolSessionFinder interface {
		SessionFind(proto uint8, src4, dst4 netip.AddrPort) (SessionEntry, bool, error)
	}
	joolPool6Source interface {
		Pool6() (netip.Prefix, bool, error)
	}
	joolBIBSessions interface {
		BIBSessions(proto uint8, src4 netip.AddrPort) ([]SessionEntry, error)
	}
)

// PeerGuard admits only the control connection's peer through a data-channel
// mapping (rules.PeerGuard: the peer filter in the daemon's nftables table,
// ahead of Jool's hook). A static BIB entry in Jool is endpoint-independent:
// without a guard any IPv4 host could connect through it (RFC 6384 section
// 7.2 asks for the peer only, narrowed to the one data connection).
type PeerGuard interface {
	// Admit lets peer open one TCP connection to mapped (an IPv4 transport
	// address of a static BIB entry) within ttl, and guards mapped
	// against everybody else until Release. Called before the BIB entry
	// is added; an error refuses the mapping.
	Admit(peer netip.Addr, mapped netip.AddrPort, ttl time.Duration) error
	// Release ends the guard of the mapped addresses and what it admitted
	// through them. Called after their BIB entries are removed, once for
	// all the entries one Expire or Close removes.
	Release(mapped ...netip.AddrPort) error
}

// joolPerEntryLookups is how many mappings Expire looks up one by one
// (when the tables can) before it lists the whole session table instead.
const joolPerEntryLookups = 32

// MapperConfig configures a Mapper.
type MapperConfig struct {
	// Tables is the Jool instance. Required.
	Tables Tables
	// Pool6 is the instance's RFC 6052 prefix (`jool global display`).
	// When zero it is read from Tables if Tables can (a *Client can).
	Pool6 netip.Prefix
	// ReservedPorts is the first and last port (inclusive) of the pool4
	// range reserved for the ALG's static BIB entries. Without it the
	// mapper still classifies control connections but cannot map 46
	// passive or 64 active data channels.
	ReservedPorts [2]uint16
	// IdleTimeout removes a mapping whose data connection never came
	// (default 30 s); the guard's admission of the peer lasts as long.
	IdleTimeout time.Duration
	// Guard, if not nil, admits only the control connection's peer
	// through each mapping (46 passive: the IPv4 client; 64 active: the
	// IPv4 server). Without it a mapping is open to any IPv4 host.
	Guard PeerGuard
	// Rand returns a uniform random int in [0, n): which free port of
	// ReservedPorts a new mapping gets. Default: math/rand/v2's IntN
	// (its global generator is ChaCha8, seeded by the runtime from the
	// system's random source), so that a third party cannot predict ports.
	Rand func(n int) int
	// CacheTTL bounds how stale the cached pool4 and static BIB tables may
	// be (default 10 s). A lookup that misses refreshes them sooner.
	CacheTTL time.Duration
	// MaxEntries bounds the static entries the mapper keeps at once
	// (default 4096).
	MaxEntries int
	// TCPTransTimeout is the instance's tcp-trans-timeout (default 4
	// minutes, Jool's default): how long Jool keeps a TCP session after
	// both FINs or a reset. Expire dates finished sessions with it, so
	// that those that finished before a mapping was requested again do
	// not count as the new data connection. Too long a value makes an
	// entry that is requested again in that time go early again (before
	// its new connection came); too short only keeps entries longer.
	TCPTransTimeout time.Duration
	// Origin, if not nil, makes the data connections an IPv6 server opens
	// to the client of a 46 session (active and default mode) leave Jool
	// from the control connection's pool4 address S4 (mapper_origin.go):
	// the mapper adds a pool4 entry of S4 with ReservedPorts under a mark
	// of OriginMarks (one mark per S4), and Origin marks the SYNs from the
	// server to the client with it. Needs ReservedPorts, and Tables that
	// can add and remove pool4 entries.
	Origin OriginMarker
	// OriginTTL is how long the mark of a server and client pair lives
	// after its last control connection was classified or data channel
	// mapped (default 1 hour).
	OriginTTL time.Duration
	// OriginMarks is the first and last (inclusive) packet mark the
	// mapper may give its pool4 entries; every pool4 entry under these
	// marks is the mapper's (CleanupOrigins removes them at start).
	OriginMarks [2]uint32
	// Ledger records the static entries the mapper adds, as it adds and
	// removes them, so that Cleanup in a later run (after a crash)
	// removes those and nothing else. Without one, Cleanup removes
	// nothing: an entry in ReservedPorts may be an operator's.
	Ledger Ledger
}

const (
	defaultJoolIdle       = 30 * time.Second
	defaultJoolCacheTTL   = 10 * time.Second
	defaultJoolMaxEntries = 4096
	defaultJoolTransTime  = 4 * time.Minute
	// joolMissRefresh is how old a cache may be before a miss refreshes it.
	joolMissRefresh = time.Second
	// joolFinishedGrace keeps a mapping whose connections all finished for
	// this long after it was last requested, so that a data channel mapped
	// again (same target) is not removed before its new connection starts.
	joolFinishedGrace = 10 * time.Second
	// joolMaxAddAttempts bounds the BIB adds one mapping may try.
	joolMaxAddAttempts = 8
	// joolMaxCachedStatic bounds the cached static BIB entries.
	joolMaxCachedStatic = 1 << 16
)

// ErrMapperClosed is returned by MapData after Close.
var ErrMapperClosed = errors.New("jool mapper closed")

// Mapper implements mangle.Mapper for Jool, fed the packets of the IPv4
// leg (where Jool's pool4 addresses appear; the IPv6 leg works too):
//
//   - Classify: a control connection to a pool4 address that has a static
//     BIB entry for the server's port is a 46 session (IPv4 client, IPv6
//     server: Server6 from that entry, Client6 = pool6 + client, RFC 6052);
//     one from a pool4 address is a 64 session (Client6 from Jool's session
//     table, Server6 = pool6 + server).
//   - MapData: a 46 passive or 64 active data channel gets a static BIB
//     entry on the control connection's own pool4 address, with a port
//     drawn at random from the free ports of ReservedPorts, guarded by
//     Guard so that only the control connection's IPv4 peer can use it.
//     The same target twice gets the same entry (the peer admitted again).
//     64 passive and 46 active need no entry: the stateless RFC 6052
//     mapping with the same port.
//   - Expire removes entries whose data connections are over or never came
//     (read from Jool's session table: a session belongs to the BIB entry
//     with its Src6 and Src4); Close removes every entry; Cleanup removes
//     those a killed daemon left behind.
//
// It is safe for concurrent use. Calls into Jool are made under one lock.
type Mapper struct {
	mu     sync.Mutex
	t      Tables
	finder joolSessionFinder // nil when t cannot find single sessions
	guard  PeerGuard         // nil: no peer filter
	rand   func(n int) int
	free   []uint16 // scratch: free candidate ports of one mapStatic
	pool6  netip.Prefix
	lo, hi uint16
	idle   time.Duration
	trans  time.Duration
	ttl    time.Duration
	max    int
	now    func() time.Time
	closed bool

	pool4   []Pool4Entry
	pool4At time.Time

	static4  map[netip.AddrPort]BIBEntry // static BIB entries by IPv4 side
	static6  map[netip.AddrPort]BIBEntry // the same by IPv6 side
	staticAt time.Time

	owned map[netip.AddrPort]*joolMapping // by IPv6 side (the target)
	used  map[netip.AddrPort]bool         // IPv4 sides of owned entries

	ledger    Ledger // may be nil
	ledgerErr error  // the last failure to store the ledger, reported by Expire

	// The origin of 46 active data connections (mapper_origin.go); origin
	// is nil without one.
	origin         OriginMarker
	pool4w         joolPool4Writer
	markLo, markHi uint32
	origins        map[netip.Addr]uint32 // S4 -> the mark of our pool4 entry
	originTTL      time.Duration
	marked         map[originPair]time.Time  // when each pair was last marked
	dataPort       map[netip.Addr][]BIBEntry // dynamic entries of 46 servers' port L-1, by server
	unstuck        map[netip.Addr]time.Time  // when unstickDataPort last asked Jool, by server
	originErr      error                     // the last failure, reported by Expire
}

type joolMapping struct {
	entry     BIBEntry
	requested time.Time // last MapData for it
	seen      bool      // a live session was seen on it since
}

var _ mangle.Mapper = (*Mapper)(nil)

// NewMapper returns a mapper over cfg.Tables.
func NewMapper(cfg *MapperConfig) (*Mapper, error) {
	if cfg == nil || cfg.Tables == nil {
		return nil, errors.New("jool mapper: no jool tables")
	}
	m := &Mapper{
		ledger:  cfg.Ledger,
		t:       cfg.Tables,
		guard:   cfg.Guard,
		rand:    cfg.Rand,
		pool6:   cfg.Pool6,
		lo:      cfg.ReservedPorts[0],
		hi:      cfg.ReservedPorts[1],
		idle:    cfg.IdleTimeout,
		trans:   cfg.TCPTransTimeout,
		ttl:     cfg.CacheTTL,
		max:     cfg.MaxEntries,
		now:     time.Now,
		static4: map[netip.AddrPort]BIBEntry{},
		static6: map[netip.AddrPort]BIBEntry{},
		owned:   map[netip.AddrPort]*joolMapping{},
		used:    map[netip.AddrPort]bool{},
	}
	if f, ok := cfg.Tables.(joolSessionFinder); ok {
		m.finder = f
	}
	if m.idle <= 0 {
		m.idle = defaultJoolIdle
	}
	if m.rand == nil {
		m.rand = rand.IntN
	}
	if m.trans <= 0 {
		m.trans = defaultJoolTransTime
	}
	if m.ttl <= 0 {
		m.ttl = defaultJoolCacheTTL
	}
	if m.max <= 0 {
		m.max = defaultJoolMaxEntries
	}
	if m.lo > m.hi || (m.lo == 0 && m.hi != 0) {
		return nil, fmt.Errorf("jool mapper: bad reserved port range %d-%d", m.lo, m.hi)
	}
	if !m.pool6.IsValid() {
		src, ok := cfg.Tables.(joolPool6Source)
		if !ok {
			return nil, errors.New("jool mapper: no pool6 given and none readable from jool")
		}
		p, found, err := src.Pool6()
		if err != nil {
			return nil, fmt.Errorf("jool mapper: read pool6: %w", err)
		}
		if !found {
			return nil, errors.New("jool mapper: the jool instance has no pool6")
		}
		m.pool6 = p
	}
	if !mangle.IsRFC6052Prefix(m.pool6) {
		return nil, fmt.Errorf("jool mapper: pool6 %v is not an RFC 6052 prefix (/32, /40, /48, /56, /64 or /96)", m.pool6)
	}
	m.pool6 = m.pool6.Masked()
	if err := m.checkOrigin(cfg); err != nil {
		return nil, err
	}
	return m, nil
}

// Classify implements mangle.Mapper.
func (m *Mapper) Classify(client, server netip.AddrPort) (mangle.Session, bool) {
	ca, sa := client.Addr(), server.Addr()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case ca.Is4() && sa.Is4():
		return m.classify4(client, server)
	case ca.Is6() && !ca.Is4In6() && sa.Is6() && !sa.Is4In6():
		return m.classify6(client, server)
	}
	return mangle.Session{}, false
}

// classify4 classifies a connection seen on the IPv4 leg.
func (m *Mapper) classify4(client, server netip.AddrPort) (mangle.Session, bool) {
	now := m.now()
	m.refreshPool4(now, false)
	if m.inPool4(server.Addr()) {
		if e, ok := m.staticBy4(now, server); ok {
			s := mangle.Session{
				Kind:    mangle.Kind46,
				Client4: client.Addr(),
				Client6: m.embed6(client.Addr()),
				Server4: server.Addr(),
				Server6: e.Addr6.Addr(),
			}
			m.markOrigin(s)
			return s, true
		}
	}
	if m.inPool4(client.Addr()) {
		s := mangle.Session{
			Kind:    mangle.Kind64,
			Client4: client.Addr(),
			Server4: server.Addr(),
			Server6: m.embed6(server.Addr()),
		}
		if se, ok := m.findSession4(client, server); ok {
			s.Client6 = se.Src6.Addr()
			s.Server6 = se.Dst6.Addr()
		}
		return s, true
	}
	return mangle.Session{}, false
}

// classify6 classifies a connection seen on the IPv6 leg.
func (m *Mapper) classify6(client, server netip.AddrPort) (mangle.Session, bool) {
	now := m.now()
	if c4, ok := mangle.ExtractRFC6052(m.pool6, client.Addr()); ok {
		if e, ok := m.staticBy6(now, server); ok {
			s := mangle.Session{
				Kind:    mangle.Kind46,
				Client4: c4,
				Client6: client.Addr(),
				Server4: e.Addr4.Addr(),
				Server6: server.Addr(),
			}
			m.markOrigin(s)
			return s, true
		}
	}
	if s4, ok := mangle.ExtractRFC6052(m.pool6, server.Addr()); ok {
		s := mangle.Session{Kind: mangle.Kind64, Client6: client.Addr(), Server4: s4, Server6: server.Addr()}
		if sessions, err := m.t.SessionList(ProtoTCP); err == nil {
			for _, se := range sessions {
				if se.Src6 == client && se.Dst6 == server {
					s.Client4 = se.Src4.Addr()
					break
				}
			}
		}
		return s, true
	}
	return mangle.Session{}, false
}

// findSession4 finds the session of a 64 control connection by its IPv4
// side (client = the pool4 address Jool gave the IPv6 client).
func (m *Mapper) findSession4(client, server netip.AddrPort) (SessionEntry, bool) {
	if m.finder != nil {
		s, ok, err := m.finder.SessionFind(ProtoTCP, client, server)
		return s, ok && err == nil
	}
	sessions, err := m.t.SessionList(ProtoTCP)
	if err != nil {
		return SessionEntry{}, false
	}
	for _, s := range sessions {
		if s.Src4 == client && s.Dst4 == server {
			return s, true
		}
	}
	return SessionEntry{}, false
}

// refreshPool4 reloads pool4 when it is older than the TTL (or, with
// miss, older than joolMissRefresh). A failed reload keeps the old copy.
func (m *Mapper) refreshPool4(now time.Time, miss bool) error {
	age := now.Sub(m.pool4At)
	if !m.pool4At.IsZero() && age < m.ttl && (!miss || age < joolMissRefresh) {
		return nil
	}
	p, err := m.t.Pool4List(ProtoTCP)
	if err != nil {
		return err
	}
	m.pool4, m.pool4At = p, now
	return nil
}

func (m *Mapper) inPool4(a netip.Addr) bool {
	for _, p := range m.pool4 {
		if p.Prefix.Contains(a) {
			return true
		}
	}
	return false
}

// pool4Covers says whether pool4 has a range for the transport address.
func (m *Mapper) pool4Covers(a netip.AddrPort) bool {
	for _, p := range m.pool4 {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ReloadPool4 reads pool4 from the instance now (the daemon's SIGHUP) and
// returns it; on an error the old copy stays.
func (m *Mapper) ReloadPool4() ([]Pool4Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pool4At = time.Time{}
	if err := m.refreshPool4(m.now(), true); err != nil {
		return nil, err
	}
	return slices.Clone(m.pool4), nil
}

// refreshStatic reloads the static BIB entries (TTL as refreshPool4).
func (m *Mapper) refreshStatic(now time.Time, miss bool) error {
	age := now.Sub(m.staticAt)
	if !m.staticAt.IsZero() && age < m.ttl && (!miss || age < joolMissRefresh) {
		return nil
	}
	bib, err := m.t.BIBList(ProtoTCP)
	if err != nil {
		return err
	}
	clear(m.static4)
	clear(m.static6)
	for _, e := range bib {
		if !e.Static || len(m.static4) >= joolMaxCachedStatic {
			continue
		}
		m.static4[e.Addr4] = e
		m.static6[e.Addr6] = e
	}
	m.staticAt = now
	m.cacheDataPorts(bib)
	return nil
}

func (m *Mapper) staticBy4(now time.Time, a netip.AddrPort) (BIBEntry, bool) {
	m.refreshStatic(now, false)
	e, ok := m.static4[a]
	if !ok && m.refreshStatic(now, true) == nil {
		e, ok = m.static4[a]
	}
	return e, ok && !m.used[a]
}

func (m *Mapper) staticBy6(now time.Time, a netip.AddrPort) (BIBEntry, bool) {
	m.refreshStatic(now, false)
	e, ok := m.static6[a]
	if !ok && m.refreshStatic(now, true) == nil {
		e, ok = m.static6[a]
	}
	return e, ok && m.owned[a] == nil
}

// MapData implements mangle.Mapper.
func (m *Mapper) MapData(req mangle.DataRequest) (netip.AddrPort, error) {
	s, t := req.Session, req.Target
	switch req.Mode {
	case mangle.Passive64, mangle.Active46:
		// Stateless: the IPv4 peer's address inside pool6, same port.
		if !t.Addr().Is4() {
			return netip.AddrPort{}, fmt.Errorf("jool map %v %v: target is not IPv4", req.Mode, t)
		}
		a := s.Server6
		if req.Mode == mangle.Active46 {
			a = s.Client6
		}
		if !a.IsValid() {
			a = m.embed6(t.Addr())
		}
		if req.Mode == mangle.Active46 && m.origin != nil {
			m.mu.Lock()
			m.markOrigin(s)
			m.mu.Unlock()
		}
		return netip.AddrPortFrom(a, t.Port()), nil
	case mangle.Passive46, mangle.Active64:
		if !t.Addr().Is6() || t.Addr().Is4In6() {
			return netip.AddrPort{}, fmt.Errorf("jool map %v %v: target is not IPv6", req.Mode, t)
		}
		// a4 is the control connection's pool4 address; peer the IPv4
		// host that will connect through the mapping.
		a4, peer := s.Server4, s.Client4
		if req.Mode == mangle.Active64 {
			a4, peer = s.Client4, s.Server4
		}
		if !a4.Is4() {
			return netip.AddrPort{}, fmt.Errorf("jool map %v %v: the session has no IPv4 address for it", req.Mode, t)
		}
		if m.guard != nil && !peer.Is4() {
			return netip.AddrPort{}, fmt.Errorf("jool map %v %v: the session has no IPv4 peer to admit", req.Mode, t)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if req.Mode == mangle.Passive46 {
			m.markOrigin(s)
		}
		return m.mapStatic(t, a4, peer)
	}
	return netip.AddrPort{}, fmt.Errorf("jool map: unknown mode %v", req.Mode)
}

// CanMapActive64 implements mangle.ActiveChecker: an EPRT needs a static
// BIB entry, which the mapper adds only inside its reserved port range.
// Without one the engine answers ALGS with the token EPSV and passes EPRT
// unchanged (RFC 6384 section 11: the token must be true).
func (m *Mapper) CanMapActive64(mangle.Session) bool { return m.lo != 0 }

// mapStatic returns a4:p4 bound to target by a static BIB entry of ours,
// adding one if needed, and admits peer through it. Called with m.mu held.
//
// p4 is drawn uniformly from the free ports of the reserved range: the
// engine rewrites the port in both modes that need an entry (46 passive:
// 229 to 227; 64 active: EPRT to PORT), so nothing requires p4 = p6, and
// a port a third party could guess (the next one in order) would help it
// race the peer. The guard admits only the peer anyway; random ports keep
// a guess from even finding a live mapping.
func (m *Mapper) mapStatic(target netip.AddrPort, a4, peer netip.Addr) (netip.AddrPort, error) {
	if m.closed {
		return netip.AddrPort{}, ErrMapperClosed
	}
	now := m.now()
	if om := m.owned[target]; om != nil {
		if om.entry.Addr4.Addr() != a4 {
			return netip.AddrPort{}, fmt.Errorf("jool map %v: already mapped to %v, not on %v", target, om.entry.Addr4, a4)
		}
		if err := m.admit(peer, om.entry.Addr4); err != nil {
			return netip.AddrPort{}, fmt.Errorf("jool map %v: %w", target, err)
		}
		om.requested, om.seen = now, false
		return om.entry.Addr4, nil
	}
	if m.lo == 0 {
		return netip.AddrPort{}, fmt.Errorf("jool map %v: no reserved port range configured", target)
	}
	if len(m.owned) >= m.max {
		return netip.AddrPort{}, fmt.Errorf("jool map %v: %d mappings already, the limit", target, len(m.owned))
	}
	if err := m.refreshPool4(now, false); err != nil && m.pool4At.IsZero() {
		return netip.AddrPort{}, fmt.Errorf("jool map %v: %w", target, err)
	}
	m.refreshStatic(now, false)

	// The free ports: not ours already, not someone's static entry, in
	// pool4.
	free := m.free[:0]
	for p := int(m.lo); p <= int(m.hi); p++ {
		cand := netip.AddrPortFrom(a4, uint16(p))
		if m.used[cand] || !m.pool4Covers(cand) {
			continue
		}
		if _, ok := m.static4[cand]; ok {
			continue
		}
		free = append(free, uint16(p))
	}
	m.free = free[:0]
	var taken map[netip.AddrPort]bool // filled from a BIB listing after a collision
	for attempts := 0; len(free) > 0 && attempts < joolMaxAddAttempts; {
		i := m.rand(len(free))
		cand := netip.AddrPortFrom(a4, free[i])
		free = slices.Delete(free, i, i+1)
		if taken[cand] {
			continue
		}
		attempts++
		// The guard first: the entry never exists unguarded.
		if err := m.admit(peer, cand); err != nil {
			return netip.AddrPort{}, fmt.Errorf("jool map %v: %w", target, err)
		}
		e := BIBEntry{Addr6: target, Addr4: cand, Proto: ProtoTCP, Static: true}
		err := m.t.BIBAdd(e)
		if err == nil {
			m.record(e, now)
			return cand, nil
		}
		m.release(cand)
		if !errors.Is(err, syscall.EEXIST) {
			return netip.AddrPort{}, fmt.Errorf("jool map %v: %w", target, err)
		}
		if taken == nil {
			// The port is someone else's, or the target already has an
			// entry: look once at the whole BIB.
			bib, err := m.t.BIBList(ProtoTCP)
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("jool map %v: %w", target, err)
			}
			taken = map[netip.AddrPort]bool{}
			for _, b := range bib {
				taken[b.Addr4] = true
				if b.Addr6 != target {
					continue
				}
				if b.Addr4.Addr() != a4 {
					return netip.AddrPort{}, fmt.Errorf("jool map %v: jool already binds it to %v", target, b.Addr4)
				}
				if b.Static && m.reserved(b.Addr4.Port()) {
					// Ours from an earlier run: adopt it, guarded.
					if err := m.admit(peer, b.Addr4); err != nil {
						return netip.AddrPort{}, fmt.Errorf("jool map %v: %w", target, err)
					}
					m.record(b, now)
				}
				// Otherwise (a dynamic or operator's entry) use it as is:
				// not ours to remove, nor to guard.
				return b.Addr4, nil
			}
		}
	}
	return netip.AddrPort{}, fmt.Errorf("jool map %v: no free port in %v#%d-%d", target, a4, m.lo, m.hi)
}

// admit lets peer through mapped (no-op without a guard).
func (m *Mapper) admit(peer netip.Addr, mapped netip.AddrPort) error {
	if m.guard == nil {
		return nil
	}
	if err := m.guard.Admit(peer, mapped, m.idle); err != nil {
		return fmt.Errorf("admit %v through %v: %w", peer, mapped, err)
	}
	return nil
}

// release ends the guard of the mapped addresses (no-op without a guard
// or without addresses).
func (m *Mapper) release(mapped ...netip.AddrPort) error {
	if m.guard == nil || len(mapped) == 0 {
		return nil
	}
	if err := m.guard.Release(mapped...); err != nil {
		return fmt.Errorf("release guard of %v: %w", mapped, err)
	}
	return nil
}

func (m *Mapper) reserved(p uint16) bool { return m.lo != 0 && p >= m.lo && p <= m.hi }

func (m *Mapper) record(e BIBEntry, now time.Time) {
	m.owned[e.Addr6] = &joolMapping{entry: e, requested: now}
	m.used[e.Addr4] = true
	m.storeLedger()
}

// storeLedger writes the entries the mapper holds to the ledger. A failure
// does not fail the mapping (the transfer matters more; the entry would
// only outlive a crash); Expire reports it. Called with m.mu held.
func (m *Mapper) storeLedger() {
	if m.ledger == nil {
		return
	}
	held := make([]BIBEntry, 0, len(m.owned))
	for _, om := range m.owned {
		held = append(held, om.entry)
	}
	slices.SortFunc(held, func(a, b BIBEntry) int { return a.Addr4.Compare(b.Addr4) })
	if err := m.ledger.Store(held); err != nil {
		m.ledgerErr = fmt.Errorf("jool mapper: record the static BIB entries: %w", err)
	} else {
		m.ledgerErr = nil
	}
}

// embed6 is pool6::a (RFC 6052), or the zero Addr when a is not IPv4.
func (m *Mapper) embed6(a netip.Addr) netip.Addr {
	v6, _ := mangle.EmbedRFC6052(m.pool6, a)
	return v6
}
