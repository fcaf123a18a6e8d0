package mangle

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Tests for the engine bugs that crafted captures found (the protocol
// rows themselves are in TestProtocolTable).

// A keep-alive probe at SND.NXT-1, after a rewrite that shortened the
// stream, maps to the receiver's RCV.NXT-1 (RFC 9293 section 3.8.4: the
// receiver answers an old byte with an ACK); a 1-byte probe stays 1 byte.
func TestKeepAliveAfterShorterRewrite(t *testing.T) {
	for _, n := range []int{0, 1} {
		s := newSim(t, sess64, false)
		s.handshake()
		s.send(ToClient, "220 ready\r\n")
		s.send(ToServer, "ALGS STATUS64\r\n") // becomes NOOP: 9 bytes shorter
		s.send(ToClient, "200 ok\r\n")
		c, sv := s.ends[ToServer], s.ends[ToClient]
		probe := make([]byte, n)
		if n == 1 {
			probe[0] = '\n' // what Linux resends: the last byte sent
		}
		s.inject(ToServer, s.build(ToServer, c.sndNxt-1, tcpACK, probe))
		var p packet
		if p.decode(s.res.Emits[0].Packet) != decodedTCP {
			t.Fatal("probe not decodable")
		}
		if want := sv.rcvNxt - 1; p.seq != want {
			t.Errorf("%d-byte probe: seq %d, want RCV.NXT-1 = %d", n, p.seq, want)
		}
		if len(p.data()) != n {
			t.Errorf("%d-byte probe left with %d bytes", n, len(p.data()))
		}
	}
}

// A segment whose TCP checksum is wrong is never parsed (no rewrite, no
// mapping) and leaves as wrong as it came, also where the stream is
// shifted; its good retransmission is then translated as usual.
func TestBadChecksum(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		s := newSim(t, sess46, v6)
		s.handshake()
		s.send(ToClient, "220 ready\r\n")
		c := s.ends[ToServer]
		// A corrupted PORT naming another port: no mapping, no rewrite.
		s.injectCorrupt(ToServer, s.build(ToServer, c.sndNxt, tcpACK|0x08, []byte("PORT 192,0,2,10,7,209\r\n")))
		if len(s.m.calls) != 0 {
			t.Errorf("a corrupted segment created a mapping: %v", s.m.calls)
		}
		s.send(ToServer, "PORT 192,0,2,10,7,208\r\n")
		s.send(ToClient, "200 ok\r\n")
		// The stream is now shifted: a corrupted segment still leaves bad
		// (checked by the sim), with its numbers mapped.
		s.injectCorrupt(ToServer, s.build(ToServer, c.sndNxt, tcpACK|0x08, []byte("NOOP\r\n")))
		s.injectCorrupt(ToClient, s.build(ToClient, s.ends[ToClient].sndNxt, tcpACK|0x08, []byte("200 x\r\n")))
		s.send(ToServer, "NOOP\r\n")
		s.send(ToClient, "200 ok\r\n")
		if got, want := s.got(ToServer), lines("EPRT |2|2001:db8:64::c000:20a|2000|", "NOOP"); got != want {
			t.Errorf("server got %q, want %q", got, want)
		}
		if len(s.m.calls) != 1 || s.m.calls[0].Target.Port() != 2000 {
			t.Errorf("mapper calls %v, want one for port 2000", s.m.calls)
		}
		if st := s.e.Stats(); st.BadChecksum != 3 {
			t.Errorf("BadChecksum = %d, want 3", st.BadChecksum)
		}
		s.done()
	}
}

// With TrustChecksums (a capture from a host with checksum offload) a
// segment is parsed whatever its checksum, which the rewrite keeps as
// wrong as it was.
func TestTrustChecksums(t *testing.T) {
	m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}}
	s := newSimMapper(t, m, false, &Config{TrustChecksums: true})
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.injectCorrupt(ToServer, s.build(ToServer, s.ends[ToServer].sndNxt, tcpACK|0x08, []byte("PORT 192,0,2,10,7,208\r\n")))
	if len(m.calls) != 1 || len(s.res.Rewrites) != 1 {
		t.Errorf("not parsed: %d mapper calls, %d rewrites", len(m.calls), len(s.res.Rewrites))
	}
	s.done()
}

// The urgent pointer keeps pointing at the same byte after a rewrite
// changed the segment's length (RFC 6384 section 5).
func TestUrgentPointerAfterRewrite(t *testing.T) {
	s := newSim(t, sess64, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	c := s.ends[ToServer]
	// ALGS STATUS64 becomes NOOP (9 bytes shorter); the urgent data is the
	// IAC IP IAC DM before ABOR (RFC 959 section 4.1.3).
	payload := "ALGS STATUS64\r\n\xff\xf4\xff\xf2ABOR\r\n"
	b := s.build(ToServer, c.sndNxt, tcpACK|0x08|tcpURG, []byte(payload))
	var p packet
	p.decode(b)
	const urg = 19 // the byte after IAC DM: 'A' of ABOR
	binary.BigEndian.PutUint16(b[p.tcp+18:], urg)
	fixChecksums(b, false, p.tcp)
	c.sndNxt += uint32(len(payload))
	s.inject(ToServer, b)
	var q packet
	out := s.res.Emits[0].Packet
	if q.decode(out) != decodedTCP {
		t.Fatal("not decodable")
	}
	u := binary.BigEndian.Uint16(out[q.tcp+18:])
	if q.flags&tcpURG != 0 {
		if got := q.data()[u]; u != urg-9 || got != 'A' {
			t.Errorf("urgent pointer %d (at %q), want %d (at 'A')", u, got, urg-9)
		}
	}
	if got, want := s.got(ToServer), "NOOP\r\n\xff\xf4\xff\xf2ABOR\r\n"; got != want {
		t.Errorf("server got %q, want %q", got, want)
	}
}

// Checksums are updated incrementally (RFC 1624): for a packet that came
// in right the result equals a full recomputation, and one that came in
// wrong stays wrong, whatever the rewrite changed.
func TestIncrementalChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		v6 := i%2 == 1
		src, dst := sess46.Client4, sess46.Server4
		if v6 {
			src, dst = sess46.Client6, sess46.Server6
		}
		payload := make([]byte, r.IntN(80))
		for j := range payload {
			payload[j] = byte(r.Uint32())
		}
		var sack [][2]uint32
		if r.IntN(2) == 0 {
			sack = [][2]uint32{{r.Uint32(), r.Uint32()}}
		}
		in := buildTCP(netip.AddrPortFrom(src, 40000), netip.AddrPortFrom(dst, 21), r.Uint32(), r.Uint32(), tcpACK|0x08, payload, sack)
		var p packet
		p.decode(in)
		bad := r.IntN(3) == 0
		if bad {
			// Damage the numbers, the checksum or the payload (not the
			// header's layout, which would make another packet).
			k := p.tcp + 4 + r.IntN(8)
			switch n := len(p.data()); {
			case r.IntN(3) == 0:
				k = p.tcp + 16
			case n > 0 && r.IntN(2) == 0:
				k = p.payload + r.IntN(n)
			}
			in[k] ^= byte(1 + r.IntN(255))
			if checksumOK(in) {
				continue
			}
		}
		// A rewrite: new numbers, another payload of another length.
		newPayload := make([]byte, r.IntN(80))
		for j := range newPayload {
			newPayload[j] = byte(r.Uint32())
		}
		out := rewriteForTest(in, r.Uint32(), r.Uint32(), newPayload)
		full := append([]byte(nil), out...)
		fixChecksums(full, v6, p.tcp)
		switch {
		case bad && checksumOK(out):
			t.Fatalf("case %d: a wrong checksum became right", i)
		case !bad && !checksumOK(out):
			t.Fatalf("case %d: a right checksum became wrong", i)
		case !bad && !sameChecksum(out, full, p.tcp):
			t.Fatalf("case %d: incremental checksum differs from a full recomputation", i)
		}
	}
}

// sameChecksum compares the TCP checksums of a and b, taking 0x0000 and
// 0xffff as the same one's-complement zero.
func sameChecksum(a, b []byte, tcp int) bool {
	x, y := binary.BigEndian.Uint16(a[tcp+16:]), binary.BigEndian.Uint16(b[tcp+16:])
	return x == y || x|y == 0xffff && (x == 0 || y == 0)
}

// rewriteForTest rewrites packet b as emit does: new numbers and payload,
// lengths and checksums updated.
func rewriteForTest(b []byte, seq, ack uint32, payload []byte) []byte {
	var p packet
	p.decode(b)
	old := p.mutableSum(true)
	out := append(append([]byte(nil), p.b[:p.payload]...), payload...)
	binary.BigEndian.PutUint32(out[p.tcp+4:], seq)
	binary.BigEndian.PutUint32(out[p.tcp+8:], ack)
	finishPacket(out, &p, old, true)
	return out
}

// A reply to a translated command never leaves half translated, whatever
// the timing of its segments: the rest of a 227 arriving after the hold
// timeout (a retransmission after an RTO) still makes one 229.
func TestLateSegmentOfTranslatedReply(t *testing.T) {
	for _, sess := range []Session{sess64, sess46} {
		s := newSim(t, sess, false)
		s.handshake()
		s.send(ToClient, "220 ready\r\n")
		cmd, part1, part2, want := "EPSV\r\n", "227 Entering Passive Mode (198,51,", "100,10,7,208)\r\n", "229 Entering Extended Passive Mode (|||2000|)"
		if sess.Kind == Kind46 {
			cmd, part1, part2, want = "PASV\r\n", "229 Entering Extended Passive Mode (|||2", "000|)\r\n", "227 Entering Passive Mode (100,1,1,10,7,208)"
		}
		s.send(ToServer, cmd)
		s.send(ToClient, part1)
		s.expire(250 * time.Millisecond)
		s.expire(time.Second)
		s.send(ToClient, part2)
		if diff := cmp.Diff(lines("220 ready", want), s.got(ToClient)); diff != "" {
			t.Errorf("%v: client got (-want +got):\n%s", sess.Kind, diff)
		}
		s.done()
	}
}

// Zero-window probes carrying the first byte of a 227, 300 ms apart, then
// the whole line once the window opens: the client gets one 229, and the
// probes that repeat a held byte are dropped (the held copy goes out).
func TestZeroWindowProbesOfTranslatedReply(t *testing.T) {
	s := newSim(t, sess64, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "EPSV\r\n")
	sv := s.ends[ToClient]
	line := "227 Entering Passive Mode (198,51,100,10,7,208)\r\n"
	for i := 0; i < 6; i++ {
		s.inject(ToClient, s.build(ToClient, sv.sndNxt, tcpACK, []byte(line[:1])))
		s.expire(300 * time.Millisecond)
	}
	s.inject(ToClient, s.build(ToClient, sv.sndNxt, tcpACK|0x08, []byte(line)))
	sv.sndNxt += uint32(len(line))
	if diff := cmp.Diff(lines("220 ready", "229 Entering Extended Passive Mode (|||2000|)"), s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
	s.done()
}

// A command still held when the timeout fires leaves unmodified, and so
// does its reply: the exchange stays untranslated on both sides.
func TestLateSegmentOfCommand(t *testing.T) {
	s := newSim(t, sess64, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "EPS")
	s.expire(time.Second)
	s.send(ToServer, "V\r\n")
	s.send(ToClient, "229 Entering Extended Passive Mode (|||2000|)\r\n")
	if got := s.got(ToServer); got != "EPSV\r\n" {
		t.Errorf("server got %q", got)
	}
	if diff := cmp.Diff(lines("220 ready", "229 Entering Extended Passive Mode (|||2000|)"), s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
	s.done()
}

// Telnet option negotiation from either side is refused by the ALG as an
// FTP server would (RFC 1123 section 4.1.2.12: WILL x is answered DONT x,
// DO x is answered WONT x) and never relayed (docs/PROTOCOL.md PB-6, RFC
// 6384 section 5). The refusal rides at the end of the next line toward
// the side that sent the negotiation.
func TestTelnetNegotiationRefused(t *testing.T) {
	for _, sess := range []Session{sess64, sess46} {
		s := newSim(t, sess, false)
		s.handshake()
		// The server asks DO ECHO before its greeting.
		s.send(ToClient, "\xff\xfd\x01220 ready\r\n")
		// The client offers WILL TERMINAL-TYPE before USER, and WONT
		// (a refusal, never relayed, never answered) after it.
		s.send(ToServer, "\xff\xfb\x18USER a\r\n\xff\xfc\x03")
		s.send(ToClient, "331 ok\r\n")
		s.send(ToServer, "PASS b\r\n")
		s.send(ToClient, "230 in\r\n")
		if got, want := s.got(ToServer), "USER a\r\n\xff\xfc\x01PASS b\r\n"; got != want {
			t.Errorf("%v: server got %q, want %q", sess.Kind, got, want)
		}
		if got, want := s.got(ToClient), "220 ready\r\n331 ok\r\n\xff\xfe\x18230 in\r\n"; got != want {
			t.Errorf("%v: client got %q, want %q", sess.Kind, got, want)
		}
		s.done()
	}
}

// A negotiation split across segments is held until it is complete, and
// still removed; a refusal toward a line that is rewritten joins the
// rewrite.
func TestTelnetNegotiationSplit(t *testing.T) {
	s := newSim(t, sess64, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "\xff")
	s.send(ToServer, "\xfd")
	s.send(ToServer, "\x05EPSV\r\n")
	s.send(ToClient, "227 Entering Passive Mode (198,51,100,10,7,208)\r\n")
	if got, want := s.got(ToServer), "PASV\r\n"; got != want {
		t.Errorf("server got %q, want %q", got, want)
	}
	if got, want := s.got(ToClient), "220 ready\r\n229 Entering Extended Passive Mode (|||2000|)\r\n\xff\xfc\x05"; got != want {
		t.Errorf("client got %q, want %q", got, want)
	}
	s.done()
}

// A line that grows never makes a segment larger than the path allows
// (RFC 6384 section 5; docs/PROTOCOL.md PB-8): without an MSS seen, 576
// bytes on IPv4 and 1280 on IPv6; the rewritten segment is split, and the
// urgent pointer and FIN stay right.
func TestGrowingLineSplit(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		s := newSim(t, sess46, v6)
		s.maxPacket = 576
		hdr := 40
		if v6 {
			s.maxPacket, hdr = 1280, 60
		}
		s.handshake()
		s.send(ToClient, "220 ready\r\n")
		// A full-sized segment of pipelined commands ending in a PORT that
		// grows by 14 bytes as EPRT |2|.
		port := "PORT 192,0,2,10,7,208\r\n"
		filler := fillerLines(s.maxPacket - hdr - len(port))
		s.send(ToServer, filler+port)
		if len(s.res.Emits) != 2 || !s.res.Emits[1].Extra {
			t.Errorf("v6 %v: %d emits, want the segment and one Extra", v6, len(s.res.Emits))
		}
		want := filler + "EPRT |2|2001:db8:64::c000:20a|2000|\r\n"
		if got := s.got(ToServer); got != want {
			t.Errorf("v6 %v: server got %q, want %q", v6, got, want)
		}
		if st := s.e.Stats(); st.Split != 1 {
			t.Errorf("Split = %d", st.Split)
		}
		s.done()
	}
}

// The MSS a peer announces in its SYN bounds the segments toward it.
func TestGrowingLineSplitMSS(t *testing.T) {
	s := newSim(t, sess46, false)
	c, sv := s.ends[ToServer], s.ends[ToClient]
	syn := s.build(ToServer, c.sndNxt, tcpSYN, nil)
	s.inject(ToServer, syn)
	c.sndNxt++
	sv.rcvNxt, sv.synced = c.sndNxt, true
	// The server announces MSS 100.
	sa := withMSS(s.build(ToClient, sv.sndNxt, tcpSYN|tcpACK, nil), 100)
	s.inject(ToClient, sa)
	sv.sndNxt++
	c.rcvNxt, c.synced = sv.sndNxt, true
	s.ack(ToServer)
	s.maxPacket = 20 + 20 + 100
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, strings.Repeat("NOOP\r\n", 10)+"PORT 192,0,2,10,7,208\r\n") // 83 bytes, 97 rewritten
	s.send(ToServer, "PORT 192,0,2,10,7,208\r\nPORT 192,0,2,10,7,208\r\nPORT 192,0,2,10,7,208\r\nPORT 192,0,2,10,7,208\r\n")
	want := strings.Repeat("NOOP\r\n", 10) + strings.Repeat("EPRT |2|2001:db8:64::c000:20a|2000|\r\n", 5)
	if got := s.got(ToServer); got != want {
		t.Errorf("server got %q, want %q", got, want)
	}
	s.done()
}

// A caller that cannot send the Extra part loses it on the wire; the
// sender's retransmission then carries only what is missing, so the
// stream still completes.
func TestSplitTailLostThenRetransmitted(t *testing.T) {
	s := newSim(t, sess46, false)
	s.maxPacket = 576
	s.dropExtra = true
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	c := s.ends[ToServer]
	port := "PORT 192,0,2,10,7,208\r\n"
	filler := fillerLines(576 - 40 - len(port))
	b := []byte(filler + port)
	seq := c.sndNxt
	s.send(ToServer, string(b))
	s.ack(ToClient) // the server acknowledges what it got
	// The client's RTO: the whole segment again.
	s.inject(ToServer, s.build(ToServer, seq, tcpACK|0x08, b))
	want := filler + "EPRT |2|2001:db8:64::c000:20a|2000|\r\n"
	if got := s.got(ToServer); got != want {
		t.Errorf("server got %q, want %q", got, want)
	}
}

// withMSS returns the SYN b with an MSS option.
func withMSS(b []byte, mss uint16) []byte {
	var p packet
	p.decode(b)
	out := append([]byte(nil), b[:p.payload]...)
	out = append(out, tcpOptMSS, 4, byte(mss>>8), byte(mss))
	out = append(out, b[p.payload:]...)
	out[p.tcp+12] += 1 << 4
	setLengths(out, p.v6)
	fixChecksums(out, p.v6, p.tcp)
	return out
}

// fillerLines returns n bytes of SITE commands, none over 500 bytes.
func fillerLines(n int) string {
	var b strings.Builder
	for n > 0 {
		k := min(n, 500)
		if n-k > 0 && n-k < 8 {
			k -= 8
		}
		b.WriteString("SITE ")
		b.WriteString(strings.Repeat("x", k-7))
		b.WriteString("\r\n")
		n -= k
	}
	return b.String()
}

// A reply segment held only because it ends inside a Telnet sequence is
// not a committed translation: the hold timeout releases it.
func TestTelnetHoldTimesOut(t *testing.T) {
	s := newSim(t, sess64, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "NOOP\r\n")
	s.send(ToClient, "200 ok\xff")
	s.expire(time.Second)
	if got := s.got(ToClient); got != "220 ready\r\n200 ok\xff" {
		t.Errorf("client got %q after the timeout", got)
	}
	s.send(ToClient, "\xf1\r\n") // IAC NOP
	s.done()
}
