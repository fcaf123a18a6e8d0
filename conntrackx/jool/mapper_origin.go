package jool

// 46 active data connections from the control connection's pool4 address.
//
// In 46 active mode (PORT, EPRT, LPRT from the IPv4 client) the IPv6
// server opens the data connection, so Jool masks it like any connection
// an IPv6 host opens: with a static BIB entry of the server's source
// transport address if there is one, otherwise with an address and port of
// the pool4 entries whose mark equals the packet's mark (0 unless something
// sets it), picked by hashing (RFC 6056 algorithm 3). The control
// connection's static entry S6#21 <-> S4#21 plays no part: when the mark-0
// pool4 holds an address other than S4, the data connection can reach the
// client from it, and clients that check the origin of a data connection
// (ncftp) refuse it. The server's source port is not known in advance
// (port 20, or any), so a static entry cannot be made for it.
//
// What the mapper does instead: for each pool4 address S4 of a 46 server
// it adds a pool4 entry of its own, S4 alone with the reserved port range,
// under a mark of OriginMarks; and for each 46 control connection it asks
// the OriginMarker to put that mark on the SYNs from S6 to the client's
// IPv6 address (Client6, pool6 + C4) before Jool's hook (the daemon's ip6
// chain "origin"). Jool then masks those connections with S4 and a port of
// the reserved range. The server opens no other connections to the
// client than data connections, so the key needs no port, and default
// active mode (RFC 6384 section 8: no command announces the port) is
// covered too. It must be: a server that connects from port 20 has one BIB
// entry for S6#20, endpoint-independent, and Jool masks every later
// connection from S6#20 with whatever address the first one got, for as
// long as one of its sessions lasts (tcp-trans-timeout after the last).
// The element is made at the control connection's classification and
// refreshed at each of its data channels; it lives OriginTTL after that.
// A range of one mark may overlap the ranges of other marks (Jool keeps
// one table per mark); the dynamic BIB entries of such connections take
// ports that static entries then skip.

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
)

// OriginMarker marks the packets that open a TCP connection from an IPv6
// server to an IPv6 client, before Jool's prerouting hook (rules.OriginMarker:
// a map in the daemon's ip6 table).
type OriginMarker interface {
	// Mark sets mark on the SYNs from server to client for ttl.
	Mark(server, client netip.Addr, mark uint32, ttl time.Duration) error
}

// joolUnstickEvery is how often unstickDataPort asks Jool about the
// sessions of one server's stale data-port entries.
const joolUnstickEvery = 2 * time.Second

// defaultOriginTTL is how long a 46 client's mark lives after its control
// connection was classified or its last data channel mapped.
const defaultOriginTTL = time.Hour

// originPair is the key of a mark: the IPv6 server, the IPv6 client.
type originPair struct{ server, client netip.Addr }

// joolPool4Writer is what the origin needs of the tables beyond Tables
// (*Client implements it).
type joolPool4Writer interface {
	Pool4Add(e Pool4Entry) error
	Pool4Remove(e Pool4Entry) error
}

// checkOrigin validates the origin part of cfg into m.
func (m *Mapper) checkOrigin(cfg *MapperConfig) error {
	if cfg.Origin == nil {
		return nil
	}
	lo, hi := cfg.OriginMarks[0], cfg.OriginMarks[1]
	switch w, ok := cfg.Tables.(joolPool4Writer); {
	case !ok:
		return errors.New("jool mapper: the tables cannot add pool4 entries (needed for the origin of 46 active data connections)")
	case m.lo == 0:
		return errors.New("jool mapper: the origin of 46 active data connections needs the reserved port range")
	case lo == 0 || lo > hi:
		return fmt.Errorf("jool mapper: bad origin mark range %d-%d (mark 0 is Jool's default pool4)", lo, hi)
	default:
		m.origin, m.pool4w = cfg.Origin, w
		m.markLo, m.markHi = lo, hi
		m.origins = map[netip.Addr]uint32{}
		m.originTTL = cfg.OriginTTL
		if m.originTTL <= 0 {
			m.originTTL = defaultOriginTTL
		}
		m.marked = map[originPair]time.Time{}
		m.dataPort = map[netip.Addr][]BIBEntry{}
		m.unstuck = map[netip.Addr]time.Time{}
	}
	return nil
}

// ourMark says whether mark is one of OriginMarks.
func (m *Mapper) ourMark(mark uint32) bool {
	return m.origin != nil && mark >= m.markLo && mark <= m.markHi
}

// originEntry is the pool4 entry of mark for s4.
func (m *Mapper) originEntry(s4 netip.Addr, mark uint32) Pool4Entry {
	return Pool4Entry{Mark: mark, Proto: ProtoTCP, Prefix: netip.PrefixFrom(s4, 32), PortMin: m.lo, PortMax: m.hi}
}

// markOrigin makes the connections the server of the 46 session s opens
// to its client leave Jool from s.Server4, for OriginTTL from now; a mark
// made less than a quarter of that ago is not made again. A failure does
// not fail the session (only clients that check the origin need it):
// Expire reports it. Called with m.mu held.
func (m *Mapper) markOrigin(s mangle.Session) {
	if m.origin == nil || m.closed || s.Kind != mangle.Kind46 {
		return
	}
	if !s.Server4.Is4() || !s.Server6.Is6() || s.Server6.Is4In6() || !s.Client6.Is6() || s.Client6.Is4In6() {
		m.originErr = fmt.Errorf("jool mapper: origin of the 46 data connections to %v: the session lacks addresses (%v, %v, %v)", s.Client4, s.Server4, s.Server6, s.Client6)
		return
	}
	m.unstickDataPort(s)
	now := m.now()
	key := originPair{s.Server6, s.Client6}
	if t, ok := m.marked[key]; ok && now.Sub(t) < m.originTTL/4 {
		return
	}
	mark, err := m.originMark(s.Server4)
	if err == nil {
		err = m.origin.Mark(s.Server6, s.Client6, mark, m.originTTL)
	}
	if err != nil {
		m.originErr = fmt.Errorf("jool mapper: the 46 data connections from %v to %v may not leave from %v: %w", s.Server6, s.Client6, s.Server4, err)
		return
	}
	for k, t := range m.marked {
		if now.Sub(t) >= m.originTTL {
			delete(m.marked, k)
		}
	}
	m.marked[key] = now
}

// cacheDataPorts keeps, from a BIB listing, the dynamic entries of the
// ports just below the static entries' IPv6 ports (RFC 959's default data
// port L-1 of a 46 server's control port L: S6#20 for S6#21). Called with
// m.mu held, by refreshStatic.
func (m *Mapper) cacheDataPorts(bib []BIBEntry) {
	if m.origin == nil {
		return
	}
	clear(m.dataPort)
	want := map[netip.AddrPort]bool{}
	for a6, e := range m.static6 {
		if a6.Port() > 1 && !(m.reserved(e.Addr4.Port()) && m.owned[a6] != nil) {
			want[netip.AddrPortFrom(a6.Addr(), a6.Port()-1)] = true
		}
	}
	for _, e := range bib {
		if !e.Static && want[e.Addr6] {
			m.dataPort[e.Addr6.Addr()] = append(m.dataPort[e.Addr6.Addr()], e)
		}
	}
}

// unstickDataPort removes a dynamic BIB entry of the server's data port
// (S6#20) on another address than S4 when none of its connections is live.
// Such an entry is endpoint-independent: Jool masks every later connection
// from S6#20, marked or not, with its address, until its last session has
// been finished for tcp-trans-timeout (4 minutes). One made while no mark
// applied (before the daemon ran, or a connection to a client the daemon
// does not know) would keep a port-20 server's data connections on the
// wrong address. An entry with live sessions stays (removing it would cut
// them): its data connections keep its address until they end. Uses the
// cached BIB listing (refreshStatic). Called with m.mu held.
func (m *Mapper) unstickDataPort(s mangle.Session) {
	now := m.now()
	m.refreshStatic(now, false)
	entries := m.dataPort[s.Server6]
	if len(entries) == 0 {
		return
	}
	// An entry on another address asks Jool for its sessions: at most
	// every joolUnstickEvery per server.
	if t, ok := m.unstuck[s.Server6]; ok && now.Sub(t) < joolUnstickEvery {
		return
	}
	if len(m.unstuck) > joolMaxCachedStatic {
		clear(m.unstuck)
	}
	m.unstuck[s.Server6] = now
	bs, _ := m.t.(joolBIBSessions)
	var keep []BIBEntry
	for _, e := range entries {
		if e.Addr4.Addr() == s.Server4 {
			keep = append(keep, e)
			continue
		}
		var sessions []SessionEntry
		var err error
		if bs != nil {
			sessions, err = bs.BIBSessions(ProtoTCP, e.Addr4)
		} else {
			sessions, err = m.t.SessionList(ProtoTCP)
		}
		live := err != nil
		for _, se := range sessions {
			live = live || se.Src4 == e.Addr4 && se.Src6 == e.Addr6 && !se.Finished()
		}
		if live {
			keep = append(keep, e)
			continue
		}
		if err := m.t.BIBRemove(e); err != nil && !errors.Is(err, syscall.ESRCH) {
			m.originErr = fmt.Errorf("jool mapper: remove the finished dynamic BIB entry %v, which keeps the data connections from %v on %v: %w", e, e.Addr6, e.Addr4.Addr(), err)
			keep = append(keep, e)
		}
	}
	if len(keep) == 0 {
		delete(m.dataPort, s.Server6)
	} else {
		m.dataPort[s.Server6] = keep
	}
}

// originMark returns the mark of s4's pool4 entry, adding the entry under
// the first free mark of OriginMarks if there is none yet. Called with
// m.mu held.
func (m *Mapper) originMark(s4 netip.Addr) (uint32, error) {
	if mark, ok := m.origins[s4]; ok {
		return mark, nil
	}
	// Marks in use: ours, and any in pool4 now (the operator's, or one a
	// failed removal left). Once per S4: a fresh listing.
	m.pool4At = time.Time{}
	if err := m.refreshPool4(m.now(), true); err != nil {
		return 0, err
	}
	taken := map[uint32]bool{}
	for _, mk := range m.origins {
		taken[mk] = true
	}
	for _, p := range m.pool4 {
		taken[p.Mark] = true
	}
	for mark := m.markLo; ; mark++ {
		if !taken[mark] {
			e := m.originEntry(s4, mark)
			if err := m.pool4w.Pool4Add(e); err != nil {
				return 0, fmt.Errorf("pool4 add %v %d-%d mark %d: %w", e.Prefix.Addr(), e.PortMin, e.PortMax, mark, err)
			}
			m.origins[s4] = mark
			m.pool4At = time.Time{} // re-read at the next use
			return mark, nil
		}
		if mark == m.markHi {
			return 0, fmt.Errorf("no free mark in %d-%d for a pool4 entry of %v", m.markLo, m.markHi, s4)
		}
	}
}

// removeOrigins removes the given pool4 entries (all of one of our marks),
// quick, so that Jool keeps every BIB entry; then it adds again the
// ranges of other marks that overlap them, which Jool's removal took out
// of its per-address table too (they would no longer be pool4 for
// IPv4-to-IPv6 packets and static BIB entries). Returns how many it
// removed. Called with m.mu held.
func (m *Mapper) removeOrigins(entries []Pool4Entry) (int, error) {
	var errs []error
	var removed []Pool4Entry
	for _, e := range entries {
		if err := m.pool4w.Pool4Remove(e); err != nil {
			errs = append(errs, fmt.Errorf("pool4 remove %v %d-%d mark %d: %w", e.Prefix, e.PortMin, e.PortMax, e.Mark, err))
			continue
		}
		removed = append(removed, e)
	}
	if len(removed) == 0 {
		return 0, errors.Join(errs...)
	}
	m.pool4At = time.Time{}
	pool, err := m.t.Pool4List(ProtoTCP)
	if err != nil {
		return len(removed), errors.Join(append(errs, fmt.Errorf("pool4 list, to restore the ranges of other marks: %w", err))...)
	}
	for _, p := range pool {
		if m.ourMark(p.Mark) || !slices.ContainsFunc(removed, p.overlaps) {
			continue
		}
		again := Pool4Entry{Mark: p.Mark, Proto: ProtoTCP, Prefix: p.Prefix, PortMin: p.PortMin, PortMax: p.PortMax}
		if err := m.pool4w.Pool4Add(again); err != nil {
			errs = append(errs, fmt.Errorf("pool4 add %v %d-%d mark %d again: %w", p.Prefix, p.PortMin, p.PortMax, p.Mark, err))
		}
	}
	return len(removed), errors.Join(errs...)
}

// overlaps says whether the ranges p and q share a transport address.
func (p Pool4Entry) overlaps(q Pool4Entry) bool {
	return p.Prefix.Overlaps(q.Prefix) && p.PortMin <= q.PortMax && q.PortMin <= p.PortMax
}

// closeOrigins removes the pool4 entries the mapper added. Called with
// m.mu held.
func (m *Mapper) closeOrigins() error {
	if m.origin == nil || len(m.origins) == 0 {
		return nil
	}
	var entries []Pool4Entry
	for s4, mark := range m.origins {
		entries = append(entries, m.originEntry(s4, mark))
	}
	slices.SortFunc(entries, func(a, b Pool4Entry) int { return cmp.Compare(a.Mark, b.Mark) })
	clear(m.origins)
	clear(m.marked)
	_, err := m.removeOrigins(entries)
	return err
}

// CleanupOrigins removes the pool4 entries under OriginMarks that a killed
// daemon left (the marks are the ALG's, as the reserved ports are) and
// returns how many it removed. Call it once at start, before the first
// MapData; it does nothing without an OriginMarker.
func (m *Mapper) CleanupOrigins() (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.origin == nil {
		return 0, nil
	}
	pool, err := m.t.Pool4List(ProtoTCP)
	if err != nil {
		return 0, fmt.Errorf("jool mapper cleanup: %w", err)
	}
	var stale []Pool4Entry
	for _, p := range pool {
		if m.ourMark(p.Mark) && !slices.Contains(mapsValues(m.origins), p.Mark) {
			stale = append(stale, Pool4Entry{Mark: p.Mark, Proto: ProtoTCP, Prefix: p.Prefix, PortMin: p.PortMin, PortMax: p.PortMax})
		}
	}
	if len(stale) == 0 {
		return 0, nil
	}
	n, err := m.removeOrigins(stale)
	if err != nil {
		err = fmt.Errorf("jool mapper cleanup: %w", err)
	}
	return n, err
}

func mapsValues(m map[netip.Addr]uint32) []uint32 {
	out := make([]uint32, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// Origins returns the pool4 entries the mapper added for the origin of 46
// active data connections, by mark.
func (m *Mapper) Origins() []Pool4Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Pool4Entry
	for s4, mark := range m.origins {
		out = append(out, m.originEntry(s4, mark))
	}
	slices.SortFunc(out, func(a, b Pool4Entry) int { return cmp.Compare(a.Mark, b.Mark) })
	return out
}
