package jool

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
)

// An entry requested again (a server that reuses its passive port) still
// carries the finished sessions of its earlier data connections for Jool's
// tcp-trans-timeout. They must not make it look used and done: the new
// request gets the idle timeout for its connection to come, as a fresh one.
// Seen in the QEMU lab: a client that waited 16 s between 227 and connecting
// found the entry gone (Jool then answers the SYN with ICMP port unreachable
// after 6 s).
func TestJoolMapperExpireIgnoresSessionsBeforeRequest(t *testing.T) {
	for _, perEntry := range []bool{false, true} {
		f := newFakeTables()
		var tables Tables = f
		if perEntry {
			tables = perEntryTables{f}
		}
		m, clk := newTestMapper(t, f, MapperConfig{Tables: tables, IdleTimeout: time.Minute})
		s := session46(m)
		target := ap("[2001:db8::10]:40050")
		mapData := func() BIBEntry {
			t.Helper()
			got, err := m.MapData(mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: target})
			if err != nil {
				t.Fatal(err)
			}
			return BIBEntry{Addr6: target, Addr4: got, Proto: ProtoTCP, Static: true}
		}
		// finished is a session on e that finished at the given time, as
		// Jool lists it now.
		finished := func(e BIBEntry, clientPort uint16, at time.Time) SessionEntry {
			return SessionEntry{
				Src6: e.Addr6, Dst6: netip.AddrPortFrom(addr("64:ff9b::cb00:7105"), clientPort),
				Src4: e.Addr4, Dst4: netip.AddrPortFrom(addr("203.0.113.5"), clientPort),
				Proto: ProtoTCP, State: TCPV4FinV6FinRcv, Timer: 1, Expires: 4*time.Minute - clk.t.Sub(at),
			}
		}

		e := mapData()
		clk.advance(time.Second)
		firstDone := clk.t // the first connection, done at once
		clk.advance(200 * time.Millisecond)
		if again := mapData(); again != e {
			t.Fatalf("requested again: %v, want the same entry %v", again, e)
		}
		// Ticks every 5 s up to 30 s after the second request: the old
		// session does not count, the idle timeout (1 min) does.
		for i := 1; i <= 6; i++ {
			clk.advance(5 * time.Second)
			f.sessions = []SessionEntry{finished(e, 50001, firstDone)}
			if err := m.Expire(clk.t); err != nil {
				t.Fatal(err)
			}
			if !f.has(e) {
				t.Fatalf("perEntry %v: entry removed %d s after it was requested again, before its new connection", perEntry, i*5)
			}
		}
		// The new connection comes and finishes: the entry goes
		// joolFinishedGrace after the request, as usual.
		clk.advance(5 * time.Second)
		f.sessions = []SessionEntry{finished(e, 50001, firstDone), finished(e, 50002, clk.t.Add(-time.Second))}
		m.Expire(clk.t)
		if f.has(e) {
			t.Errorf("perEntry %v: entry kept after its new connection finished", perEntry)
		}
		if n := len(m.Mappings()); n != 0 {
			t.Errorf("perEntry %v: %d mappings left", perEntry, n)
		}
	}
}

// Without the fix's dating (a session that reports no time left), finished
// sessions keep counting: the entry goes joolFinishedGrace after the request.
func TestJoolMapperExpireUndatedFinishedSession(t *testing.T) {
	f := newFakeTables()
	m, clk := newTestMapper(t, f, MapperConfig{IdleTimeout: time.Minute})
	target := ap("[2001:db8::10]:40051")
	got, err := m.MapData(mangle.DataRequest{Session: session46(m), Mode: mangle.Passive46, Target: target})
	if err != nil {
		t.Fatal(err)
	}
	e := BIBEntry{Addr6: target, Addr4: got, Proto: ProtoTCP, Static: true}
	f.sessions = []SessionEntry{{Src6: e.Addr6, Src4: e.Addr4, Dst4: ap("203.0.113.5:50003"), Proto: ProtoTCP, State: TCPTrans}}
	clk.advance(15 * time.Second)
	m.Expire(clk.t)
	if f.has(e) {
		t.Error("entry kept 15 s after the request with its only connection finished")
	}
}

// slowListing is a Jool whose session listing takes a second.
type slowListing struct {
	*fakeTables
	clk *fakeClock
}

func (s slowListing) SessionList(proto uint8) ([]SessionEntry, error) {
	out, err := s.fakeTables.SessionList(proto)
	s.clk.advance(time.Second)
	return out, err
}

// A connection that finished just after its request, listed by a slow
// listing that started before it finished, still counts as the request's:
// the entry goes joolFinishedGrace after the request, not IdleTimeout.
func TestJoolMapperExpireSlowListing(t *testing.T) {
	f := newFakeTables()
	sl := slowListing{fakeTables: f}
	m, clk := newTestMapper(t, f, MapperConfig{Tables: sl, IdleTimeout: time.Minute})
	sl.clk = clk
	m.t = sl
	target := ap("[2001:db8::10]:40052")
	got, err := m.MapData(mangle.DataRequest{Session: session46(m), Mode: mangle.Passive46, Target: target})
	if err != nil {
		t.Fatal(err)
	}
	e := BIBEntry{Addr6: target, Addr4: got, Proto: ProtoTCP, Static: true}
	requested := clk.t
	for i := 0; i < 4; i++ {
		clk.advance(5 * time.Second)
		tick := clk.t
		// As Jool reports it at the end of the listing (tick + 1 s): it
		// finished 50 ms after the request.
		left := 4*time.Minute - (tick.Add(time.Second).Sub(requested) - 50*time.Millisecond)
		f.sessions = []SessionEntry{{Src6: e.Addr6, Src4: e.Addr4, Dst4: ap("203.0.113.5:50004"),
			Proto: ProtoTCP, State: TCPV4FinV6FinRcv, Expires: left}}
		m.Expire(tick)
	}
	if f.has(e) {
		t.Error("entry kept 20 s after the request although its connection finished")
	}
}
