package jool

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/google/go-cmp/cmp"
)

// fakeGuard records what the mapper asks of the peer filter, and checks
// the order against the fake Jool: a BIB entry never exists unguarded.
type fakeGuard struct {
	t       *testing.T
	f       *fakeTables
	log     []string
	guarded map[netip.AddrPort]bool
	ttl     time.Duration
	fail    error
	// releases counts Release calls (one per Expire round).
	releases int
}

func newFakeGuard(t *testing.T, f *fakeTables) *fakeGuard {
	return &fakeGuard{t: t, f: f, guarded: map[netip.AddrPort]bool{}}
}

func (g *fakeGuard) Admit(peer netip.Addr, mapped netip.AddrPort, ttl time.Duration) error {
	if g.fail != nil {
		return g.fail
	}
	g.log = append(g.log, "admit "+peer.String()+" "+mapped.String())
	g.guarded[mapped] = true
	g.ttl = ttl
	return nil
}

func (g *fakeGuard) Release(mapped ...netip.AddrPort) error {
	for _, a := range mapped {
		g.log = append(g.log, "release "+a.String())
		if g.f.hasStatic4(a) {
			g.t.Errorf("guard of %v released while its static BIB entry exists", a)
		}
		delete(g.guarded, a)
	}
	g.releases++
	return nil
}

func (f *fakeTables) hasStatic4(a netip.AddrPort) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.bib {
		if b.Addr4 == a && b.Static {
			return true
		}
	}
	return false
}

// unguarded lists the mapper's entries in the fake Jool that the guard
// does not cover.
func (g *fakeGuard) unguarded(m *Mapper) []BIBEntry {
	var out []BIBEntry
	for _, e := range m.Mappings() {
		if !g.guarded[e.Addr4] {
			out = append(out, e)
		}
	}
	return out
}

// TestJoolMapperGuard: each mapping admits the control connection's peer
// (46 passive: the IPv4 client; 64 active: the IPv4 server) before its BIB
// entry exists, for as long as an unused mapping lives, and the guard ends
// only after the entry is gone.
func TestJoolMapperGuard(t *testing.T) {
	f := newFakeTables()
	f.sessions = []SessionEntry{session64}
	g := newFakeGuard(t, f)
	m, clk := newTestMapper(t, f, MapperConfig{Guard: g})
	s46 := session46(m)
	s64, _ := m.Classify(session64.Src4, session64.Dst4)

	p46, err := m.MapData(mangle.DataRequest{Session: s46, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:40000")})
	if err != nil {
		t.Fatal(err)
	}
	p64, err := m.MapData(mangle.DataRequest{Session: s64, Mode: mangle.Active64, Target: ap("[2001:db8::20]:50001")})
	if err != nil {
		t.Fatal(err)
	}
	// Requested again (a server that reuses its passive port): the peer is
	// admitted once more, for the new data connection.
	if _, err := m.MapData(mangle.DataRequest{Session: s46, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:40000")}); err != nil {
		t.Fatal(err)
	}
	// Stateless modes need no entry and no guard.
	if _, err := m.MapData(mangle.DataRequest{Session: s46, Mode: mangle.Active46, Target: ap("203.0.113.5:30001")}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"admit 203.0.113.5 " + p46.String(),  // the 46 client
		"admit 198.51.100.7 " + p64.String(), // the 64 server
		"admit 203.0.113.5 " + p46.String(),
	}
	if diff := cmp.Diff(want, g.log); diff != "" {
		t.Errorf("guard calls (-want +got):\n%s", diff)
	}
	if g.ttl != defaultJoolIdle || defaultJoolIdle != 30*time.Second {
		t.Errorf("admitted for %v (default idle %v), want 30 s", g.ttl, defaultJoolIdle)
	}
	if u := g.unguarded(m); len(u) != 0 {
		t.Errorf("unguarded entries: %v", u)
	}

	// Unused, they expire with the default idle timeout, guard last.
	g.log = nil
	clk.advance(defaultJoolIdle)
	if err := m.Expire(clk.now()); err != nil {
		t.Fatal(err)
	}
	if len(m.Mappings()) != 0 || len(g.guarded) != 0 {
		t.Errorf("after the idle timeout: mappings %v, guarded %v", m.Mappings(), g.guarded)
	}
	if len(g.log) != 2 || g.releases != 1 {
		t.Errorf("guard calls at expiry: %v in %d calls, want two releases in one call", g.log, g.releases)
	}
}

// TestJoolMapperGuardRefuses: no guard, no mapping (fail closed), and
// nothing left in Jool.
func TestJoolMapperGuardRefuses(t *testing.T) {
	f := newFakeTables()
	g := newFakeGuard(t, f)
	g.fail = errors.New("no peer filter table")
	m, _ := newTestMapper(t, f, MapperConfig{Guard: g})
	if got, err := m.MapData(mangle.DataRequest{Session: session46(m), Mode: mangle.Passive46, Target: ap("[2001:db8::10]:40000")}); err == nil {
		t.Errorf("MapData = %v with a failing guard, want an error", got)
	}
	if n := f.count("add"); n != 0 {
		t.Errorf("%d BIB adds with a failing guard, want 0", n)
	}
	// A session without an IPv4 peer cannot be guarded either.
	g.fail = nil
	bad := mangle.Session{Kind: mangle.Kind46, Server4: addr("192.0.2.1")}
	if _, err := m.MapData(mangle.DataRequest{Session: bad, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:40000")}); err == nil {
		t.Error("mapped for a session with no IPv4 client")
	}
}

// TestJoolMapperGuardCollision: a port that Jool refuses (someone else's)
// is released from the guard before the next is tried.
func TestJoolMapperGuardCollision(t *testing.T) {
	f := newFakeTables()
	f.bib = append(f.bib, BIBEntry{Addr6: ap("[2001:db8::99]:7"), Addr4: ap("192.0.2.1:61000"), Proto: ProtoTCP})
	g := newFakeGuard(t, f)
	m, _ := newTestMapper(t, f, MapperConfig{Guard: g})
	got, err := m.MapData(mangle.DataRequest{Session: session46(m), Mode: mangle.Passive46, Target: ap("[2001:db8::10]:40000")})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"admit 203.0.113.5 192.0.2.1:61000", "release 192.0.2.1:61000", "admit 203.0.113.5 " + got.String()}
	if diff := cmp.Diff(want, g.log); diff != "" {
		t.Errorf("guard calls (-want +got):\n%s", diff)
	}
}

// TestJoolMapperRandomPorts: the port of a new mapping is drawn uniformly
// from all free ports of the range, never the IPv6 port or the next one
// in order.
func TestJoolMapperRandomPorts(t *testing.T) {
	t.Run("draws among all free ports", func(t *testing.T) {
		f := newFakeTables()
		var ns []int
		m, _ := newTestMapper(t, f, MapperConfig{
			ReservedPorts: [2]uint16{61000, 61009},
			Rand:          func(n int) int { ns = append(ns, n); return n - 1 },
		})
		s := session46(m)
		var got []uint16
		for _, p := range []uint16{61000, 61001, 61002} {
			a, err := m.MapData(mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: netip.AddrPortFrom(addr("2001:db8::10"), p)})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, a.Port())
		}
		// The IPv6 ports were in the range and free: the draw decides anyway.
		if diff := cmp.Diff([]uint16{61009, 61008, 61007}, got); diff != "" {
			t.Errorf("ports (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]int{10, 9, 8}, ns); diff != "" {
			t.Errorf("draws over (-want +got):\n%s", diff)
		}
	})
	t.Run("default source", func(t *testing.T) {
		f := newFakeTables()
		m, err := NewMapper(&MapperConfig{Tables: f, ReservedPorts: [2]uint16{61000, 61999}})
		if err != nil {
			t.Fatal(err)
		}
		s := session46(m)
		const n = 100
		seen := map[uint16]bool{}
		var inOrder, sameAsV6 int
		var prev uint16
		for i := range n {
			target := netip.AddrPortFrom(addr("2001:db8::10"), uint16(61000+i))
			a, err := m.MapData(mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: target})
			if err != nil {
				t.Fatal(err)
			}
			p := a.Port()
			if p < 61000 || p > 61999 || seen[p] {
				t.Fatalf("port %d: outside the range or taken twice", p)
			}
			seen[p] = true
			if i > 0 && p == prev+1 {
				inOrder++
			}
			if p == target.Port() {
				sameAsV6++
			}
			prev = p
		}
		// Uniform draws over ~950 ports: each event has a chance of about
		// 1/950 per mapping, 0.1 expected in 100; 10 is far beyond chance
		// (and what a sequential or p4 = p6 allocator gives: 99 and 100).
		if inOrder >= 10 || sameAsV6 >= 10 {
			t.Errorf("of %d ports, %d follow the previous one and %d equal the IPv6 port: predictable", n, inOrder, sameAsV6)
		}
	})
}

// TestJoolMapperIdleDefault: an unused mapping lives 30 s by default, not
// the 2 minutes it used to.
func TestJoolMapperIdleDefault(t *testing.T) {
	f := newFakeTables()
	m, clk := newTestMapper(t, f, MapperConfig{})
	if _, err := m.MapData(mangle.DataRequest{Session: session46(m), Mode: mangle.Passive46, Target: ap("[2001:db8::10]:40000")}); err != nil {
		t.Fatal(err)
	}
	clk.advance(29 * time.Second)
	if err := m.Expire(clk.now()); err != nil {
		t.Fatal(err)
	}
	if len(m.Mappings()) != 1 {
		t.Fatal("an unused mapping went before 30 s")
	}
	clk.advance(time.Second)
	if err := m.Expire(clk.now()); err != nil {
		t.Fatal(err)
	}
	if ms := m.Mappings(); len(ms) != 0 {
		t.Errorf("unused mapping still held after 30 s: %v", ms)
	}
}
