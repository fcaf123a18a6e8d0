package jool

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// fakeTables is an in-memory Jool: BIB, pool4 and sessions, with Jool's
// rules for adding and removing static entries.
type fakeTables struct {
	mu       sync.Mutex
	bib      []BIBEntry
	pool4    []Pool4Entry
	sessions []SessionEntry
	pool6    netip.Prefix
	calls    map[string]int
	failAdd  error // returned by every BIBAdd when set
}

func newFakeTables() *fakeTables {
	return &fakeTables{
		pool4: []Pool4Entry{
			{Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.1/32"), PortMin: 1024, PortMax: 60999},
			{Mark: 4242, Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.1/32"), PortMin: 61000, PortMax: 61999},
			{Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.1/32"), PortMin: 21, PortMax: 21},
		},
		bib: []BIBEntry{
			// The operator's entry for an IPv6 FTP server.
			{Addr6: ap("[2001:db8::10]:21"), Addr4: ap("192.0.2.1:21"), Proto: ProtoTCP, Static: true},
		},
		pool6: netip.MustParsePrefix("64:ff9b::/96"),
		calls: map[string]int{},
	}
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func (f *fakeTables) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeTables) BIBAdd(e BIBEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["add"]++
	if f.failAdd != nil {
		return f.failAdd
	}
	covered := false
	for _, p := range f.pool4 {
		covered = covered || p.Contains(e.Addr4)
	}
	if !covered {
		return &Error{Op: "bib add", Errno: unix.EINVAL, Message: "not in pool4"}
	}
	for i, old := range f.bib {
		if old.Addr6 == e.Addr6 && old.Addr4 == e.Addr4 {
			f.bib[i].Static = true
			return nil
		}
		if old.Addr6 == e.Addr6 || old.Addr4 == e.Addr4 {
			return &Error{Op: "bib add", Errno: unix.EEXIST, Message: "collides"}
		}
	}
	e.Static = true
	f.bib = append(f.bib, e)
	return nil
}

func (f *fakeTables) BIBRemove(e BIBEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["remove"]++
	for i, old := range f.bib {
		if old.Addr6 == e.Addr6 && old.Addr4 == e.Addr4 {
			f.bib = slices.Delete(f.bib, i, i+1)
			return nil
		}
	}
	return &Error{Op: "bib remove", Errno: unix.ESRCH, Message: "The entry wasn't in the database."}
}

func (f *fakeTables) BIBList(proto uint8) ([]BIBEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["bib"]++
	return slices.Clone(f.bib), nil
}

func (f *fakeTables) Pool4List(proto uint8) ([]Pool4Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["pool4"]++
	return slices.Clone(f.pool4), nil
}

func (f *fakeTables) SessionList(proto uint8) ([]SessionEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["sessions"]++
	return slices.Clone(f.sessions), nil
}

func (f *fakeTables) Pool6() (netip.Prefix, bool, error) {
	return f.pool6, f.pool6.IsValid(), nil
}

func (f *fakeTables) has(e BIBEntry) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.bib {
		if b.Addr6 == e.Addr6 && b.Addr4 == e.Addr4 {
			return true
		}
	}
	return false
}

// perEntryTables adds the per-entry session lookup a *Client has.
type perEntryTables struct{ *fakeTables }

func (p perEntryTables) BIBSessions(proto uint8, src4 netip.AddrPort) ([]SessionEntry, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls["bibsessions"]++
	var out []SessionEntry
	for _, s := range p.sessions {
		if s.Src4 == src4 {
			out = append(out, s)
		}
	}
	return out, nil
}

// lowestFree is a Rand that always picks the lowest free port: the tests
// that are not about randomness can name the port they expect.
func lowestFree(int) int { return 0 }

// fakeClock is a settable clock for the mapper.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestMapper(t *testing.T, f *fakeTables, cfg MapperConfig) (*Mapper, *fakeClock) {
	t.Helper()
	if cfg.Tables == nil {
		cfg.Tables = f
	}
	if cfg.ReservedPorts == [2]uint16{} {
		cfg.ReservedPorts = [2]uint16{61000, 61999}
	}
	if cfg.Rand == nil {
		cfg.Rand = lowestFree
	}
	m, err := NewMapper(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m.now = clk.now
	return m, clk
}

var (
	addr    = netip.MustParseAddr
	client4 = ap("203.0.113.5:40000")
	// A 64 control connection as Jool keeps it.
	session64 = SessionEntry{
		Src6: ap("[2001:db8::20]:50000"), Dst6: ap("[64:ff9b::c633:6407]:21"),
		Src4: ap("192.0.2.1:3000"), Dst4: ap("198.51.100.7:21"),
		Proto: ProtoTCP, State: TCPEstablished,
	}
)

func TestJoolMapperClassify(t *testing.T) {
	f := newFakeTables()
	f.sessions = []SessionEntry{session64}
	m, _ := newTestMapper(t, f, MapperConfig{})

	tests := []struct {
		name           string
		client, server netip.AddrPort
		want           mangle.Session
		ok             bool
	}{
		{"46 on the IPv4 leg", client4, ap("192.0.2.1:21"), mangle.Session{
			Kind: mangle.Kind46, Client4: addr("203.0.113.5"), Client6: addr("64:ff9b::cb00:7105"),
			Server4: addr("192.0.2.1"), Server6: addr("2001:db8::10"),
		}, true},
		{"64 on the IPv4 leg", session64.Src4, session64.Dst4, mangle.Session{
			Kind: mangle.Kind64, Client4: addr("192.0.2.1"), Client6: addr("2001:db8::20"),
			Server4: addr("198.51.100.7"), Server6: addr("64:ff9b::c633:6407"),
		}, true},
		{"64 whose session Jool does not show", ap("192.0.2.1:3001"), ap("198.51.100.7:21"), mangle.Session{
			Kind: mangle.Kind64, Client4: addr("192.0.2.1"),
			Server4: addr("198.51.100.7"), Server6: addr("64:ff9b::c633:6407"),
		}, true},
		{"pool4 address without a static entry for the port", client4, ap("192.0.2.1:2121"), mangle.Session{}, false},
		{"neither side in pool4", client4, ap("198.51.100.7:21"), mangle.Session{}, false},
		{"46 on the IPv6 leg", ap("[64:ff9b::cb00:7105]:40000"), ap("[2001:db8::10]:21"), mangle.Session{
			Kind: mangle.Kind46, Client4: addr("203.0.113.5"), Client6: addr("64:ff9b::cb00:7105"),
			Server4: addr("192.0.2.1"), Server6: addr("2001:db8::10"),
		}, true},
		{"64 on the IPv6 leg", session64.Src6, session64.Dst6, mangle.Session{
			Kind: mangle.Kind64, Client4: addr("192.0.2.1"), Client6: addr("2001:db8::20"),
			Server4: addr("198.51.100.7"), Server6: addr("64:ff9b::c633:6407"),
		}, true},
		{"IPv6 outside pool6", ap("[2001:db8::20]:1"), ap("[2001:db8::30]:21"), mangle.Session{}, false},
		{"mixed families", client4, ap("[2001:db8::10]:21"), mangle.Session{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := m.Classify(tt.client, tt.server)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if diff := cmp.Diff(tt.want, got, equateNetip); diff != "" {
				t.Errorf("session (-want +got):\n%s", diff)
			}
		})
	}
}

func TestJoolMapperClassifyCaches(t *testing.T) {
	f := newFakeTables()
	m, clk := newTestMapper(t, f, MapperConfig{CacheTTL: 10 * time.Second})
	for range 100 {
		if _, ok := m.Classify(client4, ap("192.0.2.1:21")); !ok {
			t.Fatal("not classified")
		}
	}
	if p, b := f.count("pool4"), f.count("bib"); p != 1 || b != 1 {
		t.Errorf("100 classifications listed pool4 %d and the BIB %d times, want 1 and 1", p, b)
	}
	// An entry the operator adds shows up after a miss once the cache is a
	// second old, without waiting for the TTL.
	f.mu.Lock()
	f.bib = append(f.bib, BIBEntry{Addr6: ap("[2001:db8::11]:2121"), Addr4: ap("192.0.2.1:2121"), Proto: ProtoTCP, Static: true})
	f.mu.Unlock()
	clk.advance(2 * time.Second)
	if s, ok := m.Classify(client4, ap("192.0.2.1:2121")); !ok || s.Server6 != addr("2001:db8::11") {
		t.Errorf("new server entry: %+v %v", s, ok)
	}
	clk.advance(20 * time.Second)
	m.Classify(client4, ap("192.0.2.1:21"))
	if p := f.count("pool4"); p != 2 {
		t.Errorf("pool4 listed %d times after the TTL, want 2", p)
	}
}

func session46(m *Mapper) mangle.Session {
	s, _ := m.Classify(client4, ap("192.0.2.1:21"))
	return s
}

func TestJoolMapperMapData(t *testing.T) {
	f := newFakeTables()
	f.sessions = []SessionEntry{session64}
	// Someone else's entry on 61002 (Jool allocated it before the mark was set).
	f.bib = append(f.bib, BIBEntry{Addr6: ap("[2001:db8::99]:7"), Addr4: ap("192.0.2.1:61002"), Proto: ProtoTCP})
	m, _ := newTestMapper(t, f, MapperConfig{})
	s46 := session46(m)
	s64, _ := m.Classify(session64.Src4, session64.Dst4)

	tests := []struct {
		name string
		req  mangle.DataRequest
		want netip.AddrPort
		add  bool // a BIB entry Addr6=target <-> want must exist
	}{
		{"passive46 does not keep the IPv6 port, even inside the range",
			mangle.DataRequest{Session: s46, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:61005")}, ap("192.0.2.1:61000"), true},
		{"passive46 again: same entry",
			mangle.DataRequest{Session: s46, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:61005")}, ap("192.0.2.1:61000"), true},
		{"passive46 outside the range",
			mangle.DataRequest{Session: s46, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:40000")}, ap("192.0.2.1:61001"), true},
		{"skips a port Jool gave someone else",
			mangle.DataRequest{Session: s46, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:40001")}, ap("192.0.2.1:61003"), true},
		{"next one",
			mangle.DataRequest{Session: s46, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:40002")}, ap("192.0.2.1:61004"), true},
		{"same port as an owned one",
			mangle.DataRequest{Session: s46, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:61000")}, ap("192.0.2.1:61005"), true},
		{"active64 on the client's pool4 address",
			mangle.DataRequest{Session: s64, Mode: mangle.Active64, Target: ap("[2001:db8::20]:61500")}, ap("192.0.2.1:61006"), true},
		{"passive64 is stateless",
			mangle.DataRequest{Session: s64, Mode: mangle.Passive64, Target: ap("198.51.100.7:30000")}, ap("[64:ff9b::c633:6407]:30000"), false},
		{"active46 is stateless",
			mangle.DataRequest{Session: s46, Mode: mangle.Active46, Target: ap("203.0.113.5:30001")}, ap("[64:ff9b::cb00:7105]:30001"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			adds := f.count("add")
			got, err := m.MapData(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("MapData = %v, want %v", got, tt.want)
			}
			e := BIBEntry{Addr6: tt.req.Target, Addr4: got}
			if tt.add && !f.has(e) {
				t.Errorf("jool lacks %v", e)
			}
			if !tt.add && f.count("add") != adds {
				t.Errorf("a stateless mapping added a BIB entry")
			}
		})
	}
	if n := len(m.Mappings()); n != 6 {
		t.Errorf("%d mappings held, want 6: %v", n, m.Mappings())
	}
}

func TestJoolMapperMapDataErrors(t *testing.T) {
	f := newFakeTables()
	m, _ := newTestMapper(t, f, MapperConfig{ReservedPorts: [2]uint16{61000, 61001}, MaxEntries: 2})
	s := session46(m)
	req := func(port uint16) mangle.DataRequest {
		return mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: netip.AddrPortFrom(addr("2001:db8::10"), port)}
	}
	if _, err := m.MapData(req(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.MapData(req(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.MapData(req(3)); err == nil {
		t.Error("mapped a third entry past MaxEntries")
	}

	f2 := newFakeTables()
	m2, _ := newTestMapper(t, f2, MapperConfig{ReservedPorts: [2]uint16{61000, 61001}})
	s2 := session46(m2)
	for p := uint16(1); p <= 2; p++ {
		if _, err := m2.MapData(mangle.DataRequest{Session: s2, Mode: mangle.Passive46, Target: netip.AddrPortFrom(addr("2001:db8::10"), p)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m2.MapData(mangle.DataRequest{Session: s2, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:3")}); err == nil {
		t.Error("mapped with the reserved range exhausted")
	}

	f3 := newFakeTables()
	f3.failAdd = &Error{Op: "bib add", Errno: unix.ENOMEM}
	m3, _ := newTestMapper(t, f3, MapperConfig{})
	if _, err := m3.MapData(mangle.DataRequest{Session: session46(m3), Mode: mangle.Passive46, Target: ap("[2001:db8::10]:5")}); !errors.Is(err, unix.ENOMEM) {
		t.Errorf("err = %v, want ENOMEM passed up", err)
	}

	bad := []mangle.DataRequest{
		{Session: s, Mode: mangle.Passive46, Target: ap("192.0.2.9:5")},
		{Session: mangle.Session{Kind: mangle.Kind46}, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:5")},
		{Session: s, Mode: mangle.Active46, Target: ap("[2001:db8::10]:5")},
		{Session: s, Mode: 0, Target: ap("192.0.2.9:5")},
	}
	for _, r := range bad {
		if got, err := m2.MapData(r); err == nil {
			t.Errorf("MapData(%+v) = %v, want an error", r, got)
		}
	}
}

// TestJoolMapperAdoptsLeftover: a static entry of a killed daemon for the
// same target is adopted when Jool reports the collision.
func TestJoolMapperAdoptsLeftover(t *testing.T) {
	f := newFakeTables()
	left := BIBEntry{Addr6: ap("[2001:db8::10]:61005"), Addr4: ap("192.0.2.1:61100"), Proto: ProtoTCP, Static: true}
	f.bib = append(f.bib, left)
	m, _ := newTestMapper(t, f, MapperConfig{CacheTTL: time.Hour})
	s := session46(m) // caches the BIB with the leftover in it...
	f.mu.Lock()
	f.bib = f.bib[:1] // ...then it vanishes and comes back on another port
	f.bib = append(f.bib, BIBEntry{Addr6: left.Addr6, Addr4: ap("192.0.2.1:61200"), Proto: ProtoTCP, Static: true})
	f.mu.Unlock()
	got, err := m.MapData(mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: left.Addr6})
	if err != nil {
		t.Fatal(err)
	}
	if got != ap("192.0.2.1:61200") {
		t.Errorf("MapData = %v, want the existing 192.0.2.1:61200", got)
	}
	if ms := m.Mappings(); len(ms) != 1 || ms[0].Addr4 != got {
		t.Errorf("mappings %v, want the adopted entry", ms)
	}
}

func TestJoolMapperExpire(t *testing.T) {
	t.Run("session listing", func(t *testing.T) { testJoolMapperExpire(t, false) })
	t.Run("per-entry lookups", func(t *testing.T) { testJoolMapperExpire(t, true) })
}

func testJoolMapperExpire(t *testing.T, perEntry bool) {
	f := newFakeTables()
	var tables Tables = f
	if perEntry {
		tables = perEntryTables{f}
	}
	m, clk := newTestMapper(t, f, MapperConfig{Tables: tables, IdleTimeout: time.Minute})
	s := session46(m)
	mapData := func(port uint16) BIBEntry {
		t.Helper()
		target := netip.AddrPortFrom(addr("2001:db8::10"), port)
		got, err := m.MapData(mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: target})
		if err != nil {
			t.Fatal(err)
		}
		return BIBEntry{Addr6: target, Addr4: got, Proto: ProtoTCP, Static: true}
	}
	unused := mapData(61001)
	used := mapData(61002)
	short := mapData(61003)
	sessionOn := func(e BIBEntry, state uint8) SessionEntry {
		return SessionEntry{Src6: e.Addr6, Dst6: ap("[64:ff9b::cb00:7105]:40100"), Src4: e.Addr4, Dst4: ap("203.0.113.5:40100"), Proto: ProtoTCP, State: state}
	}
	f.sessions = []SessionEntry{sessionOn(used, TCPEstablished), sessionOn(short, TCPTrans)}

	clk.advance(5 * time.Second)
	if err := m.Expire(clk.t); err != nil {
		t.Fatal(err)
	}
	for _, e := range []BIBEntry{unused, used, short} {
		if !f.has(e) {
			t.Errorf("%v removed after 5 s", e)
		}
	}

	clk.advance(10 * time.Second)
	m.Expire(clk.t)
	if f.has(short) {
		t.Errorf("%v kept: its only connection finished 15 s after the request", short)
	}
	if !f.has(used) || !f.has(unused) {
		t.Error("live or young entries removed")
	}

	clk.advance(time.Minute)
	m.Expire(clk.t)
	if f.has(unused) {
		t.Errorf("%v kept: no connection within the idle timeout", unused)
	}
	if !f.has(used) {
		t.Errorf("%v removed while its connection is live", used)
	}

	f.sessions = nil // Jool dropped the finished session
	m.Expire(clk.t)
	if f.has(used) {
		t.Errorf("%v kept after its session went away", used)
	}
	if n := len(m.Mappings()); n != 0 {
		t.Errorf("%d mappings left", n)
	}
	if !f.has(BIBEntry{Addr6: ap("[2001:db8::10]:21"), Addr4: ap("192.0.2.1:21")}) {
		t.Error("the operator's entry was removed")
	}

	// An entry someone else removed is forgotten without an error.
	e := mapData(61010)
	f.BIBRemove(e)
	clk.advance(2 * time.Minute)
	if err := m.Expire(clk.t); err != nil {
		t.Errorf("Expire: %v", err)
	}
	if n := len(m.Mappings()); n != 0 {
		t.Errorf("%d mappings left", n)
	}
	if perEntry && (f.count("sessions") != 0 || f.count("bibsessions") == 0) {
		t.Errorf("listed all sessions %d times, looked entries up %d times", f.count("sessions"), f.count("bibsessions"))
	}
	if !perEntry && f.count("sessions") == 0 {
		t.Error("never listed the sessions")
	}
}

func TestJoolMapperCloseAndCleanup(t *testing.T) {
	f := newFakeTables()
	// A killed daemon's entries, in its ledger.
	leftovers := []BIBEntry{
		{Addr6: ap("[2001:db8::10]:61000"), Addr4: ap("192.0.2.1:61000"), Proto: ProtoTCP, Static: true},
		{Addr6: ap("[2001:db8::20]:5000"), Addr4: ap("192.0.2.1:61999"), Proto: ProtoTCP, Static: true},
	}
	keep := []BIBEntry{
		f.bib[0], // the operator's server entry
		{Addr6: ap("[2001:db8::20]:5001"), Addr4: ap("192.0.2.1:61500"), Proto: ProtoTCP},               // dynamic
		{Addr6: ap("[2001:db8::20]:5002"), Addr4: ap("192.0.2.1:60999"), Proto: ProtoTCP, Static: true}, // outside the range
	}
	f.bib = append(append([]BIBEntry{}, keep...), leftovers...)
	ledger := &FileLedger{Path: filepath.Join(t.TempDir(), "run", "jool-bib")}
	if err := ledger.Store(leftovers); err != nil {
		t.Fatal(err)
	}
	m, _ := newTestMapper(t, f, MapperConfig{Ledger: ledger})
	n, err := m.Cleanup()
	if err != nil || n != 2 {
		t.Fatalf("Cleanup = %d, %v; want 2", n, err)
	}
	if diff := cmp.Diff(keep, f.bib, equateNetip); diff != "" {
		t.Errorf("BIB after cleanup (-want +got):\n%s", diff)
	}
	if got, err := ledger.Load(); err != nil || len(got) != 0 {
		t.Errorf("ledger after cleanup: %v, %v; want empty", got, err)
	}

	s := session46(m)
	for p := uint16(1); p <= 3; p++ {
		if _, err := m.MapData(mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: netip.AddrPortFrom(addr("2001:db8::10"), p)}); err != nil {
			t.Fatal(err)
		}
	}
	// The ledger follows the entries as they are added.
	if got, err := ledger.Load(); err != nil || len(got) != 3 {
		t.Errorf("ledger after 3 mappings: %v, %v; want 3 entries", got, err)
	}
	if diff := cmp.Diff(m.Mappings(), mustLoad(t, ledger), equateNetip); diff != "" {
		t.Errorf("ledger differs from the mappings held (-held +ledger):\n%s", diff)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(keep, f.bib, equateNetip); diff != "" {
		t.Errorf("BIB after Close (-want +got):\n%s", diff)
	}
	if got := mustLoad(t, ledger); len(got) != 0 {
		t.Errorf("ledger after Close: %v; want empty", got)
	}
	if _, err := m.MapData(mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:9")}); !errors.Is(err, ErrMapperClosed) {
		t.Errorf("MapData after Close: %v", err)
	}
}

func mustLoad(t *testing.T, l Ledger) []BIBEntry {
	t.Helper()
	got, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestJoolMapperCrashCleanup: a daemon adds entries and dies without
// Close; the next one removes exactly those, and leaves an operator's
// static entry in the reserved range alone, refusing the range.
func TestJoolMapperCrashCleanup(t *testing.T) {
	f := newFakeTables()
	ledger := &FileLedger{Path: filepath.Join(t.TempDir(), "jool-bib")}
	first, _ := newTestMapper(t, f, MapperConfig{Ledger: ledger})
	s := session46(first)
	for p := uint16(1); p <= 2; p++ {
		if _, err := first.MapData(mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: netip.AddrPortFrom(addr("2001:db8::10"), p)}); err != nil {
			t.Fatal(err)
		}
	}
	// The first daemon is killed here. The operator then adds a static
	// entry of their own inside the range.
	operators := BIBEntry{Addr6: ap("[2001:db8::99]:21"), Addr4: ap("192.0.2.1:61777"), Proto: ProtoTCP, Static: true}
	f.bib = append(f.bib, operators)
	before := len(f.bib)

	second, _ := newTestMapper(t, f, MapperConfig{Ledger: ledger})
	n, err := second.Cleanup()
	var inUse *ReservedInUseError
	if n != 2 || !errors.As(err, &inUse) || len(inUse.Entries) != 1 || inUse.Entries[0] != operators {
		t.Fatalf("Cleanup = %d, %v; want 2 removed and the operator's entry named", n, err)
	}
	if !strings.Contains(err.Error(), "2001:db8::99#21 192.0.2.1#61777") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q: want one line naming the operator's entry", err)
	}
	if len(f.bib) != before-2 || !slices.Contains(f.bib, operators) {
		t.Errorf("BIB after cleanup %v: want the operator's entry kept, ours removed", f.bib)
	}

	// Without a ledger nothing is removed: an entry in the range may be
	// an operator's.
	third, _ := newTestMapper(t, f, MapperConfig{})
	if n, err := third.Cleanup(); n != 0 || !errors.As(err, &inUse) {
		t.Errorf("Cleanup without a ledger = %d, %v; want 0 and the operator's entry named", n, err)
	}
	if !slices.Contains(f.bib, operators) {
		t.Error("Cleanup without a ledger removed the operator's entry")
	}
}

func TestFileLedgerRoundTrip(t *testing.T) {
	l := &FileLedger{Path: filepath.Join(t.TempDir(), "a", "b", "jool-bib")}
	if got, err := l.Load(); err != nil || got != nil {
		t.Fatalf("Load of a missing file = %v, %v; want nothing", got, err)
	}
	want := []BIBEntry{
		{Addr6: ap("[2001:db8::10]:61000"), Addr4: ap("192.0.2.1:61000"), Proto: ProtoTCP, Static: true},
		{Addr6: ap("[64:ff9b::c000:205]:21"), Addr4: ap("192.0.2.1:61001"), Proto: ProtoTCP, Static: true},
	}
	if err := l.Store(want); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(l.Path)
	if string(b) != "2001:db8::10#61000 192.0.2.1#61000 tcp\n64:ff9b::c000:205#21 192.0.2.1#61001 tcp\n" {
		t.Errorf("file:\n%s", b)
	}
	if diff := cmp.Diff(want, mustLoad(t, l), equateNetip); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	os.WriteFile(l.Path, []byte("2001:db8::10#61000 192.0.2.1 tcp\n"), 0o600)
	if _, err := l.Load(); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("Load of a bad line: %v", err)
	}
}

func TestNewJoolMapper(t *testing.T) {
	f := newFakeTables()
	m, err := NewMapper(&MapperConfig{Tables: f})
	if err != nil {
		t.Fatal(err)
	}
	if m.pool6 != netip.MustParsePrefix("64:ff9b::/96") {
		t.Errorf("pool6 %v not read from jool", m.pool6)
	}
	bad := []MapperConfig{
		{},
		{Tables: f, ReservedPorts: [2]uint16{62000, 61000}},
		{Tables: f, ReservedPorts: [2]uint16{0, 61000}},
		{Tables: f, Pool6: netip.MustParsePrefix("2001:db8::/80")},
		{Tables: f, Pool6: netip.MustParsePrefix("192.0.2.0/24")},
	}
	for _, cfg := range bad {
		if _, err := NewMapper(&cfg); err == nil {
			t.Errorf("NewMapper(%+v) succeeded", cfg)
		}
	}
	f.pool6 = netip.Prefix{}
	if _, err := NewMapper(&MapperConfig{Tables: f}); err == nil {
		t.Error("accepted an instance without pool6")
	}
}

// TestJoolMapperConcurrent runs classifications and mappings from several
// goroutines (go test -race finds unguarded state).
func TestJoolMapperConcurrent(t *testing.T) {
	f := newFakeTables()
	f.sessions = []SessionEntry{session64}
	m, _ := newTestMapper(t, f, MapperConfig{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				s, ok := m.Classify(client4, ap("192.0.2.1:21"))
				if !ok {
					t.Error("not classified")
					return
				}
				target := netip.AddrPortFrom(addr("2001:db8::10"), uint16(1000+g*100+i%10))
				if _, err := m.MapData(mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: target}); err != nil {
					t.Error(err)
					return
				}
				m.Expire(time.Now())
			}
		}()
	}
	wg.Wait()
	if got := len(m.Mappings()); got > 40 {
		t.Errorf("%d mappings for 40 targets", got)
	}
}

// An EPRT needs a static BIB entry in the reserved range: without one the
// mapper says so, and the engine then answers ALGS with the token EPSV and
// passes EPRT unchanged (RFC 6384 section 11; docs/PROTOCOL.md P64-6).
func TestJoolMapperCanMapActive64(t *testing.T) {
	f := newFakeTables()
	with, _ := newTestMapper(t, f, MapperConfig{})
	without, err := NewMapper(&MapperConfig{Tables: f})
	if err != nil {
		t.Fatal(err)
	}
	var _ mangle.ActiveChecker = with
	if !with.CanMapActive64(mangle.Session{}) {
		t.Error("with a reserved range: CanMapActive64 false")
	}
	if without.CanMapActive64(mangle.Session{}) {
		t.Error("without a reserved range: CanMapActive64 true")
	}
}

// ReloadPool4 (the daemon's SIGHUP) reads pool4 at once, however fresh the
// copy in hand; a pool4 address added since is then translated.
func TestMapperReloadPool4(t *testing.T) {
	f := newFakeTables()
	m, _ := newTestMapper(t, f, MapperConfig{ReservedPorts: [2]uint16{61000, 61999}})
	client, server := ap("[2001:db8::7]:40000"), ap("[64:ff9b::203.0.113.5]:21")
	m.Classify(client, server) // pool4 read once
	before := f.calls["pool4"]
	f.mu.Lock()
	f.pool4 = append(f.pool4, Pool4Entry{Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.2/32"), PortMin: 1024, PortMax: 60999})
	f.mu.Unlock()
	p, err := m.ReloadPool4()
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 4 || f.calls["pool4"] != before+1 {
		t.Errorf("ReloadPool4: %d entries after %d more listings, want 4 after 1", len(p), f.calls["pool4"]-before)
	}
	if !m.inPool4(netip.MustParseAddr("192.0.2.2")) {
		t.Error("the new pool4 address is not known after ReloadPool4")
	}
}
