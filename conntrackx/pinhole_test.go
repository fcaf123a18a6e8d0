package conntrackx

import (
	"bytes"
	"errors"
	"log/slog"
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

// fixedMapper answers every MapData with ep (or err).
type fixedMapper struct {
	ep  netip.AddrPort
	err error
}

func (f fixedMapper) Classify(client, server netip.AddrPort) (mangle.Session, bool) {
	return mangle.Session{Kind: mangle.Kind46}, true
}

func (f fixedMapper) MapData(req mangle.DataRequest) (netip.AddrPort, error) { return f.ep, f.err }

// fakeExpecter records expectations and liberal requests, and fails
// with err.
type fakeExpecter struct {
	mu      sync.Mutex
	got     []Expectation
	liberal [][2]netip.AddrPort
	err     error
}

func (f *fakeExpecter) Liberal(client, server netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.liberal = append(f.liberal, [2]netip.AddrPort{client, server})
	return f.err
}

func (f *fakeExpecter) Create(e Expectation) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, e)
	return f.err
}

var ap = netip.MustParseAddrPort

// The names of docs/PROTOCOL.md: C4 192.0.2.2, S4 203.0.113.10, S6
// 2001:db8:6::10, Pref 2001:db8:64::/96, so Pref::C4 2001:db8:64::c000:202;
// in 64 sessions C6 2001:db8:6::2, C4' 198.51.100.7, Pref::S4
// 2001:db8:64::cb00:710a. Ports: control 40000 -> 21, data 50000 (Tayga
// keeps ports; the active 64 case pretends a translator that maps it to
// 60000).
func TestPinholeFor(t *testing.T) {
	tests := []struct {
		name           string
		mode           mangle.DataMode
		client, server netip.AddrPort // the control connection on the engine's leg
		target, ep     netip.AddrPort
		want           Expectation
	}{
		{
			name: "passive 46, IPv4 leg", mode: mangle.Passive46,
			client: ap("192.0.2.2:40000"), server: ap("203.0.113.10:21"),
			target: ap("[2001:db8:6::10]:50000"), ep: ap("203.0.113.10:50000"),
			want: Expectation{From: netip.MustParseAddr("192.0.2.2"), To: ap("203.0.113.10:50000")},
		},
		{
			name: "passive 46, IPv6 leg", mode: mangle.Passive46,
			client: ap("[2001:db8:64::c000:202]:40000"), server: ap("[2001:db8:6::10]:21"),
			target: ap("[2001:db8:6::10]:50000"), ep: ap("203.0.113.10:50000"),
			want: Expectation{From: netip.MustParseAddr("2001:db8:64::c000:202"), To: ap("[2001:db8:6::10]:50000")},
		},
		{
			name: "active 46, IPv4 leg", mode: mangle.Active46,
			client: ap("192.0.2.2:40000"), server: ap("203.0.113.10:21"),
			target: ap("192.0.2.2:50000"), ep: ap("[2001:db8:64::c000:202]:50000"),
			want: Expectation{From: netip.MustParseAddr("203.0.113.10"), To: ap("192.0.2.2:50000")},
		},
		{
			name: "active 46, IPv6 leg", mode: mangle.Active46,
			client: ap("[2001:db8:64::c000:202]:40000"), server: ap("[2001:db8:6::10]:21"),
			target: ap("192.0.2.2:50000"), ep: ap("[2001:db8:64::c000:202]:50000"),
			want: Expectation{From: netip.MustParseAddr("2001:db8:6::10"), To: ap("[2001:db8:64::c000:202]:50000")},
		},
		{
			name: "passive 64, IPv4 leg", mode: mangle.Passive64,
			client: ap("198.51.100.7:40000"), server: ap("203.0.113.10:21"),
			target: ap("203.0.113.10:50000"), ep: ap("[2001:db8:64::cb00:710a]:50000"),
			want: Expectation{From: netip.MustParseAddr("198.51.100.7"), To: ap("203.0.113.10:50000")},
		},
		{
			name: "passive 64, 227 naming another address: still the server", mode: mangle.Passive64,
			client: ap("198.51.100.7:40000"), server: ap("203.0.113.10:21"),
			target: ap("10.0.0.1:50000"), ep: ap("[2001:db8:64::cb00:710a]:50000"),
			want: Expectation{From: netip.MustParseAddr("198.51.100.7"), To: ap("203.0.113.10:50000")},
		},
		{
			name: "passive 64, IPv6 leg", mode: mangle.Passive64,
			client: ap("[2001:db8:6::2]:40000"), server: ap("[2001:db8:64::cb00:710a]:21"),
			target: ap("203.0.113.10:50000"), ep: ap("[2001:db8:64::cb00:710a]:50000"),
			want: Expectation{From: netip.MustParseAddr("2001:db8:6::2"), To: ap("[2001:db8:64::cb00:710a]:50000")},
		},
		{
			name: "active 64, IPv4 leg", mode: mangle.Active64,
			client: ap("198.51.100.7:40000"), server: ap("203.0.113.10:21"),
			target: ap("[2001:db8:6::2]:50000"), ep: ap("198.51.100.7:60000"),
			want: Expectation{From: netip.MustParseAddr("203.0.113.10"), To: ap("198.51.100.7:60000")},
		},
		{
			name: "active 64, IPv6 leg", mode: mangle.Active64,
			client: ap("[2001:db8:6::2]:40000"), server: ap("[2001:db8:64::cb00:710a]:21"),
			target: ap("[2001:db8:6::2]:50000"), ep: ap("198.51.100.7:60000"),
			want: Expectation{From: netip.MustParseAddr("2001:db8:64::cb00:710a"), To: ap("[2001:db8:6::2]:50000")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := mangle.DataRequest{Mode: tt.mode, Target: tt.target, Client: tt.client, Server: tt.server}
			got, ok := pinholeFor(req, tt.ep)
			if !ok {
				t.Fatalf("pinholeFor(%+v, %v) refused", req, tt.ep)
			}
			want := tt.want
			want.Client, want.Server = tt.client, tt.server
			if got != want {
				t.Errorf("pinholeFor = %v, want %v", got, want)
			}
		})
	}
}

func TestPinholeForRefuses(t *testing.T) {
	c4, s4 := ap("192.0.2.2:40000"), ap("203.0.113.10:21")
	tests := []struct {
		name string
		req  mangle.DataRequest
		ep   netip.AddrPort
	}{
		{"no control connection", mangle.DataRequest{Mode: mangle.Active46, Target: ap("192.0.2.2:50000")}, ap("[2001:db8:64::c000:202]:50000")},
		{"mixed families", mangle.DataRequest{Mode: mangle.Active46, Client: c4, Server: ap("[2001:db8:6::10]:21"), Target: ap("192.0.2.2:50000")}, ap("[2001:db8:64::c000:202]:50000")},
		{"active target not the client", mangle.DataRequest{Mode: mangle.Active46, Client: c4, Server: s4, Target: ap("192.0.2.99:50000")}, ap("[2001:db8:64::c000:263]:50000")},
		{"nothing in the leg's family", mangle.DataRequest{Mode: mangle.Passive46, Client: c4, Server: s4, Target: ap("[2001:db8:6::10]:50000")}, ap("[2001:db8:6::10]:50000")},
		{"port 0", mangle.DataRequest{Mode: mangle.Passive46, Client: c4, Server: s4, Target: ap("[2001:db8:6::10]:50000")}, ap("203.0.113.10:0")},
		{"unknown mode", mangle.DataRequest{Client: c4, Server: s4, Target: ap("192.0.2.2:50000")}, ap("[2001:db8:64::c000:202]:50000")},
	}
	for _, tt := range tests {
		if e, ok := pinholeFor(tt.req, tt.ep); ok {
			t.Errorf("%s: pinholeFor made %v", tt.name, e)
		}
	}
}

// activeReq46 is a 46 active request on the IPv4 leg from control port cport.
func activeReq46(cport uint16) mangle.DataRequest {
	return mangle.DataRequest{
		Mode:   mangle.Active46,
		Target: ap("192.0.2.2:50000"),
		Client: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), cport),
		Server: ap("203.0.113.10:21"),
	}
}

func TestPinholeMapperCreates(t *testing.T) {
	ep := ap("[2001:db8:64::c000:202]:50000")
	x := &fakeExpecter{}
	m := NewPinholeMapper(fixedMapper{ep: ep}, x, slog.New(slog.DiscardHandler))
	got, err := m.MapData(activeReq46(40000))
	if err != nil || got != ep {
		t.Fatalf("MapData = %v, %v; want %v", got, err, ep)
	}
	want := []Expectation{{
		Client: ap("192.0.2.2:40000"), Server: ap("203.0.113.10:21"),
		From: netip.MustParseAddr("203.0.113.10"), To: ap("192.0.2.2:50000"),
	}}
	if diff := cmp.Diff(want, x.got, cmp.Comparer(func(a, b Expectation) bool { return a == b })); diff != "" {
		t.Errorf("expectations (-want +got):\n%s", diff)
	}
	if s := m.Stats(); s != (PinholeStats{Created: 1}) {
		t.Errorf("stats %+v", s)
	}
	if want := [][2]netip.AddrPort{{ap("192.0.2.2:40000"), ap("203.0.113.10:21")}}; !slices.Equal(want, x.liberal) {
		t.Errorf("liberal tracking asked for %v, want %v", x.liberal, want)
	}
	if s, ok := m.Classify(ap("192.0.2.2:40000"), ap("203.0.113.10:21")); !ok || s.Kind != mangle.Kind46 {
		t.Errorf("Classify is not the inner mapper's: %+v, %v", s, ok)
	}

	// A request that names someone else: no expectation, counted.
	bounce := activeReq46(40000)
	bounce.Target = ap("192.0.2.99:50000")
	if _, err := m.MapData(bounce); err != nil {
		t.Fatal(err)
	}
	if len(x.got) != 1 || m.Stats().Refused != 1 {
		t.Errorf("bounce: %d expectations, stats %+v", len(x.got), m.Stats())
	}
}

func TestPinholeMapperInnerError(t *testing.T) {
	x := &fakeExpecter{}
	inner := errors.New("no free port")
	m := NewPinholeMapper(fixedMapper{err: inner}, x, slog.New(slog.DiscardHandler))
	if _, err := m.MapData(activeReq46(40000)); !errors.Is(err, inner) {
		t.Fatalf("MapData error %v, want the inner mapper's", err)
	}
	if len(x.got) != 0 {
		t.Errorf("an expectation for a data channel that was not mapped: %v", x.got)
	}
}

func TestPinholeMapperFailureLog(t *testing.T) {
	ep := ap("[2001:db8:64::c000:202]:50000")
	x := &fakeExpecter{err: unix.EOPNOTSUPP}
	var buf bytes.Buffer
	m := NewPinholeMapper(fixedMapper{ep: ep}, x, slog.New(slog.NewTextHandler(&buf, nil)))
	now := time.Unix(1e9, 0)
	m.now = func() time.Time { return now }
	m.last = now
	lines := func() int { return strings.Count(buf.String(), "\n") }

	// A failure never fails the rewrite.
	for range 3 {
		if got, err := m.MapData(activeReq46(40000)); err != nil || got != ep {
			t.Fatalf("MapData = %v, %v; want %v despite the failed expectation", got, err, ep)
		}
	}
	if lines() != 1 {
		t.Errorf("three failures of one control connection logged %d lines, want 1:\n%s", lines(), &buf)
	}
	if !strings.Contains(buf.String(), "operation not supported") || !strings.Contains(buf.String(), "mode=active46") {
		t.Errorf("log line lacks the error or the mode: %s", &buf)
	}
	// Other control connections: the burst, then nothing until time
	// passes.
	for port := uint16(40001); port < 40001+2*pinholeLogBurst; port++ {
		m.MapData(activeReq46(port))
	}
	if lines() != pinholeLogBurst {
		t.Errorf("%d lines after a burst of failures, want %d", lines(), pinholeLogBurst)
	}
	now = now.Add(2 * time.Second)
	m.MapData(activeReq46(41000))
	m.MapData(activeReq46(41001))
	m.MapData(activeReq46(41002))
	if lines() != pinholeLogBurst+2 {
		t.Errorf("%d lines two seconds later, want %d", lines(), pinholeLogBurst+2)
	}
	if s := m.Stats(); s.Failed != 3+2*pinholeLogBurst+3 || s.Created != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestPinholeMapperConcurrent(t *testing.T) {
	x := &fakeExpecter{err: unix.ENOENT}
	m := NewPinholeMapper(fixedMapper{ep: ap("[2001:db8:64::c000:202]:50000")}, x, slog.New(slog.DiscardHandler))
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 100 {
				m.MapData(activeReq46(uint16(40000 + i*100 + j)))
			}
		})
	}
	wg.Wait()
	if s := m.Stats(); s.Failed != 400 {
		t.Errorf("stats %+v, want 400 failures", s)
	}
}

// The engine's first length change of a control connection makes its
// conntrack entry liberal, before any data channel; a failure is counted.
func TestPinholeLengthChanged(t *testing.T) {
	var _ mangle.LengthWatcher = (*PinholeMapper)(nil)
	x := &fakeExpecter{}
	m := NewPinholeMapper(fixedMapper{}, x, slog.New(slog.DiscardHandler))
	m.LengthChanged(ap("[2001:db8:6::2]:40000"), ap("[2001:db8:64::cb00:710a]:21"))
	if want := [][2]netip.AddrPort{{ap("[2001:db8:6::2]:40000"), ap("[2001:db8:64::cb00:710a]:21")}}; !slices.Equal(want, x.liberal) {
		t.Errorf("liberal tracking asked for %v, want %v", x.liberal, want)
	}
	x.err = errors.New("no such connection")
	m.LengthChanged(ap("192.0.2.2:40001"), ap("203.0.113.10:21"))
	if s := m.Stats(); s.Failed != 1 {
		t.Errorf("stats %+v, want one failure", s)
	}
}

type activeMapper struct {
	fixedMapper
	can bool
}

func (m activeMapper) CanMapActive64(mangle.Session) bool { return m.can }

// The pinhole mapper says what its inner mapper says about EPRT, and yes
// when the inner one does not say (docs/PROTOCOL.md P64-6).
func TestPinholeMapperCanMapActive64(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tt := range []struct {
		inner mangle.Mapper
		want  bool
	}{{fixedMapper{}, true}, {activeMapper{can: true}, true}, {activeMapper{can: false}, false}} {
		m := NewPinholeMapper(tt.inner, &fakeExpecter{}, log)
		if got := m.CanMapActive64(mangle.Session{}); got != tt.want {
			t.Errorf("inner %T: CanMapActive64 = %v, want %v", tt.inner, got, tt.want)
		}
	}
}

// LPSV and LPRT (DataRequest.Long): the expectation of the other leg too,
// since the kernel's FTP helper there does not parse RFC 1639; other
// exchanges get the engine's leg only.
func TestPinholeMapperLong(t *testing.T) {
	sess := mangle.Session{
		Kind:    mangle.Kind64,
		Client6: netip.MustParseAddr("2001:db8:6::2"), Client4: netip.MustParseAddr("198.51.100.7"),
		Server4: netip.MustParseAddr("203.0.113.10"), Server6: netip.MustParseAddr("2001:db8:64::cb00:710a"),
	}
	c4, s4 := ap("198.51.100.7:40000"), ap("203.0.113.10:21")
	c6, s6 := ap("[2001:db8:6::2]:40000"), ap("[2001:db8:64::cb00:710a]:21")
	tests := []struct {
		name           string
		mode           mangle.DataMode
		client, server netip.AddrPort
		target, ep     netip.AddrPort
		want           []Expectation
	}{
		{
			name: "LPSV, IPv4 leg", mode: mangle.Passive64, client: c4, server: s4,
			target: ap("203.0.113.10:50000"), ep: ap("[2001:db8:64::cb00:710a]:50000"),
			want: []Expectation{
				{Client: c4, Server: s4, From: sess.Client4, To: ap("203.0.113.10:50000")},
				{Client: c6, Server: s6, From: sess.Client6, To: ap("[2001:db8:64::cb00:710a]:50000")},
			},
		},
		{
			name: "LPRT, IPv4 leg", mode: mangle.Active64, client: c4, server: s4,
			target: ap("[2001:db8:6::2]:50000"), ep: ap("198.51.100.7:50000"),
			want: []Expectation{
				{Client: c4, Server: s4, From: sess.Server4, To: ap("198.51.100.7:50000")},
				{Client: c6, Server: s6, From: sess.Server6, To: ap("[2001:db8:6::2]:50000")},
			},
		},
		{
			name: "LPRT, IPv6 leg", mode: mangle.Active64, client: c6, server: s6,
			target: ap("[2001:db8:6::2]:50000"), ep: ap("198.51.100.7:50000"),
			want: []Expectation{
				{Client: c6, Server: s6, From: sess.Server6, To: ap("[2001:db8:6::2]:50000")},
				{Client: c4, Server: s4, From: sess.Server4, To: ap("198.51.100.7:50000")},
			},
		},
	}
	eq := cmp.Comparer(func(a, b Expectation) bool { return a == b })
	for _, tt := range tests {
		for _, long := range []bool{false, true} {
			x := &fakeExpecter{}
			m := NewPinholeMapper(fixedMapper{ep: tt.ep}, x, slog.New(slog.DiscardHandler))
			req := mangle.DataRequest{Session: sess, Mode: tt.mode, Target: tt.target, Client: tt.client, Server: tt.server, Long: long}
			if _, err := m.MapData(req); err != nil {
				t.Fatalf("%s: MapData: %v", tt.name, err)
			}
			want := tt.want
			if !long {
				want = want[:1]
			}
			if diff := cmp.Diff(want, x.got, eq); diff != "" {
				t.Errorf("%s, long %v: expectations (-want +got):\n%s", tt.name, long, diff)
			}
			if s := m.Stats(); s.Created != uint64(len(want)) {
				t.Errorf("%s, long %v: created %d, want %d", tt.name, long, s.Created, len(want))
			}
		}
	}

	// A session without the other leg's addresses: the engine's leg only.
	x := &fakeExpecter{}
	m := NewPinholeMapper(fixedMapper{ep: ap("[2001:db8:64::cb00:710a]:50000")}, x, slog.New(slog.DiscardHandler))
	req := mangle.DataRequest{Session: mangle.Session{Kind: mangle.Kind64}, Mode: mangle.Passive64,
		Target: ap("203.0.113.10:50000"), Client: c4, Server: s4, Long: true}
	if _, err := m.MapData(req); err != nil || len(x.got) != 1 {
		t.Errorf("no other-leg addresses: %v, %v", x.got, err)
	}
}
