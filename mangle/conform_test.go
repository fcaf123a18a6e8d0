package mangle

import (
	"testing"
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
