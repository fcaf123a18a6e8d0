package main

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
)

// testState is an encoded engine state (mangle/state.go's layout) of a
// 46 session with one rewrite of 10 bytes into 12 in the server's
// direction: a state the engine restores.
func testState(t *testing.T) []byte {
	b := validTestState()
	if !mangle.StateValid(b) {
		t.Fatalf("test state not valid: %x", b)
	}
	return b
}

func validTestState() []byte {
	b := []byte{'F', 'T', 'S', 2, byte(mangle.Kind46), 1 << 4}
	b = append(b, 4, 192, 0, 2, 2, 0, 4, 203, 0, 113, 10, 16)
	v6 := netip.MustParseAddr("2001:db8:1::10").As16()
	b = append(b, v6[:]...)
	b = append(b, 0) // no pending command
	b = append(b, 0, 0, 0, '2', '2', '7', 0, 0, 0)
	for d := 0; d < 2; d++ {
		b = binary.BigEndian.AppendUint32(b, 1000)
		b = binary.BigEndian.AppendUint32(b, 900)
		b = append(b, 1)
		b = binary.BigEndian.AppendUint32(b, 900)
		b = binary.BigEndian.AppendUint16(b, 1460)
		b = binary.BigEndian.AppendUint32(b, 0)
		if d == 0 {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.BigEndian.AppendUint32(b, 500)
		b = binary.BigEndian.AppendUint32(b, 10)
		b = append(b, 12)
		b = append(b, "227 (1,2,3)\r"...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

var (
	syncClient = netip.MustParseAddrPort("192.0.2.2:40000")
	syncServer = netip.MustParseAddrPort("203.0.113.10:21")
	syncKey    = mangle.FlowKeyOf(syncClient, syncServer)
)

func TestSyncRecordRoundTrip(t *testing.T) {
	st := testState(t)
	k6 := mangle.FlowKeyOf(netip.MustParseAddrPort("[2001:db8:2::2]:5000"), netip.MustParseAddrPort("[2001:db8:64::c633:640a]:21"))
	for _, key := range [][]byte{nil, []byte("0123456789abcdef")} {
		for _, r := range []syncRecord{
			{op: syncSave, epoch: 7, seq: 1, key: syncKey, state: st},
			{op: syncDrop, epoch: 7, seq: 2, key: k6},
		} {
			b := appendSyncRecord(nil, &r, key)
			if len(b) > syncMaxLen {
				t.Errorf("record of %d bytes, bound %d", len(b), syncMaxLen)
			}
			got, err := decodeSyncRecord(b, key)
			if err != nil {
				t.Fatalf("decode (key %q): %v", key, err)
			}
			if got.op != r.op || got.epoch != r.epoch || got.seq != r.seq || got.key != r.key || !bytes.Equal(got.state, r.state) {
				t.Errorf("round trip: %+v, want %+v", got, r)
			}
		}
	}
}

// TestSyncRecordRejects: a record that is not whole, not valid or not
// authentic is refused before anything is applied, and no input panics.
func TestSyncRecordRejects(t *testing.T) {
	st := testState(t)
	key := []byte("0123456789abcdef")
	good := appendSyncRecord(nil, &syncRecord{op: syncSave, epoch: 1, seq: 1, key: syncKey, state: st}, key)
	if _, err := decodeSyncRecord(good, key); err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{}
	bad["no tag (keyed receiver)"] = appendSyncRecord(nil, &syncRecord{op: syncSave, epoch: 1, seq: 1, key: syncKey, state: st}, nil)
	bad["other key"] = appendSyncRecord(nil, &syncRecord{op: syncSave, epoch: 1, seq: 1, key: syncKey, state: st}, []byte("fedcba9876543210"))
	corrupt := bytes.Clone(st)
	corrupt[10] ^= 1
	bad["corrupt state, valid tag"] = appendSyncRecord(nil, &syncRecord{op: syncSave, epoch: 1, seq: 1, key: syncKey, state: corrupt}, key)
	bad["unknown op"] = appendSyncRecord(nil, &syncRecord{op: 9, epoch: 1, seq: 1, key: syncKey}, key)
	bad["drop with a state"] = appendSyncRecord(nil, &syncRecord{op: syncDrop, epoch: 1, seq: 1, key: syncKey, state: st}, key)
	bad["port 0"] = appendSyncRecord(nil, &syncRecord{op: syncDrop, epoch: 1, seq: 1,
		key: mangle.FlowKeyOf(netip.MustParseAddrPort("192.0.2.2:0"), syncServer)}, key)
	v2 := bytes.Clone(good)
	v2[4] = 2
	bad["version 2"] = v2
	bad["too long"] = append(bytes.Clone(good), make([]byte, syncMaxLen)...)
	for name, b := range bad {
		if r, err := decodeSyncRecord(b, key); err == nil {
			t.Errorf("%s: accepted: %+v", name, r)
		}
	}
	// Unkeyed: every truncation and every single-bit flip of the body is
	// either refused or decodes to a valid record; none panics.
	plain := appendSyncRecord(nil, &syncRecord{op: syncSave, epoch: 1, seq: 1, key: syncKey, state: st}, nil)
	for i := 0; i < len(plain); i++ {
		if _, err := decodeSyncRecord(plain[:i], nil); err == nil {
			t.Errorf("truncated to %d bytes: accepted", i)
		}
		for bit := 0; bit < 8; bit++ {
			b := bytes.Clone(plain)
			b[i] ^= 1 << bit
			if r, err := decodeSyncRecord(b, nil); err == nil && r.op == syncSave && !mangle.StateValid(r.state) {
				t.Errorf("flip %d.%d: invalid state accepted", i, bit)
			}
		}
	}
}

func TestSyncOrder(t *testing.T) {
	var o syncOrder
	rec := func(op byte, epoch, seq uint64) *syncRecord {
		return &syncRecord{op: op, epoch: epoch, seq: seq, key: syncKey}
	}
	steps := []struct {
		r    *syncRecord
		want bool
	}{
		{rec(syncSave, 10, 5), true},
		{rec(syncSave, 10, 4), false}, // reordered: older
		{rec(syncSave, 10, 5), false}, // duplicate
		{rec(syncSave, 10, 6), true},
		{rec(syncDrop, 10, 8), true},
		{rec(syncSave, 10, 7), false}, // delayed save after its removal
		{rec(syncSave, 11, 1), true},  // a new sender process
		{rec(syncSave, 10, 9), false}, // a delayed record of the previous one
		{rec(syncSave, 11, 2), true},
		{rec(syncSave, 3, 1), true}, // a new one whose clock went back
		{rec(syncSave, 11, 3), false},
		{rec(syncSave, 3, 2), true},
	}
	for i, s := range steps {
		if got := o.accept(s.r); got != s.want {
			t.Errorf("step %d (%+v): accept = %v, want %v", i, *s.r, got, s.want)
		}
	}
}

// TestStateSyncLoopback runs a sender and a receiver over UDP on the
// loopback: a save creates the state in the receiver's journal (loadable
// as the engine would load it), a removal removes it, a record from
// another address than the peer's changes nothing.
func TestStateSyncLoopback(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := testState(t)
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte("a shared secret of the two routers\n"), 0o600)

	a, _, err := openJournal(filepath.Join(t.TempDir(), "a"), time.Hour, log)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := openJournal(filepath.Join(t.TempDir(), "b"), time.Hour, log)
	if err != nil {
		t.Fatal(err)
	}
	// b listens on a free port of 127.0.0.1; a sends from 127.0.0.2 when
	// that is there (Linux), so b's peer is 127.0.0.2.
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	bAddr := probe.LocalAddr().String()
	probe.Close()
	aProbe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	aAddr := aProbe.LocalAddr().String()
	aProbe.Close()

	sb, err := startStateSync(b, aAddr, bAddr, keyFile, log)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	sa, err := startStateSync(a, bAddr, aAddr, keyFile, log)
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()

	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 5 s (b: received %d, applied %d, rejected %d)", what,
					sb.received.Load(), sb.applied.Load(), sb.rejected.Load())
			}
		}
	}
	a.SaveFlow(syncKey, st)
	wait("state replicated", func() bool { return bytes.Equal(b.LoadFlow(syncKey, nil), st) })
	if b.open() != 1 || len(b.conns()) != 1 || b.conns()[0].Client != syncClient {
		t.Errorf("receiver's journal: %d open, conns %v", b.open(), b.conns())
	}
	if sa.applied.Load() != 0 {
		t.Errorf("the sender applied %d records: an echo", sa.applied.Load())
	}

	// From a third address (right key, right format): refused.
	third, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3)})
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	other := mangle.FlowKeyOf(netip.MustParseAddrPort("192.0.2.99:1234"), syncServer)
	rec := appendSyncRecord(nil, &syncRecord{op: syncSave, epoch: 1 << 62, seq: 1, key: other, state: st}, sb.key)
	third.WriteToUDPAddrPort(rec, netip.MustParseAddrPort(bAddr))
	wait("third party refused", func() bool { return sb.rejected.Load() == 1 })
	if b.LoadFlow(other, nil) != nil {
		t.Errorf("a third party's record created state")
	}

	a.DropFlow(syncKey)
	wait("removal replicated", func() bool { return b.LoadFlow(syncKey, nil) == nil })
	if _, err := os.Stat(filepath.Join(b.dir, journalName(syncKey))); !os.IsNotExist(err) {
		t.Errorf("receiver's file after the removal: %v", err)
	}
}

func TestRunFlagsStateSync(t *testing.T) {
	base := []string{"--tayga-conf", "/etc/tayga.conf"}
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--state-sync-peer", "10.0.0.2:7021", "--state-sync-listen", "10.0.0.1:7021"}, true},
		{[]string{"--state-sync-peer", "[fd00::2]:7021"}, true},
		{[]string{"--state-sync-listen", "10.0.0.1:7021"}, false},
		{[]string{"--state-sync-peer", "10.0.0.2"}, false},
		{[]string{"--state-sync-peer", "10.0.0.2:7021", "--state-dir="}, false},
	} {
		_, err := parseRunFlags(append(base, c.args...), io.Discard)
		if (err == nil) != c.ok {
			t.Errorf("%v: err %v, want ok %v", c.args, err, c.ok)
		}
	}
}

// FuzzSyncRecord: no datagram makes the decoder panic, and whatever it
// accepts is a whole record: a save's state is one the engine restores,
// and it encodes back to the same bytes.
func FuzzSyncRecord(f *testing.F) {
	st := validTestState()
	key := []byte("0123456789abcdef")
	for _, k := range [][]byte{nil, key} {
		f.Add(appendSyncRecord(nil, &syncRecord{op: syncSave, epoch: 1, seq: 2, key: syncKey, state: st}, k))
		f.Add(appendSyncRecord(nil, &syncRecord{op: syncDrop, epoch: 1, seq: 3, key: syncKey}, k))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, k := range [][]byte{nil, key} {
			r, err := decodeSyncRecord(b, k)
			if err != nil {
				continue
			}
			if r.op == syncSave && !mangle.StateValid(r.state) {
				t.Fatalf("accepted a state the engine would not restore")
			}
			if again := appendSyncRecord(nil, r, k); !bytes.Equal(again, b) {
				t.Fatalf("accepted %x, encodes back as %x", b, again)
			}
		}
	})
}

// BenchmarkJournalSave measures a journal write without and with the
// state sync (one UDP record to a receiver on the loopback).
func BenchmarkJournalSave(b *testing.B) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := validTestState()
	for _, withSync := range []bool{false, true} {
		name := "journal"
		if withSync {
			name = "journal+sync"
		}
		b.Run(name, func(b *testing.B) {
			j, _, err := openJournal(filepath.Join(b.TempDir(), "j"), time.Hour, log)
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			if withSync {
				sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					b.Fatal(err)
				}
				defer sink.Close()
				s, err := startStateSync(j, sink.LocalAddr().String(), "", "", log)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j.SaveFlow(syncKey, st)
			}
		})
	}
}
