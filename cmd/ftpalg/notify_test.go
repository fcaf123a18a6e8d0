package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeSystemd is the receiving end of NOTIFY_SOCKET.
type fakeSystemd struct {
	t    *testing.T
	conn *net.UnixConn
}

func newFakeSystemd(t *testing.T, addr string) *fakeSystemd {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", addr)
	return &fakeSystemd{t: t, conn: c}
}

// next returns the next datagram; the deadline only ends a test that
// would otherwise hang.
func (f *fakeSystemd) next() string {
	f.t.Helper()
	buf := make([]byte, 4096)
	f.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := f.conn.Read(buf)
	if err != nil {
		f.t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

// waitFor reads datagrams until one contains want.
func (f *fakeSystemd) waitFor(want string) {
	f.t.Helper()
	for {
		if m := f.next(); strings.Contains(m, want) {
			return
		}
	}
}

func TestSdNotify(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := sdNotify("READY=1"); sent || err != nil {
		t.Errorf("without NOTIFY_SOCKET: sent %v, err %v; want nothing", sent, err)
	}
	for _, addr := range []string{
		filepath.Join(t.TempDir(), "notify"),
		"@ftpalg-test-notify-" + strconv.Itoa(os.Getpid()), // abstract, as systemd's own
	} {
		f := newFakeSystemd(t, addr)
		if sent, err := sdNotify("READY=1\nSTATUS=running"); !sent || err != nil {
			t.Fatalf("%s: sent %v, err %v", addr, sent, err)
		}
		if got := f.next(); got != "READY=1\nSTATUS=running" {
			t.Errorf("%s: got %q", addr, got)
		}
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody"))
	if sent, err := sdNotify("READY=1"); !sent || err == nil {
		t.Errorf("to a socket nobody listens on: sent %v, err %v; want an error", sent, err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"", "", 0, false},
		{"0", "", 0, false},
		{"x", "", 0, false},
		{"20000000", "", 20 * time.Second, true},
		{"20000000", pid, 20 * time.Second, true},
		{"20000000", "1", 0, false}, // another process's watchdog
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		if got, ok := watchdogInterval(); got != tc.want || ok != tc.ok {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v %v, want %v %v", tc.usec, tc.pid, got, ok, tc.want, tc.ok)
		}
	}
}
