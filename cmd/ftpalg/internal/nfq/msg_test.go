package nfq

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// unhex decodes a fixture written as annotated hex: everything after '#' on
// a line is a comment, spaces are ignored. Netlink and attribute headers
// are host-endian; the fixtures are little-endian (amd64, arm64).
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(line, " ", ""), "\t", ""))
	}
	out, err := hex.DecodeString(b.String())
	if err != nil {
		t.Fatalf("bad fixture: %v", err)
	}
	return out
}

func littleEndian(t testing.TB) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("fixtures are little-endian")
	}
}

// packetMsg is an NFQNL_MSG_PACKET laid out as the kernel's
// nfqnl_build_packet_message writes it (attributes in its order, some left
// out): a 28-byte IPv4 UDP packet queued at LOCAL_OUT.
const packetMsg = `
50000000        # nlmsg_len 80
0003            # nlmsg_type NFNL_SUBSYS_QUEUE<<8 | NFQNL_MSG_PACKET
0000            # nlmsg_flags
00000000        # nlmsg_seq
00000000        # nlmsg_pid
02 00 0003      # nfgenmsg: family AF_INET, version 0, res_id 3 (queue)
0b00 0100       # NFQA_PACKET_HDR len 11
  0000002a      #   packet_id 42
  0800          #   hw_protocol ETH_P_IP
  03            #   hook NF_INET_LOCAL_OUT
  00            #   pad
0800 0600       # NFQA_IFINDEX_OUTDEV len 8 (skipped)
  00000001      #   1
0800 0500       # NFQA_IFINDEX_INDEV len 8 (skipped)
  00000001
2000 0a00       # NFQA_PAYLOAD len 32
  4500001c 00004000 40110000 7f000001 7f000001  # IPv4 header, checksum left 0
  d431 2710 0008 0000                           # UDP 54321 -> 10000, no payload
`

func TestDecodePacket(t *testing.T) {
	littleEndian(t)
	b := unhex(t, packetMsg)
	m, rest, err := nextMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if rest != nil {
		t.Errorf("rest = %x, want nil", rest)
	}
	if m.typ != msgPacket {
		t.Fatalf("type = %#x, want %#x", m.typ, msgPacket)
	}
	var p packet
	if !decodePacket(m.data, &p) {
		t.Fatal("decodePacket: no packet header")
	}
	want := packet{ID: 42, HwProto: 0x0800, Hook: 3, Payload: b[52:80]}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("packet (-want +got):\n%s", diff)
	}
}

func TestNextMessageSeveral(t *testing.T) {
	littleEndian(t)
	one := unhex(t, packetMsg)
	two := append(append([]byte{}, one...), one...)
	var ids []uint32
	for b := two; len(b) > 0; {
		m, rest, err := nextMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		var p packet
		if !decodePacket(m.data, &p) {
			t.Fatal("no header")
		}
		ids = append(ids, p.ID)
		b = rest
	}
	if diff := cmp.Diff([]uint32{42, 42}, ids); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
	// A message longer than the read is reported, not read past.
	if _, _, err := nextMessage(one[:40]); err != errTruncated {
		t.Errorf("truncated: err = %v, want errTruncated", err)
	}
	if _, _, err := nextMessage(one[:10]); err != errShort {
		t.Errorf("short: err = %v, want errShort", err)
	}
}

func TestErrorCode(t *testing.T) {
	littleEndian(t)
	// NLMSG_ERROR data: int32 error (-EPERM), then the request's header.
	data := unhex(t, `
		ffffffff          # error -1 (EPERM)
		14000000 0203 0500 07000000 00000000  # request header: len 20, CONFIG, REQUEST|ACK, seq 7
	`)
	errno, seq, ok := errorCode(data)
	if !ok || errno != 1 || seq != 7 {
		t.Errorf("errorCode = %d, %d, %v; want 1, 7, true", errno, seq, ok)
	}
}

func TestAppendVerdict(t *testing.T) {
	littleEndian(t)
	pkt := []byte{0x45, 0x00, 0x00, 0x05, 0xaa}
	got := appendVerdict(nil, 3, 42, verdictAccept, pkt)
	want := unhex(t, `
		2c000000        # nlmsg_len 44
		0103            # NFNL_SUBSYS_QUEUE<<8 | NFQNL_MSG_VERDICT
		0100            # NLM_F_REQUEST
		00000000 00000000
		00 00 0003      # nfgenmsg: AF_UNSPEC, version 0, res_id 3
		0c00 0200       # NFQA_VERDICT_HDR len 12
		  00000001      #   NF_ACCEPT
		  0000002a      #   id 42
		0900 0a00       # NFQA_PAYLOAD len 9
		  450000 05aa 000000  # payload and padding
	`)
	if !bytes.Equal(got, want) {
		t.Errorf("verdict:\n got %x\nwant %x", got, want)
	}
	plain := appendVerdict(nil, 3, 42, verdictAccept, nil)
	if len(plain) != 32 {
		t.Errorf("plain verdict is %d bytes, want 32", len(plain))
	}
}

func TestAppendConfig(t *testing.T) {
	littleEndian(t)
	got := appendConfigCmd(nil, 9, 5, cmdBind, 0)
	want := unhex(t, `
		1c000000 0203 0500 09000000 00000000  # len 28, CONFIG, REQUEST|ACK, seq 9
		00 00 0005                            # AF_UNSPEC, v0, queue 5
		0800 0100 01 00 0000                  # NFQA_CFG_CMD: BIND, pad, pf 0
	`)
	if !bytes.Equal(got, want) {
		t.Errorf("bind:\n got %x\nwant %x", got, want)
	}
	got = appendConfigParams(nil, 10, 5, 0xffff, 4096, flagFailOpen, flagFailOpen)
	want = unhex(t, `
		38000000 0203 0500 0a000000 00000000  # len 56
		00 00 0005
		0900 0200 0000ffff 02 000000          # NFQA_CFG_PARAMS: range 65535, COPY_PACKET
		0800 0300 00001000                    # NFQA_CFG_QUEUE_MAXLEN 4096
		0800 0400 00000001                    # NFQA_CFG_MASK FAIL_OPEN
		0800 0500 00000001                    # NFQA_CFG_FLAGS FAIL_OPEN
	`)
	if !bytes.Equal(got, want) {
		t.Errorf("params:\n got %x\nwant %x", got, want)
	}
}

// The round trip: a verdict's payload attribute decodes as a packet's does.
func TestVerdictsRoundTrip(t *testing.T) {
	var sent [][]byte
	v := &Verdicts{queue: 1, send: func(b []byte) { sent = append(sent, append([]byte{}, b...)) }}
	v.Accept(1)
	v.AcceptModified(2, []byte("abcdef"))
	v.AcceptModified(3, make([]byte, maxPayload+1)) // too long: plain accept
	v.AcceptModified(4, nil)                        // empty: plain accept
	v.Drop(5)
	if v.Len() != 5 || v.modified != 1 || v.oversize != 1 || v.accepted != 4 || v.dropped != 1 {
		t.Fatalf("Len %d modified %d oversize %d accepted %d dropped %d", v.Len(), v.modified, v.oversize, v.accepted, v.dropped)
	}
	v.flush()
	if len(sent) != 1 || v.Len() != 0 {
		t.Fatalf("sent %d batches, Len %d after flush", len(sent), v.Len())
	}
	got, err := DecodeVerdicts(sent[0])
	if err != nil {
		t.Fatal(err)
	}
	want := []Verdict{{1, 1, 1, nil}, {1, 2, 1, []byte("abcdef")}, {1, 3, 1, nil}, {1, 4, 1, nil}, {1, 5, 0, nil}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
}

func TestVerdictsBatchLimit(t *testing.T) {
	batches := 0
	v := &Verdicts{send: func(b []byte) {
		batches++
		if len(b) > batchLimit+maxPayload+64 {
			t.Errorf("batch of %d bytes", len(b))
		}
	}}
	big := make([]byte, 60000)
	for i := range 10 {
		v.AcceptModified(uint32(i), big)
	}
	v.flush()
	if batches < 4 {
		t.Errorf("%d batches for 600 kB, want the buffer sent as it passes %d bytes", batches, batchLimit)
	}
}

// The packet path allocates nothing: decoding a read and encoding the
// verdicts into the reused buffer.
func TestAllocs(t *testing.T) {
	littleEndian(t)
	msg := unhex(t, packetMsg)
	read := append(append([]byte{}, msg...), msg...)
	v := &Verdicts{queue: 3, buf: make([]byte, 0, 4096)}
	v.send = func([]byte) {}
	var p packet
	allocs := testing.AllocsPerRun(1000, func() {
		for b := read; len(b) > 0; {
			m, rest, err := nextMessage(b)
			if err != nil || !decodePacket(m.data, &p) {
				t.Fatal("decode failed")
			}
			if p.ID&1 == 0 {
				v.AcceptModified(p.ID, p.Payload)
			} else {
				v.Accept(p.ID)
			}
			b = rest
		}
		v.flush()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per read, want 0", allocs)
	}
}

// Junk never panics and never reads out of bounds.
func FuzzDecode(f *testing.F) {
	f.Add(unhex(f, packetMsg))
	f.Add([]byte{})
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p packet
		for n := 0; len(b) > 0 && n < 1000; n++ {
			m, rest, err := nextMessage(b)
			if err != nil {
				return
			}
			if decodePacket(m.data, &p) && len(p.Payload) > len(m.data) {
				t.Fatalf("payload longer than its message")
			}
			errorCode(m.data)
			b = rest
		}
	})
}

func BenchmarkDecodeVerdict(b *testing.B) {
	msg := unhex(b, packetMsg)
	v := &Verdicts{queue: 3, buf: make([]byte, 0, 4096)}
	v.send = func([]byte) {}
	var p packet
	b.ReportAllocs()
	for b.Loop() {
		m, _, _ := nextMessage(msg)
		decodePacket(m.data, &p)
		v.AcceptModified(p.ID, p.Payload)
		v.flush()
	}
}
