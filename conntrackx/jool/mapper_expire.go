package jool

// The Mapper's static BIB entries after the data channel: expiry once
// the data connection is over, removal at shutdown and at start.

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

func (m *Mapper) forget(e BIBEntry) {
	delete(m.owned, e.Addr6)
	delete(m.used, e.Addr4)
	m.storeLedger()
}

// remove deletes one of our entries from Jool; an entry already gone
// counts as removed. The caller then releases its guard (release), after
// the entry: the guard must not end while the entry exists. One release
// for all the entries of a round keeps the guard's netlink work per round,
// not per entry, while the lock is held.
func (m *Mapper) remove(e BIBEntry) error {
	err := m.t.BIBRemove(e)
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	m.forget(e)
	return nil
}

// Expire removes the mappings that are done with, judged from Jool's
// session table at now: those whose sessions have all finished (both FINs
// or a reset) or vanished, and those that saw no session within
// IdleTimeout of their last request. Sessions that finished before the
// last request (dated with TCPTransTimeout) do not count: they belong to
// earlier data connections on the same entry. Call it periodically (every few
// seconds): when it holds mappings it asks Jool for their sessions (one
// request per mapping, or one listing of all TCP sessions when it holds
// more than a few dozen).
//
// It also reports a failure to keep the Ledger, and one to give a 46 active
// data connection its origin (once per failure).
func (m *Mapper) Expire(now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	lerr, oerr := m.ledgerErr, m.originErr
	m.ledgerErr, m.originErr = nil, nil
	return errors.Join(m.expire(now), lerr, oerr)
}

func (m *Mapper) expire(now time.Time) error {
	if len(m.owned) == 0 {
		return nil
	}
	sessions, err := m.sessionsOfOwned()
	if err != nil {
		return fmt.Errorf("jool mapper expire: %w", err)
	}
	// The listing can take a while (a second for thousands of sessions
	// on a slow machine): date finished sessions from its end, so that
	// one that finished just after a request never looks older than it.
	listed := m.now()
	type use struct{ any, live bool }
	uses := map[netip.AddrPort]use{}
	for _, s := range sessions {
		om := m.owned[s.Src6]
		if om == nil || om.entry.Addr4 != s.Src4 || m.finishedBefore(s, listed, om.requested) {
			continue
		}
		u := uses[s.Src6]
		u.any = true
		u.live = u.live || !s.Finished()
		uses[s.Src6] = u
	}
	var errs []error
	var removed []netip.AddrPort
	for target, om := range m.owned {
		u := uses[target]
		var done bool
		switch {
		case u.live:
			om.seen = true
		case u.any: // every connection on it has finished
			done = now.Sub(om.requested) >= joolFinishedGrace
		case om.seen: // its sessions are gone
			done = true
		default: // never used
			done = now.Sub(om.requested) >= m.idle
		}
		if done {
			if err := m.remove(om.entry); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, om.entry.Addr4)
			}
		}
	}
	if err := m.release(removed...); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// finishedBefore says whether s surely finished before t, judged from
// what is left of its transitory timer at now (no earlier than the
// listing that reported it). Jool keeps a finished session for
// tcp-trans-timeout (4 minutes by default) and an entry requested again
// (a server that reuses its passive ports, the same client port) still
// carries the sessions of its earlier data connections: they are not the
// new connection and must not make the entry look used and done, or it
// goes joolFinishedGrace after the request, before a slow client connects.
// A session with no time left reported (Expires 0) counts as recent.
func (m *Mapper) finishedBefore(s SessionEntry, now, t time.Time) bool {
	if !s.Finished() || s.Expires <= 0 || s.Expires > m.trans {
		return false
	}
	return now.Add(s.Expires - m.trans).Before(t)
}

// sessionsOfOwned returns (at least) the sessions on the entries the
// mapper holds: entry by entry when they are few and the tables can, else
// the whole TCP session table.
func (m *Mapper) sessionsOfOwned() ([]SessionEntry, error) {
	bs, ok := m.t.(joolBIBSessions)
	if !ok || len(m.owned) > joolPerEntryLookups {
		return m.t.SessionList(ProtoTCP)
	}
	var all []SessionEntry
	for _, om := range m.owned {
		ss, err := bs.BIBSessions(ProtoTCP, om.entry.Addr4)
		if err != nil {
			return nil, err
		}
		all = append(all, ss...)
	}
	return all, nil
}

// Close removes every entry the mapper added, and the pool4 entries it
// added for the origin of 46 active data connections. MapData fails
// afterwards.
func (m *Mapper) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	var errs []error
	var removed []netip.AddrPort
	for _, om := range m.owned {
		if err := m.remove(om.entry); err != nil {
			errs = append(errs, err)
		} else {
			removed = append(removed, om.entry.Addr4)
		}
	}
	if err := m.release(removed...); err != nil {
		errs = append(errs, err)
	}
	if err := m.closeOrigins(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Cleanup removes the static entries an earlier run recorded in the Ledger
// (a killed daemon's leftovers) and still in Jool, and returns how many it
// removed; with no Ledger it removes nothing. Then it checks that no other
// static TCP entry sits in ReservedPorts on a pool4 address: those are an
// operator's, which the mapper must neither remove nor collide with; it
// returns a *ReservedInUseError naming them. Call it once at start, before
// the first MapData.
func (m *Mapper) Cleanup() (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lo == 0 {
		return 0, nil
	}
	now := m.now()
	if err := m.refreshPool4(now, true); err != nil {
		return 0, fmt.Errorf("jool mapper cleanup: %w", err)
	}
	var recorded []BIBEntry
	if m.ledger != nil {
		var err error
		if recorded, err = m.ledger.Load(); err != nil {
			return 0, fmt.Errorf("jool mapper cleanup: %w", err)
		}
	}
	bib, err := m.t.BIBList(ProtoTCP)
	if err != nil {
		return 0, fmt.Errorf("jool mapper cleanup: %w", err)
	}
	ours := map[BIBEntry]bool{}
	for _, e := range recorded {
		ours[e] = true
	}
	n := 0
	var errs []error
	var others []BIBEntry
	for _, e := range bib {
		if !e.Static || !m.reserved(e.Addr4.Port()) || !m.inPool4(e.Addr4.Addr()) || m.used[e.Addr4] {
			continue
		}
		if !ours[BIBEntry{Addr6: e.Addr6, Addr4: e.Addr4, Proto: ProtoTCP, Static: true}] {
			others = append(others, e)
			continue
		}
		if err := m.t.BIBRemove(e); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	m.staticAt = time.Time{} // the cached copy is stale now
	if len(errs) == 0 {
		m.storeLedger() // what is left of the record: the entries held now
	}
	if len(others) > 0 {
		errs = append(errs, &ReservedInUseError{Lo: m.lo, Hi: m.hi, Entries: others})
	}
	return n, errors.Join(errs...)
}

// ReservedInUseError is Cleanup's error for static BIB entries in
// ReservedPorts that the mapper did not make.
type ReservedInUseError struct {
	Lo, Hi  uint16
	Entries []BIBEntry
}

func (e *ReservedInUseError) Error() string {
	more := ""
	if len(e.Entries) > 1 {
		more = fmt.Sprintf(" and %d more", len(e.Entries)-1)
	}
	f := e.Entries[0]
	return fmt.Sprintf("ports %d-%d hold static BIB entries that are not ftpalg's (%v#%d %v#%d%s): choose a range without static entries, or remove them",
		e.Lo, e.Hi, f.Addr6.Addr(), f.Addr6.Port(), f.Addr4.Addr(), f.Addr4.Port(), more)
}

// Mappings returns the entries the mapper currently holds, sorted by their
// IPv4 side.
func (m *Mapper) Mappings() []BIBEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]BIBEntry, 0, len(m.owned))
	for _, om := range m.owned {
		out = append(out, om.entry)
	}
	slices.SortFunc(out, func(a, b BIBEntry) int { return a.Addr4.Compare(b.Addr4) })
	return out
}
