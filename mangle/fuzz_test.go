package mangle

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// naiveChecksum is the RFC 1071 checksum the slow, obvious way, as the
// reference for fixChecksums.
func naiveChecksum(b []byte) bool {
	var p packet
	if p.decode(b) != decodedTCP {
		return false
	}
	b = p.b
	var pseudo []byte
	seg := b[p.tcp:]
	if p.v6 {
		pseudo = append(pseudo, b[8:40]...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
		pseudo = append(pseudo, 0, 0, 0, protoTCP)
	} else {
		var s uint32
		for i := 0; i+1 < p.tcp; i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
		for s > 0xffff {
			s = s>>16 + s&0xffff
		}
		if s != 0xffff {
			return false
		}
		pseudo = append(pseudo, b[12:20]...)
		pseudo = append(pseudo, 0, protoTCP)
		pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(seg)))
	}
	all := append(pseudo, seg...)
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var s uint32
	for i := 0; i < len(all); i += 2 {
		s += uint32(all[i])<<8 | uint32(all[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s == 0xffff
}

// FuzzStream drives a whole session from fuzz input: the bytes are cut
// into client and server segments (a control byte per segment picks the
// direction, the length and whether to retransmit an earlier segment).
// Invariants, checked by the simulated peers on every packet: checksums
// valid (own code, a naive reference and gopacket agree), each peer's
// received stream consistent (retransmissions identical at identical
// positions, nothing beyond what was sent), acknowledgements never beyond
// what their receiver sent, every packet out exactly once, and the shift
// of each direction's numbers equal to its length change.
func FuzzStream(f *testing.F) {
	f.Add([]byte("\x06PASV\r\n\x2f229 Entering Extended Passive Mode (|||2000|)\r\n"), false, false)
	f.Add([]byte("\x02PA\x05SV\r\nN\x8a227 Entering Passive Mode (198,51,100,10,7,208)\r\n"), true, false)
	f.Add([]byte("\x18EPRT |2|2001:db8:2::20|2000|\r\n\x88200 ok\r\n\x46"), true, true)
	f.Add([]byte("\x20PORT 192,0,2,10,7,208\r\nEPSV 1\r\n\xff229-a\r\n229 (|||1|)\r\n"), false, true)
	f.Add([]byte("\x10\xff\xfd\x01ALGS STATUS64\r\n\x8c200 NOOP ok\r\n"), true, true)
	f.Fuzz(func(t *testing.T, in []byte, kind64, v6 bool) {
		sess := sess46
		if kind64 {
			sess = sess64
		}
		s := newSim(t, sess, v6)
		s.e.cfg.MaxHeld = 8
		s.handshake()
		start := [2]uint32{s.ends[ToServer].sndNxt, s.ends[ToClient].sndNxt}
		type seg struct {
			d   Dir
			seq uint32
			b   []byte
		}
		var sent []seg
		byTag := map[uint64]seg{}
		for len(in) > 0 {
			c := in[0]
			in = in[1:]
			d := ToServer
			if c&0x80 != 0 {
				d = ToClient
			}
			if c&0x40 != 0 && len(sent) > 0 {
				// Retransmit an earlier segment verbatim.
				old := sent[int(c&0x3f)%len(sent)]
				s.inject(old.d, s.build(old.d, old.seq, tcpACK|0x08, old.b))
				continue
			}
			n := min(int(c&0x3f)+1, len(in))
			b := append([]byte(nil), in[:n]...)
			in = in[n:]
			sent = append(sent, seg{d, s.ends[d].sndNxt, b})
			byTag[s.tag+1] = sent[len(sent)-1]
			s.send(d, string(b))
			for _, em := range s.res.Emits {
				if !naiveChecksum(em.Packet) {
					t.Fatalf("checksum differs from the naive reference: % x", em.Packet)
				}
			}
		}
		s.flush()
		// Segments the engine dropped are lost as far as the peers can
		// tell: their senders resend them, as TCP would.
		for round := 0; len(s.dropped) > 0 && round < 4; round++ {
			tags := s.dropped
			s.dropped = nil
			for _, tag := range tags {
				if g, ok := byTag[tag]; ok {
					s.inject(g.d, s.build(g.d, g.seq, tcpACK|0x08, g.b))
				}
			}
			s.flush()
		}
		s.done()
		// The shift equals the length change, in each direction.
		key := flowKeyOf(s)
		f := s.e.flows[key]
		if f == nil {
			// Still a half-open record: no payload went either way.
			if s.e.ho.find(&key) < 0 || len(s.ends[ToServer].recv)+len(s.ends[ToClient].recv) != 0 {
				t.Fatalf("no flow, record %d, received %q and %q", s.e.ho.find(&key), s.ends[ToServer].recv, s.ends[ToClient].recv)
			}
			return
		}
		for d := ToServer; d <= ToClient; d++ {
			st := &f.s[d]
			if f.desync {
				break
			}
			orig := s.ends[d].sndNxt - start[d]
			recv := uint32(len(s.ends[1-d].recv))
			if shift := st.hist.toSent(st.next) - st.next; recv-orig != shift {
				t.Fatalf("%v: received %d bytes for %d sent, but the sequence shift is %d", d, recv, orig, int32(shift))
			}
		}
	})
}

func flowKeyOf(s *sim) FlowKey {
	c, sv := s.ends[ToServer].addr, s.ends[ToClient].addr
	return FlowKeyOf(c, sv)
}

// FuzzPacket feeds arbitrary bytes as a packet into an engine that follows
// a translated session: never a panic; anything emitted decodes (if the
// input did), and a modified packet's checksums are valid exactly when
// the input's were (PB-12). Inputs of even length get valid checksums
// first, so that the parser is reached too.
func FuzzPacket(f *testing.F) {
	s := newSim(f, sess46, false)
	s.handshake()
	f.Add(s.build(ToServer, s.ends[ToServer].sndNxt, tcpACK|0x08, []byte("PASV\r\n")))
	f.Add(s.build(ToClient, s.ends[ToClient].sndNxt, tcpACK|0x08, []byte("229 (|||2000|)\r\n")))
	f.Add([]byte{0x45, 0, 0, 20})
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 0, 64})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := newSim(t, sess46, len(b) > 0 && b[0]>>4 == 6)
		s.noCheck = true
		s.handshake()
		b = append([]byte(nil), b...)
		var q packet
		if q.decode(b) == decodedTCP && len(b)%2 == 0 {
			fixChecksums(q.b, q.v6, q.tcp)
		}
		wasOK := checksumOK(b)
		in := append([]byte(nil), b...)
		var res Result
		s.e.Process(in, 99, s.now, &res)
		if !bytes.Equal(in, b) {
			t.Fatalf("the engine wrote into its input")
		}
		var p packet
		inOK := p.decode(b) == decodedTCP
		for _, em := range res.Emits {
			if em.Modified {
				if checksumOK(em.Packet) != wasOK || naiveChecksum(em.Packet) != wasOK {
					t.Fatalf("modified packet's checksum is %v, the input's was %v", checksumOK(em.Packet), wasOK)
				}
			} else if inOK && !bytes.Equal(em.Packet, b) && em.Tag == 99 {
				t.Fatalf("unmodified packet differs from the input")
			}
		}
		s.e.Flush(&res)
	})
}
