package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
)

func TestJournal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "flows")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	j, conns, err := openJournal(dir, time.Hour, log)
	if err != nil || len(conns) != 0 {
		t.Fatalf("openJournal: %v, %d conns", err, len(conns))
	}
	k4 := mangle.FlowKeyOf(netip.MustParseAddrPort("192.0.2.10:40000"), netip.MustParseAddrPort("198.51.100.1:21"))
	k6 := mangle.FlowKeyOf(netip.MustParseAddrPort("[2001:db8::10]:40000"), netip.MustParseAddrPort("[2001:db8::1]:21"))
	if b := j.LoadFlow(k4, nil); b != nil {
		t.Errorf("LoadFlow of an unknown flow: %q", b)
	}
	j.SaveFlow(k4, []byte("a longer first state"))
	j.SaveFlow(k4, []byte("shorter"))
	j.SaveFlow(k6, []byte("six"))
	if b := j.LoadFlow(k4, []byte("x")); string(b) != "xshorter" {
		t.Errorf("LoadFlow = %q, want the last state appended", b)
	}
	// A new daemon finds both; a stale file is removed.
	stale := filepath.Join(dir, "192.0.2.99:1_198.51.100.1:21")
	os.WriteFile(stale, []byte{0, 0, 0, 1, 'x'}, 0o600)
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(stale, old, old)
	j2, conns, err := openJournal(dir, time.Hour, log)
	if err != nil || len(conns) != 2 {
		t.Fatalf("reopen: %v, conns %v", err, conns)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale state kept: %v", err)
	}
	if b := j2.LoadFlow(k6, nil); string(b) != "six" {
		t.Errorf("after reopen LoadFlow = %q", b)
	}
	j2.DropFlow(k6)
	j2.DropFlow(k6)
	if b := j2.LoadFlow(k6, nil); b != nil || j2.open() != 1 {
		t.Errorf("after DropFlow: %q, %d open", b, j2.open())
	}
	// A connection closed both ways counts as closed after a restart too,
	// and goes once it is older than closedAge.
	closedState := []byte{'F', 'T', 'S', 2, 1, 1 << 5, 0, 0}
	kc := mangle.FlowKeyOf(netip.MustParseAddrPort("192.0.2.11:40001"), netip.MustParseAddrPort("198.51.100.1:21"))
	j2.SaveFlow(kc, closedState)
	if n := j2.open(); n != 1 {
		t.Errorf("open() = %d with one open and one closed connection, want 1", n)
	}
	j3, _, err := openJournal(dir, time.Hour, log)
	if err != nil || j3.open() != 1 || len(j3.known) != 2 {
		t.Errorf("reopened: %v, open %d, known %d; want 1, 2", err, j3.open(), len(j3.known))
	}
	p := filepath.Join(dir, journalName(kc))
	old = time.Now().Add(-3 * time.Minute)
	os.Chtimes(p, old, old)
	j4, _, _ := openJournal(dir, time.Hour, log)
	if _, err := os.Stat(p); !os.IsNotExist(err) || len(j4.known) != 1 {
		t.Errorf("closed connection's state kept past closedAge: %v, known %d", err, len(j4.known))
	}
	if j.errs.Load()+j2.errs.Load() != 0 {
		t.Errorf("%d errors", j.errs.Load()+j2.errs.Load())
	}
}

// 'ftpalg rules remove --if-idle' (the service's ExecStopPost) keeps the
// rules while the journal holds an open connection, which waits for the
// next daemon; a closed or stale one does not count.
func TestRulesRemoveIfIdle(t *testing.T) {
	dir := t.TempDir()
	flows := filepath.Join(dir, "flows")
	if n := openInJournal(flows, dir); n != 0 {
		t.Errorf("no journal: %d open, want 0", n)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	j, _, err := openJournal(flows, time.Hour, log)
	if err != nil {
		t.Fatal(err)
	}
	k := mangle.FlowKeyOf(netip.MustParseAddrPort("192.0.2.10:40000"), netip.MustParseAddrPort("198.51.100.1:21"))
	j.SaveFlow(k, []byte("an open connection's state"))
	j.Close()
	stale := filepath.Join(flows, "192.0.2.99:1_198.51.100.1:21")
	os.WriteFile(stale, []byte{0, 0, 0, 1, 'x'}, 0o600)
	old := time.Now().Add(-3 * time.Hour)
	os.Chtimes(stale, old, old)
	if n := openInJournal(flows, dir); n != 1 {
		t.Errorf("%d open connections, want 1", n)
	}
	var stdout, stderr bytes.Buffer
	code := dispatch([]string{"rules", "remove", "--if-idle", "--state-dir", flows, "--table", "t"}, &stdout, &stderr)
	if code != 0 || !strings.Contains(stdout.String(), "kept table t: 1 translated control connections wait") {
		t.Errorf("rules remove --if-idle: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}
