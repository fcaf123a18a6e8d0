package jool

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// pool4Tables is a fakeTables that can add and remove pool4 entries the way
// Jool 4.1 does: ranges kept per mark (what a listing shows) and, fused
// across marks, per address, where a static BIB entry must be; a removal
// takes the range out of the mark's table and out of the address's, even
// where another mark holds the same ports.
type pool4Tables struct {
	*fakeTables
	addr    []Pool4Entry // per address, marks ignored
	failAdd error        // returned by Pool4Add when set
}

func newPool4Tables() *pool4Tables {
	f := newFakeTables()
	// The dynamic pool on another address than S4 = 192.0.2.1, as in the
	// issue: Jool's mark-0 NAPT masks the server's data connection with
	// 192.0.2.3.
	f.pool4 = slices.DeleteFunc(f.pool4, func(p Pool4Entry) bool { return p.PortMin == 1024 })
	f.pool4 = append(f.pool4, Pool4Entry{Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.3/32"), PortMin: 2000, PortMax: 3000})
	return &pool4Tables{fakeTables: f, addr: slices.Clone(f.pool4)}
}

func (p *pool4Tables) Pool4Add(e Pool4Entry) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls["pool4add"]++
	if p.failAdd != nil {
		return p.failAdd
	}
	if !slices.Contains(p.pool4, e) {
		p.pool4 = append(p.pool4, e)
	}
	p.addr = append(p.addr, e)
	return nil
}

func (p *pool4Tables) Pool4Remove(e Pool4Entry) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls["pool4rm"]++
	punch := func(list []Pool4Entry, byMark bool) []Pool4Entry {
		var out []Pool4Entry
		for _, r := range list {
			if (byMark && r.Mark != e.Mark) || !r.overlaps(e) {
				out = append(out, r)
				continue
			}
			if r.PortMin < e.PortMin {
				lo := r
				lo.PortMax = e.PortMin - 1
				out = append(out, lo)
			}
			if r.PortMax > e.PortMax {
				hi := r
				hi.PortMin = e.PortMax + 1
				out = append(out, hi)
			}
		}
		return out
	}
	p.pool4 = punch(p.pool4, true)
	p.addr = punch(p.addr, false)
	return nil
}

// BIBAdd checks the per-address table, as Jool does.
func (p *pool4Tables) BIBAdd(e BIBEntry) error {
	p.mu.Lock()
	covered := false
	for _, r := range p.addr {
		covered = covered || r.Contains(e.Addr4)
	}
	p.mu.Unlock()
	if !covered {
		return &Error{Op: "bib add", Errno: unix.EINVAL, Message: "does not belong to pool4"}
	}
	return p.fakeTables.BIBAdd(e)
}

func (p *pool4Tables) BIBSessions(proto uint8, src4 netip.AddrPort) ([]SessionEntry, error) {
	return perEntryTables{p.fakeTables}.BIBSessions(proto, src4)
}

func (p *pool4Tables) marks() []Pool4Entry {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.pool4)
}

// fakeMarker records the marks asked for.
type fakeMarker struct {
	mu    sync.Mutex
	marks []string
	err   error
}

func (f *fakeMarker) Mark(server, client netip.Addr, mark uint32, ttl time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.marks = append(f.marks, fmt.Sprint(server, " ", client, " ", mark, " ", ttl))
	return nil
}

func (f *fakeMarker) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.marks)
}

func originConfig(mk *fakeMarker) MapperConfig {
	return MapperConfig{Origin: mk, OriginMarks: [2]uint32{46000, 46001}}
}

func active46(s mangle.Session, port uint16) mangle.DataRequest {
	return mangle.DataRequest{Session: s, Mode: mangle.Active46, Target: netip.AddrPortFrom(s.Client4, port)}
}

func TestJoolMapperOriginActive46(t *testing.T) {
	p := newPool4Tables()
	// A second IPv6 server, published on 192.0.2.2 (its own pool4 address).
	p.bib = append(p.bib, BIBEntry{Addr6: ap("[2001:db8::20]:21"), Addr4: ap("192.0.2.2:21"), Proto: ProtoTCP, Static: true})
	for _, e := range []Pool4Entry{
		{Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.2/32"), PortMin: 21, PortMax: 21},
		{Mark: 4242, Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.2/32"), PortMin: 61000, PortMax: 61999},
	} {
		p.pool4, p.addr = append(p.pool4, e), append(p.addr, e)
	}
	before := p.marks()
	mk := &fakeMarker{}
	cfg := originConfig(mk)
	cfg.Tables = p
	m, clk := newTestMapper(t, p.fakeTables, cfg)
	s1 := session46(m) // marks the pair at classification
	s2, ok := m.Classify(ap("203.0.113.6:40000"), ap("192.0.2.2:21"))
	if !ok {
		t.Fatal("second 46 server not classified")
	}
	// A 64 session marks nothing.
	m.Classify(session64.Src4, session64.Dst4)

	for _, tt := range []struct {
		req  mangle.DataRequest
		want netip.AddrPort
	}{
		{active46(s1, 50000), ap("[64:ff9b::cb00:7105]:50000")},
		{active46(s1, 50001), ap("[64:ff9b::cb00:7105]:50001")},
		{active46(s2, 50000), ap("[64:ff9b::cb00:7106]:50000")},
	} {
		got, err := m.MapData(tt.req)
		if err != nil || got != tt.want {
			t.Fatalf("MapData(%v) = %v, %v; want %v (the stateless mapping, as without the origin)", tt.req.Target, got, err, tt.want)
		}
	}
	want := []string{
		"2001:db8::10 64:ff9b::cb00:7105 46000 1h0m0s",
		"2001:db8::20 64:ff9b::cb00:7106 46001 1h0m0s",
	}
	if diff := cmp.Diff(want, mk.marks); diff != "" {
		t.Errorf("marks (-want +got): a pair is marked once at classification, not again within a quarter of its lifetime\n%s", diff)
	}
	// A quarter of the lifetime later a data channel (passive too: the
	// control connection is alive) marks the pair again.
	clk.advance(15*time.Minute + time.Second)
	if _, err := m.MapData(mangle.DataRequest{Session: s1, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:40000")}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.MapData(active46(s1, 50002)); err != nil {
		t.Fatal(err)
	}
	want = append(want, "2001:db8::10 64:ff9b::cb00:7105 46000 1h0m0s")
	if diff := cmp.Diff(want, mk.marks); diff != "" {
		t.Errorf("marks after 15 minutes (-want +got):\n%s", diff)
	}
	// One pool4 entry per S4, each S4 alone with the reserved range.
	origins := []Pool4Entry{
		{Mark: 46000, Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.1/32"), PortMin: 61000, PortMax: 61999},
		{Mark: 46001, Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.2/32"), PortMin: 61000, PortMax: 61999},
	}
	if diff := cmp.Diff(origins, m.Origins(), equateNetip); diff != "" {
		t.Errorf("Origins (-want +got):\n%s", diff)
	}
	if n := p.count("pool4add"); n != 2 {
		t.Errorf("%d pool4 adds, want 2 (one per S4)", n)
	}
	if err := m.Expire(clk.now()); err != nil {
		t.Errorf("Expire: %v", err)
	}

	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Our entries are gone and pool4 is as it was: the mark-4242 ranges
	// the removal took out of the per-address table are back.
	if diff := cmp.Diff(before, p.marks(), equateNetip); diff != "" {
		t.Errorf("pool4 after Close (-before +after):\n%s", diff)
	}
	for _, a := range []string{"192.0.2.1:61500", "192.0.2.2:61000", "192.0.2.2:61999"} {
		e := BIBEntry{Addr6: ap("[2001:db8::77]:1"), Addr4: ap(a), Proto: ProtoTCP}
		if err := p.BIBAdd(e); err != nil {
			t.Errorf("after Close a static entry on %s: %v (the operator's range lost its ports)", a, err)
		}
		p.BIBRemove(e)
	}
	clk.advance(time.Hour)
	if _, err := m.MapData(active46(s1, 50003)); err != nil || mk.count() != 3 {
		t.Errorf("after Close: err %v, marks %v (want the mapping and no new mark)", err, mk.marks)
	}
}

func TestJoolMapperOriginFailureKeepsMapping(t *testing.T) {
	p := newPool4Tables()
	mk := &fakeMarker{err: errors.New("no table")}
	cfg := originConfig(mk)
	cfg.Tables = p
	m, clk := newTestMapper(t, p.fakeTables, cfg)
	s, ok := m.Classify(client4, ap("192.0.2.1:21"))
	if !ok || s.Kind != mangle.Kind46 {
		t.Fatalf("Classify = %v, %v: a failed mark must not fail the classification", s, ok)
	}
	got, err := m.MapData(active46(s, 50000))
	if err != nil || got != ap("[64:ff9b::cb00:7105]:50000") {
		t.Fatalf("MapData = %v, %v: a failed mark must not fail the mapping", got, err)
	}
	err = m.Expire(time.Now())
	if err == nil || !strings.Contains(err.Error(), "may not leave from 192.0.2.1") || !strings.Contains(err.Error(), "no table") {
		t.Errorf("Expire = %v, want the marking failure", err)
	}
	if err := m.Expire(time.Now()); err != nil {
		t.Errorf("second Expire = %v, want nil (reported once)", err)
	}

	// Marks run out: a third pool4 address with the two marks taken.
	mk.err = nil
	p.failAdd = errors.New("pool4 says no")
	m.mu.Lock()
	delete(m.origins, addr("192.0.2.1"))
	m.mu.Unlock()
	clk.advance(time.Hour)
	m.MapData(active46(s, 50001))
	if err := m.Expire(time.Now()); err == nil || !strings.Contains(err.Error(), "pool4 says no") {
		t.Errorf("Expire after a failed pool4 add = %v", err)
	}
	p.failAdd = nil
	p.pool4 = append(p.pool4,
		Pool4Entry{Mark: 46000, Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.9/32"), PortMin: 1, PortMax: 2},
		Pool4Entry{Mark: 46001, Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.9/32"), PortMin: 1, PortMax: 2})
	clk.advance(time.Hour)
	m.MapData(active46(s, 50002))
	if err := m.Expire(time.Now()); err == nil || !strings.Contains(err.Error(), "no free mark in 46000-46001") {
		t.Errorf("Expire with every mark taken = %v", err)
	}
}

func TestJoolMapperOriginCleanup(t *testing.T) {
	p := newPool4Tables()
	// A killed daemon's entry under one of our marks, overlapping the
	// operator's mark-4242 range.
	left := Pool4Entry{Mark: 46001, Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.1/32"), PortMin: 61000, PortMax: 61999}
	p.pool4, p.addr = append(p.pool4, left), append(p.addr, left)
	mk := &fakeMarker{}
	cfg := originConfig(mk)
	cfg.Tables = p
	m, _ := newTestMapper(t, p.fakeTables, cfg)
	n, err := m.CleanupOrigins()
	if n != 1 || err != nil {
		t.Fatalf("CleanupOrigins = %d, %v; want 1, nil", n, err)
	}
	if slices.Contains(p.marks(), left) {
		t.Error("the left entry is still in pool4")
	}
	e := BIBEntry{Addr6: ap("[2001:db8::77]:1"), Addr4: ap("192.0.2.1:61500"), Proto: ProtoTCP}
	if err := p.BIBAdd(e); err != nil {
		t.Errorf("after the cleanup a static entry in the reserved range: %v", err)
	}
	p.BIBRemove(e)
	// The first mapping takes the first mark again.
	m.MapData(active46(session46(m), 50000))
	if got := m.Origins(); len(got) != 1 || got[0].Mark != 46000 {
		t.Errorf("Origins after the cleanup = %v", got)
	}
	if n, err := m.CleanupOrigins(); n != 0 || err != nil {
		t.Errorf("CleanupOrigins again = %d, %v; want 0 (its own live entry stays)", n, err)
	}
}

func TestJoolMapperOriginConfig(t *testing.T) {
	mk := &fakeMarker{}
	for _, tt := range []struct {
		name string
		cfg  MapperConfig
		want string
	}{
		{"no reserved range", MapperConfig{Tables: newPool4Tables(), Origin: mk, OriginMarks: [2]uint32{1, 2}}, "needs the reserved port range"},
		{"mark 0", MapperConfig{Tables: newPool4Tables(), Origin: mk, OriginMarks: [2]uint32{0, 2}, ReservedPorts: [2]uint16{1, 2}}, "bad origin mark range"},
		{"reversed", MapperConfig{Tables: newPool4Tables(), Origin: mk, OriginMarks: [2]uint32{3, 2}, ReservedPorts: [2]uint16{1, 2}}, "bad origin mark range"},
		{"tables without pool4 add", MapperConfig{Tables: newFakeTables(), Origin: mk, OriginMarks: [2]uint32{1, 2}, ReservedPorts: [2]uint16{1, 2}}, "cannot add pool4 entries"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewMapper(&tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewMapper = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestJoolMapperOriginUnsticksDataPort: a dynamic BIB entry of the server's
// port 20 on another address than S4 (made while no mark applied) would
// keep every later data connection from port 20 there. It goes when its
// sessions have all finished, and stays while one is live.
func TestJoolMapperOriginUnsticksDataPort(t *testing.T) {
	p := newPool4Tables()
	stale := BIBEntry{Addr6: ap("[2001:db8::10]:20"), Addr4: ap("192.0.2.3:2095"), Proto: ProtoTCP}
	onS4 := BIBEntry{Addr6: ap("[2001:db8::10]:20"), Addr4: ap("192.0.2.1:61500"), Proto: ProtoTCP}
	other := BIBEntry{Addr6: ap("[2001:db8::10]:5555"), Addr4: ap("192.0.2.3:2096"), Proto: ProtoTCP}
	p.bib = append(p.bib, stale, other)
	sess := SessionEntry{Src6: stale.Addr6, Dst6: ap("[64:ff9b::cb00:7105]:40000"), Src4: stale.Addr4,
		Dst4: ap("203.0.113.5:40000"), Proto: ProtoTCP, State: TCPEstablished}
	p.sessions = []SessionEntry{sess}
	mk := &fakeMarker{}
	cfg := originConfig(mk)
	cfg.Tables = p
	m, clk := newTestMapper(t, p.fakeTables, cfg)

	session46(m)
	if !p.has(stale) {
		t.Fatal("an entry with a live session was removed")
	}
	asked := p.count("bibsessions")
	session46(m)
	if n := p.count("bibsessions"); n != asked {
		t.Errorf("sessions asked %d times more within %v", n-asked, joolUnstickEvery)
	}
	p.mu.Lock()
	p.sessions[0].State = TCPTrans
	p.mu.Unlock()
	clk.advance(11 * time.Second) // past the BIB cache
	s := session46(m)
	if p.has(stale) {
		t.Error("the finished entry on 192.0.2.3 stays: port 20 would keep leaving from there")
	}
	if !p.has(other) {
		t.Error("an entry of another port of the server was removed")
	}
	// One on S4 is left alone.
	p.mu.Lock()
	p.bib = append(p.bib, onS4)
	p.mu.Unlock()
	clk.advance(11 * time.Second)
	m.MapData(active46(s, 50000))
	if !p.has(onS4) {
		t.Error("the entry on S4 was removed")
	}
}
