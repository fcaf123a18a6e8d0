package mangle

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Adversarial stream shapes: split and pipelined commands, retransmissions,
// SACK, multi-line replies, Telnet bytes, holes, wraparound.

func TestSplitSegmentCommand(t *testing.T) {
	s := newSim(t, sess46, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "PA")
	if !s.res.Held {
		t.Fatalf("segment ending inside PASV was not held")
	}
	if got := s.got(ToServer); got != "" {
		t.Fatalf("server got %q before the line completed", got)
	}
	s.send(ToServer, "SV\r\n")
	s.send(ToClient, "229 Entering Extended Passive Mode (|||2000|)\r\n")
	if diff := cmp.Diff(lines("EPSV 2"), s.got(ToServer)); diff != "" {
		t.Errorf("server got (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(lines("220 ready", "227 Entering Passive Mode (100,1,1,10,7,208)"), s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
	s.done()
}

func TestSplitEveryByte(t *testing.T) {
	for _, cmd := range []string{"PORT 192,0,2,10,7,208\r\n", "EPRT |1|192.0.2.10|2000|\r\n"} {
		s := newSim(t, sess46, true)
		s.e.cfg.MaxHeld = 16
		s.handshake()
		s.send(ToClient, "220 ready\r\n")
		for i := 0; i < len(cmd); {
			n := min(2, len(cmd)-i)
			s.send(ToServer, cmd[i:i+n])
			i += n
		}
		s.send(ToClient, "200 ok\r\n")
		if diff := cmp.Diff(lines("EPRT |2|2001:db8:64::c000:20a|2000|"), s.got(ToServer)); diff != "" {
			t.Errorf("server got (-want +got):\n%s", diff)
		}
		s.done()
	}
}

func TestSplitReply(t *testing.T) {
	s := newSim(t, sess64, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "EPSV\r\n")
	s.send(ToClient, "227 Entering Passive Mo")
	s.send(ToClient, "de (198,51,100,10,7,208)\r")
	s.send(ToClient, "\n")
	if diff := cmp.Diff(lines("220 ready", "229 Entering Extended Passive Mode (|||2000|)"), s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
	s.done()
}

func TestSplitTimeout(t *testing.T) {
	s := newSim(t, sess46, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "PA")
	s.expire(time.Second)
	if got := s.got(ToServer); got != "PA" {
		t.Fatalf("after the timeout the server got %q, want the held bytes unmodified", got)
	}
	s.send(ToServer, "SV\r\n")
	s.send(ToClient, "227 Entering Passive Mode (0,0,0,0,7,208)\r\n")
	if diff := cmp.Diff("PASV\r\n", s.got(ToServer)); diff != "" {
		t.Errorf("server got (-want +got):\n%s", diff)
	}
	if st := s.e.Stats(); st.HeldTimeout != 1 {
		t.Errorf("HeldTimeout = %d, want 1", st.HeldTimeout)
	}
	s.done()
}

func TestHeldOverflow(t *testing.T) {
	s := newSim(t, sess46, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	for _, c := range []string{"P", "O", "R", "T", " ", "1"} { // MaxHeld is 4
		s.send(ToServer, c)
	}
	s.send(ToServer, "92,0,2,10,7,208\r\n")
	if diff := cmp.Diff("PORT 192,0,2,10,7,208\r\n", s.got(ToServer)); diff != "" {
		t.Errorf("server got (-want +got):\n%s", diff)
	}
	if st := s.e.Stats(); st.HeldOverflow == 0 {
		t.Errorf("HeldOverflow not counted")
	}
	s.done()
}

func TestPipelined(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		s := newSim(t, sess46, v6)
		s.handshake()
		s.send(ToClient, "220 ready\r\n")
		s.send(ToServer, "TYPE I\r\nPASV\r\nRETR f\r\nPORT 192,0,2,10,7,208\r\nEPSV 1\r\nLIST\r\n")
		s.send(ToClient, "200 Binary\r\n229 Entering Extended Passive Mode (|||2000|)\r\n150 Opening\r\n226 Done\r\n200 PORT ok\r\n")
		s.send(ToClient, "229 Entering Extended Passive Mode (|||2001|)\r\n150 Here\r\n226 Done\r\n")
		wantS := lines("TYPE I", "EPSV 2", "RETR f", "EPRT |2|2001:db8:64::c000:20a|2000|", "EPSV 2", "LIST")
		wantC := lines("220 ready", "200 Binary", "227 Entering Passive Mode (100,1,1,10,7,208)", "150 Opening", "226 Done", "200 PORT ok",
			"229 Entering Extended Passive Mode (|||2001|)", "150 Here", "226 Done")
		if diff := cmp.Diff(wantS, s.got(ToServer)); diff != "" {
			t.Errorf("server got (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantC, s.got(ToClient)); diff != "" {
			t.Errorf("client got (-want +got):\n%s", diff)
		}
		s.done()
	}
}

func TestMultilineReply(t *testing.T) {
	s := newSim(t, sess64, false)
	s.handshake()
	s.send(ToClient, "220-Welcome\r\n220-to the\r\n220 server\r\n")
	s.send(ToServer, "EPSV\r\n")
	s.send(ToClient, "227-Here it comes\r\n some text\r\n227-Entering Passive Mode (198,51,100,10,7,208)\r\n227 Done\r\n")
	s.send(ToServer, "NOOP\r\n")
	s.send(ToClient, "200 ok\r\n")
	wantC := lines("220-Welcome", "220-to the", "220 server",
		"229-Here it comes", " some text", "229-Entering Extended Passive Mode (|||2000|)", "229 Done", "200 ok")
	if diff := cmp.Diff(wantC, s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
	s.done()
}

func TestPreliminaryReplyDoesNotComplete(t *testing.T) {
	s := newSim(t, sess64, false)
	s.handshake()
	s.send(ToClient, "120 soon\r\n220 ready\r\n")
	s.send(ToServer, "RETR x\r\nEPSV\r\n")
	s.send(ToClient, "150 Opening\r\n226 ok\r\n227 Entering Passive Mode (198,51,100,10,7,208)\r\n")
	want := lines("120 soon", "220 ready", "150 Opening", "226 ok", "229 Entering Extended Passive Mode (|||2000|)")
	if diff := cmp.Diff(want, s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
}

// A retransmitted segment comes out byte-identical to its first rewrite,
// and the mapper is not asked again.
func TestRetransmission(t *testing.T) {
	s := newSim(t, sess46, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	c := s.ends[ToServer]
	seq := c.sndNxt
	s.send(ToServer, "PORT 192,0,2,10,7,208\r\n")
	first := append([]byte(nil), s.res.Emits[0].Packet...)
	// The same segment again, as the client's TCP would resend it.
	s.inject(ToServer, s.build(ToServer, seq, tcpACK|0x08, []byte("PORT 192,0,2,10,7,208\r\n")))
	if diff := cmp.Diff(first, s.res.Emits[0].Packet); diff != "" {
		t.Errorf("retransmission differs from the first rewrite:\n%s", diff)
	}
	// A retransmission that coalesces the old segment with new data.
	s.inject(ToServer, s.build(ToServer, seq, tcpACK|0x08, []byte("PORT 192,0,2,10,7,208\r\nNOOP\r\n")))
	c.sndNxt += 6
	s.send(ToClient, "200 ok\r\n200 ok\r\n")
	if diff := cmp.Diff(lines("EPRT |2|2001:db8:64::c000:20a|2000|", "NOOP"), s.got(ToServer)); diff != "" {
		t.Errorf("server got (-want +got):\n%s", diff)
	}
	if len(s.m.calls) != 1 {
		t.Errorf("mapper asked %d times, want once", len(s.m.calls))
	}
	if st := s.e.Stats(); st.Retransmits != 1 {
		t.Errorf("Retransmits = %d, want 1", st.Retransmits)
	}
	s.done()
}

// A retransmission that starts inside a rewritten line maps onto the same
// offsets of the replacement.
func TestPartialRetransmission(t *testing.T) {
	s := newSim(t, sess64, true)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	c := s.ends[ToServer]
	seq := c.sndNxt
	cmd := "EPRT |2|2001:db8:2::20|2000|\r\nNOOP\r\n"
	s.send(ToServer, cmd)
	for _, cut := range []int{1, 5, 10, 29, 30, 31} {
		s.inject(ToServer, s.build(ToServer, seq+uint32(cut), tcpACK|0x08, []byte(cmd[cut:])))
	}
	if diff := cmp.Diff(lines("PORT 192,168,255,20,7,208", "NOOP"), s.got(ToServer)); diff != "" {
		t.Errorf("server got (-want +got):\n%s", diff)
	}
	s.done()
}

// SACK blocks from the server, in the numbering it received, come back to
// the client in the client's numbering.
func TestSACK(t *testing.T) {
	s := newSim(t, sess46, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	c := s.ends[ToServer]
	s.send(ToServer, "PASV\r\n") // grows by 2: EPSV 2
	s.send(ToClient, "229 Entering Extended Passive Mode (|||2000|)\r\n")
	base := c.sndNxt
	s.send(ToServer, "NOOP\r\n")
	// The server saw EPSV 2 (8 bytes) for PASV (6): its numbering is 2 ahead.
	srvBase := base + 2
	s.sack = [][2]uint32{{srvBase, srvBase + 6}}
	s.ends[ToClient].rcvNxt = srvBase - 8 // pretend the EPSV line was lost
	s.ack(ToClient)
	s.sack = nil
	var p packet
	out := s.res.Emits[0].Packet
	if p.decode(out) != decodedTCP {
		t.Fatal("bad packet")
	}
	opts := out[p.tcp+tcpMinLen : p.payload]
	l, r := be32(opts[4:]), be32(opts[8:])
	if l != base || r != base+6 {
		t.Errorf("SACK block = %d-%d, want %d-%d", l, r, base, base+6)
	}
	s.ends[ToClient].rcvNxt = srvBase + 6
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func TestTelnet(t *testing.T) {
	s := newSim(t, sess46, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	// IAC IP IAC DM before ABOR; an option negotiation before PASV; IAC
	// IAC inside a command is text.
	s.send(ToServer, "\xff\xf4\xff\xf2ABOR\r\n\xff\xfd\x01PASV\r\nSTOR a\xff\xffb\r\n")
	s.send(ToClient, "226 aborted\r\n229 Entering Extended Passive Mode (|||2000|)\r\n150 go\r\n")
	// The negotiation is refused by the ALG, never relayed (PB-6).
	want := "\xff\xf4\xff\xf2ABOR\r\nEPSV 2\r\nSTOR a\xff\xffb\r\n"
	if diff := cmp.Diff(want, s.got(ToServer)); diff != "" {
		t.Errorf("server got (-want +got):\n%s", diff)
	}
	if !strings.Contains(s.got(ToClient), "226 aborted\r\n\xff\xfc\x01227 Entering Passive Mode (100,1,1,10,7,208)") {
		t.Errorf("client got %q", s.got(ToClient))
	}
	s.done()
}

func TestOverlongLine(t *testing.T) {
	s := newSim(t, sess46, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	long := "PORT 192,0,2,10,7,208" + strings.Repeat(" ", 1100) + "\r\n"
	s.send(ToServer, long)
	s.send(ToServer, "PASV\r\n")
	s.send(ToClient, "500 too long\r\n229 Entering Extended Passive Mode (|||2000|)\r\n")
	if diff := cmp.Diff(long+"EPSV 2\r\n", s.got(ToServer)); diff != "" {
		t.Errorf("server got (-want +got):\n%s", diff)
	}
	if st := s.e.Stats(); st.Overlong != 1 {
		t.Errorf("Overlong = %d, want 1", st.Overlong)
	}
	s.done()
}

// A segment beyond a hole waits for the hole to be filled.
func TestOutOfOrder(t *testing.T) {
	s := newSim(t, sess46, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	c := s.ends[ToServer]
	seq := c.sndNxt
	a, b := "PASV\r\n", "NOOP\r\n"
	c.sndNxt += uint32(len(a + b))
	s.inject(ToServer, s.build(ToServer, seq+uint32(len(a)), tcpACK|0x08, []byte(b)))
	if !s.res.Held {
		t.Fatal("segment beyond a hole was not held")
	}
	s.inject(ToServer, s.build(ToServer, seq, tcpACK|0x08, []byte(a)))
	s.send(ToClient, "229 Entering Extended Passive Mode (|||2000|)\r\n200 ok\r\n")
	if diff := cmp.Diff(lines("EPSV 2", "NOOP"), s.got(ToServer)); diff != "" {
		t.Errorf("server got (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(lines("220 ready", "227 Entering Passive Mode (100,1,1,10,7,208)", "200 ok"), s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
	s.done()
}

// Many rewrites in one connection, across sequence wraparound (the
// server's numbers start just below 2^32), with acknowledgements that let
// the engine forget old rewrites.
func TestManyRewrites(t *testing.T) {
	s := newSim(t, sess46, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	wantS, wantC := "", "220 ready\r\n"
	for i := 0; i < 200; i++ {
		s.send(ToServer, "PASV\r\n")
		s.send(ToClient, "229 Entering Extended Passive Mode (|||2000|)\r\n")
		s.ack(ToServer)
		wantS += "EPSV 2\r\n"
		wantC += "227 Entering Passive Mode (100,1,1,10,7,208)\r\n"
	}
	if s.got(ToServer) != wantS || s.got(ToClient) != wantC {
		t.Errorf("streams differ after 200 rewrites")
	}
	if st := s.e.Stats(); st.RegionsFull != 0 || st.Rewrites != 400 {
		t.Errorf("stats: %+v", st)
	}
	s.done()
}

func TestFlushReleasesEverything(t *testing.T) {
	s := newSim(t, sess46, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "PO")
	s.send(ToClient, "22")
	s.flush()
	if s.got(ToServer) != "PO" {
		t.Errorf("server got %q", s.got(ToServer))
	}
	s.done()
}

func TestUntranslatedPassesUntouched(t *testing.T) {
	m := &fakeMapper{sess: sess46, ok: false}
	s := newSimMapper(t, m, false, &Config{})
	s.handshake()
	s.send(ToServer, "PASV\r\n")
	if s.res.Emits[0].Modified || s.got(ToServer) != "PASV\r\n" {
		t.Errorf("untranslated flow was changed")
	}
	s.done()
}

// Held segments that arrive out of order sit in the store in arrival
// order but in the list in sequence order; releasing some of them must
// not damage the others.
func TestHeldOutOfOrderPartialRelease(t *testing.T) {
	s := newSim(t, sess46, false)
	s.e.cfg.MaxHeld = 8
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	c := s.ends[ToServer]
	base := c.sndNxt
	seg := func(off int, text string) {
		s.inject(ToServer, s.build(ToServer, base+uint32(off), tcpACK|0x08, []byte(text)))
	}
	c.sndNxt += 18
	seg(0, "PA")        // held: inside PASV
	seg(12, "NOOP\r\n") // beyond a hole
	seg(7, "OOP\r\n")   // beyond a hole, earlier than the one before
	seg(2, "SV\r\n")    // completes PASV: the first two go, the rest wait
	seg(6, "N")         // fills the hole
	s.send(ToClient, "229 Entering Extended Passive Mode (|||2000|)\r\n200 ok\r\n200 ok\r\n")
	if diff := cmp.Diff(lines("EPSV 2", "NOOP", "NOOP"), s.got(ToServer)); diff != "" {
		t.Errorf("server got (-want +got):\n%s", diff)
	}
	s.done()
}

func TestSplitBetweenCRAndLF(t *testing.T) {
	for _, kind := range []Session{sess46, sess64} {
		s := newSim(t, kind, false)
		s.handshake()
		s.send(ToClient, "220 ready\r\n")
		s.send(ToServer, "EPSV\r")
		s.send(ToServer, "\n")
		want := "EPSV\r\n"
		if kind.Kind == Kind64 {
			want = "PASV\r\n"
		}
		if got := s.got(ToServer); got != want {
			t.Errorf("%v: server got %q, want %q", kind.Kind, got, want)
		}
		s.done()
	}
}

// A SACK block that maps to nothing (it lies inside a rewritten line) is
// removed from the option rather than sent empty.
func TestSACKBlockInsideRewrite(t *testing.T) {
	s := newSim(t, sess46, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	c := s.ends[ToServer]
	base := c.sndNxt
	s.send(ToServer, "PORT 192,0,2,10,7,208\r\n")
	s.send(ToServer, "NOOP\r\n")
	// The server SACKs 3 bytes in the middle of the rewritten EPRT line
	// (a D-SACK, say) and the NOOP after it.
	sent := uint32(len("EPRT |2|2001:db8:64::c000:20a|2000|\r\n"))
	s.sack = [][2]uint32{{base + 5, base + 8}, {base + sent, base + sent + 6}}
	s.ack(ToClient)
	s.sack = nil
	var p packet
	out := s.res.Emits[0].Packet
	if p.decode(out) != decodedTCP || !checksumOK(out) {
		t.Fatal("bad packet")
	}
	opts := out[p.tcp+tcpMinLen : p.payload]
	want := []byte{tcpOptNOP, tcpOptNOP, tcpOptSACK, 10}
	orig := uint32(len("PORT 192,0,2,10,7,208\r\n"))
	want = binary.BigEndian.AppendUint32(want, base+orig)
	want = binary.BigEndian.AppendUint32(want, base+orig+6)
	want = append(want, tcpOptNOP, tcpOptNOP, tcpOptNOP, tcpOptNOP, tcpOptNOP, tcpOptNOP, tcpOptNOP, tcpOptNOP)
	if diff := cmp.Diff(want, opts); diff != "" {
		t.Errorf("options (-want +got):\n%s", diff)
	}
}
