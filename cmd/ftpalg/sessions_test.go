package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/google/go-cmp/cmp"
)

// watchMapper is a Mapper that watches lengths and maps every target to
// port 50000 of 192.0.2.1, or fails for port 9.
type watchMapper struct{ changed int }

func (m *watchMapper) Classify(client, server netip.AddrPort) (mangle.Session, bool) {
	return mangle.Session{}, false
}

func (m *watchMapper) MapData(req mangle.DataRequest) (netip.AddrPort, error) {
	if req.Target.Port() == 9 {
		return netip.AddrPort{}, errors.New("no free port")
	}
	return netip.MustParseAddrPort("192.0.2.1:50000"), nil
}

func (m *watchMapper) LengthChanged(client, server netip.AddrPort) { m.changed++ }

func TestDataRecorder(t *testing.T) {
	inner := &watchMapper{}
	r := newDataRecorder(inner, true)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	var m mangle.Mapper = r
	// The engine finds the inner Mapper's LengthWatcher through the
	// recorder.
	w, ok := m.(mangle.LengthWatcher)
	if !ok {
		t.Fatal("the recorder hides LengthWatcher")
	}
	c, s := netip.MustParseAddrPort("[2001:db8:2::2]:40000"), netip.MustParseAddrPort("198.51.100.10:21")
	w.LengthChanged(c, s)
	if inner.changed != 1 {
		t.Errorf("LengthChanged not passed on")
	}
	for _, p := range []uint16{30001, 9} {
		req := mangle.DataRequest{Mode: mangle.Passive46, Target: netip.AddrPortFrom(netip.MustParseAddr("2001:db8:1::10"), p), Client: c, Server: s}
		m.MapData(req)
	}
	for range recordPerConn {
		m.MapData(mangle.DataRequest{Mode: mangle.Active64, Target: netip.MustParseAddrPort("[2001:db8:2::2]:1"), Client: c, Server: s})
	}
	now = now.Add(90 * time.Second)
	got := r.channels(c, s, now)
	if len(got) != recordPerConn || got[0].Mode != "active64" || got[0].Age != "1m30s" || !got[0].Pinhole {
		t.Errorf("channels = %+v, want the last %d, active64, 1m30s old, with pinholes", got, recordPerConn)
	}
	if other := r.channels(s, c, now); len(other) != 0 {
		t.Errorf("channels of another connection: %+v", other)
	}
	now = now.Add(recordMaxAge)
	if got := r.channels(c, s, now); len(got) != 0 {
		t.Errorf("channels after %v: %+v, want none", recordMaxAge, got)
	}
}

func TestSessionsSocketAndText(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	srv, err := listenStatus(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	started := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	want := sessionsReport{Leg: "ipv4", Pinholes: true, Sessions: []sessionInfo{{
		Queue: 1, Kind: "64", Translated: true,
		Client: netip.MustParseAddrPort("192.168.255.7:40000"), Server: netip.MustParseAddrPort("198.51.100.10:21"),
		Client4: netip.MustParseAddr("192.168.255.7"), Client6: netip.MustParseAddr("2001:db8:2::2"),
		Server4: netip.MustParseAddr("198.51.100.10"), Server6: netip.MustParseAddr("2001:db8:64::c633:640a"),
		ShiftToClient: -6, Started: started, Age: "3m0s", Idle: "1s", State: "open",
		Data: []dataChannel{
			{Mode: "passive64", Target: netip.MustParseAddrPort("198.51.100.10:30001"), Mapped: netip.MustParseAddrPort("[2001:db8:64::c633:640a]:30001"), Pinhole: true, At: started, Age: "12s"},
			{Mode: "active64", Target: netip.MustParseAddrPort("[2001:db8:2::2]:9"), Error: "no free port", At: started, Age: "5s"},
		},
	}}}
	srv.serve(func() statusReport { return statusReport{Version: "x"} }, func() sessionsReport { return want })

	var out, errOut bytes.Buffer
	if code := sessionsMain([]string{"--socket", path, "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("sessions --json: exit %d: %s", code, errOut.String())
	}
	var back sessionsReport
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	eq := cmp.Options{
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
	}
	if diff := cmp.Diff(want, back, eq); diff != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", diff)
	}
	out.Reset()
	if code := sessionsMain([]string{"--socket", path}, &out, &errOut); code != 0 {
		t.Fatalf("sessions: exit %d: %s", code, errOut.String())
	}
	text := out.String()
	for _, line := range []string{
		"64  192.168.255.7:40000 -> 198.51.100.10:21  leg ipv4  queue 1  up 3m0s  idle 1s  open",
		"    client 2001:db8:2::2 = 192.168.255.7, server 2001:db8:64::c633:640a = 198.51.100.10, shift to server +0, to client -6 bytes",
		"    passive64 198.51.100.10:30001 -> [2001:db8:64::c633:640a]:30001  pinhole  12s ago",
		"    active64  [2001:db8:2::2]:9  failed: no free port  5s ago",
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("text lacks %q:\n%s", line, text)
		}
	}
	// status on the same socket still answers with the status report.
	if r, err := readStatus(path); err != nil || r.Version != "x" {
		t.Errorf("status: %+v, %v", r, err)
	}
}
