package mangle

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// A small TCP world for tests: two endpoints that talk through the engine.
// Each endpoint numbers what it sends in its own sequence space and
// acknowledges what it received in the numbering it received, exactly as a
// real peer of the ALG would. Every packet the engine emits is checked
// (checksums against gopacket, decodability) and delivered.

// fakeMapper is a Mapper with fixed answers, for vectors.
type fakeMapper struct {
	sess    Session
	ok      bool
	ports   map[uint16]uint16 // Passive46/Active64 port translation (default: same port)
	fail    bool
	calls   []DataRequest
	noCalls bool // don't record (for allocation tests)
	// noActive64 says the mapper cannot map a 64 EPRT (Jool without a
	// port range for the ALG).
	noActive64 bool
}

func (m *fakeMapper) CanMapActive64(Session) bool { return !m.noActive64 }

func (m *fakeMapper) Classify(client, server netip.AddrPort) (Session, bool) { return m.sess, m.ok }

func (m *fakeMapper) MapData(req DataRequest) (netip.AddrPort, error) {
	if !m.noCalls {
		m.calls = append(m.calls, req)
	}
	if m.fail {
		return netip.AddrPort{}, errors.New("no mapping")
	}
	p := req.Target.Port()
	if q, ok := m.ports[p]; ok {
		p = q
	}
	switch req.Mode {
	case Passive46:
		return netip.AddrPortFrom(req.Session.Server4, p), nil
	case Active46:
		return netip.AddrPortFrom(req.Session.Client6, p), nil
	case Passive64:
		return netip.AddrPortFrom(req.Session.Server6, p), nil
	case Active64:
		return netip.AddrPortFrom(req.Session.Client4, p), nil
	}
	return netip.AddrPort{}, errors.New("bad mode")
}

var (
	// The draft's example: IPv6 server seen as 100.1.1.10 from IPv4.
	sess46 = Session{
		Kind:    Kind46,
		Client4: netip.MustParseAddr("192.0.2.10"),
		Client6: netip.MustParseAddr("2001:db8:64::c000:20a"),
		Server4: netip.MustParseAddr("100.1.1.10"),
		Server6: netip.MustParseAddr("2001:db8:1::10"),
	}
	sess64 = Session{
		Kind:    Kind64,
		Client6: netip.MustParseAddr("2001:db8:2::20"),
		Client4: netip.MustParseAddr("192.168.255.20"),
		Server4: netip.MustParseAddr("198.51.100.10"),
		Server6: netip.MustParseAddr("2001:db8:64::c633:640a"),
	}
)

// sessDyn64 is a 64 session seen on the IPv4 leg whose client came from
// a dynamic pool: its IPv6 address is unknown.
var sessDyn64 = Session{
	Kind:    Kind64,
	Client4: netip.MustParseAddr("192.168.255.20"),
	Server4: netip.MustParseAddr("198.51.100.10"),
	Server6: netip.MustParseAddr("2001:db8:64::c633:640a"),
}

type peer struct {
	addr   netip.AddrPort
	sndNxt uint32 // next sequence number to send (own numbering)
	rcvNxt uint32 // next sequence number expected (as received)
	synced bool
	recv   []byte
}

type sim struct {
	t       testing.TB
	e       *Engine
	m       *fakeMapper
	ends    [2]*peer // indexed by Dir of what they send: ToServer = client
	res     Result
	now     time.Time
	tag     uint64
	held    map[uint64]bool
	emitted map[uint64]int
	sack    [][2]uint32 // SACK blocks to put on the next packet
	noCheck bool
	corrupt map[uint64]bool // tags injected with a wrong TCP checksum
	// maxPacket, when set, is the largest packet the path allows.
	maxPacket int
	// dropExtra leaves out Extra emits, as a caller that cannot send
	// packets of its own does.
	dropExtra bool
	// dropped lists the tags the engine dropped, for a test to resend.
	dropped []uint64
}

func newSim(t testing.TB, s Session, v6 bool) *sim {
	m := &fakeMapper{sess: s, ok: true, ports: map[uint16]uint16{}}
	return newSimMapper(t, m, v6, &Config{Mapper: m})
}

func newSimMapper(t testing.TB, m *fakeMapper, v6 bool, cfg *Config) *sim {
	cfg.Mapper = m
	var c, s netip.Addr
	if v6 {
		c, s = m.sess.Client6, m.sess.Server6
	} else {
		c, s = m.sess.Client4, m.sess.Server4
	}
	if !c.IsValid() {
		c = netip.MustParseAddr("2001:db8:2::99")
	}
	return &sim{
		t: t, e: New(cfg), m: m, now: time.Unix(1700000000, 0), held: map[uint64]bool{}, emitted: map[uint64]int{}, corrupt: map[uint64]bool{},
		ends: [2]*peer{
			{addr: netip.AddrPortFrom(c, 40000), sndNxt: 1000},
			{addr: netip.AddrPortFrom(s, 21), sndNxt: 0xfffffff0}, // wraps during the test
		},
	}
}

// build makes a packet from the endpoint sending in direction d.
func (s *sim) build(d Dir, seq uint32, flags uint8, payload []byte) []byte {
	from, to := s.ends[d], s.ends[1-d]
	return buildTCP(from.addr, to.addr, seq, from.rcvNxt, flags, payload, s.sack)
}

func buildTCP(src, dst netip.AddrPort, seq, ack uint32, flags uint8, payload []byte, sack [][2]uint32) []byte {
	v6 := src.Addr().Is6()
	ipLen := ipv4MinLen
	if v6 {
		ipLen = ipv6Len
	}
	optLen := 0
	if len(sack) > 0 {
		optLen = 2 + 2 + 8*len(sack) // NOP NOP kind len blocks
	}
	b := make([]byte, ipLen+tcpMinLen+optLen+len(payload))
	if v6 {
		b[0] = 0x60
		b[6] = protoTCP
		b[7] = 64
		a, d := src.Addr().As16(), dst.Addr().As16()
		copy(b[8:], a[:])
		copy(b[24:], d[:])
	} else {
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[4:], 0x1234)
		b[8] = 64
		b[9] = protoTCP
		a, d := src.Addr().As4(), dst.Addr().As4()
		copy(b[12:], a[:])
		copy(b[16:], d[:])
	}
	t := b[ipLen:]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = byte((tcpMinLen+optLen)/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 65535)
	if optLen > 0 {
		o := t[tcpMinLen:]
		o[0], o[1], o[2], o[3] = tcpOptNOP, tcpOptNOP, tcpOptSACK, byte(2+8*len(sack))
		for i, blk := range sack {
			binary.BigEndian.PutUint32(o[4+8*i:], blk[0])
			binary.BigEndian.PutUint32(o[8+8*i:], blk[1])
		}
	}
	copy(t[tcpMinLen+optLen:], payload)
	setLengths(b, v6)
	fixChecksums(b, v6, ipLen)
	return b
}

// handshake runs SYN, SYN-ACK, ACK.
func (s *sim) handshake() {
	c, sv := s.ends[ToServer], s.ends[ToClient]
	s.inject(ToServer, s.build(ToServer, c.sndNxt, tcpSYN, nil))
	c.sndNxt++
	sv.rcvNxt = c.sndNxt
	sv.synced = true
	s.inject(ToClient, s.build(ToClient, sv.sndNxt, tcpSYN|tcpACK, nil))
	sv.sndNxt++
	c.rcvNxt = sv.sndNxt
	c.synced = true
	s.inject(ToServer, s.build(ToServer, c.sndNxt, tcpACK, nil))
}

// send sends payload from the endpoint of direction d as one segment.
func (s *sim) send(d Dir, payload string) {
	from := s.ends[d]
	b := s.build(d, from.sndNxt, tcpACK|0x08, []byte(payload))
	from.sndNxt += uint32(len(payload))
	s.inject(d, b)
}

// ack sends a pure ACK from the endpoint of direction d.
func (s *sim) ack(d Dir) {
	s.inject(d, s.build(d, s.ends[d].sndNxt, tcpACK, nil))
}

// injectCorrupt injects b with its TCP checksum broken: it must leave
// as broken as it came, and its receiver drops it.
func (s *sim) injectCorrupt(d Dir, b []byte) {
	var p packet
	if p.decode(b) != decodedTCP {
		s.t.Fatal("not a TCP packet")
	}
	b[p.tcp+16] ^= 0x5a
	s.corrupt[s.tag+1] = true
	s.inject(d, b)
}

func (s *sim) inject(d Dir, b []byte) {
	s.tag++
	s.e.Process(b, s.tag, s.now, &s.res)
	if s.res.Held {
		s.held[s.tag] = true
	}
	s.deliver(&s.res)
}

func (s *sim) expire(after time.Duration) {
	s.now = s.now.Add(after)
	s.e.Expire(s.now, after/2, &s.res)
	s.deliver(&s.res)
}

func (s *sim) flush() {
	s.e.Flush(&s.res)
	s.deliver(&s.res)
}

func (s *sim) deliver(res *Result) {
	s.t.Helper()
	for _, em := range res.Emits {
		delete(s.held, em.Tag)
		if !em.Extra {
			s.emitted[em.Tag]++
		}
		if s.maxPacket > 0 && len(em.Packet) > s.maxPacket {
			s.t.Errorf("packet of %d bytes, larger than the path allows (%d)", len(em.Packet), s.maxPacket)
		}
		if em.Drop {
			s.dropped = append(s.dropped, em.Tag)
		}
		if em.Drop || em.Extra && s.dropExtra {
			continue // lost on the way, as far as the peers can tell
		}
		if s.corrupt[em.Tag] {
			if checksumOK(em.Packet) {
				s.t.Errorf("packet %d came in with a wrong checksum and left with a right one", em.Tag)
			}
			continue // its receiver drops it
		}
		s.check(em.Packet)
		var p packet
		if p.decode(em.Packet) != decodedTCP {
			continue
		}
		var to *peer
		switch {
		case netip.AddrPortFrom(p.dstAddr(), p.dport) == s.ends[ToServer].addr:
			to = s.ends[ToServer]
		case netip.AddrPortFrom(p.dstAddr(), p.dport) == s.ends[ToClient].addr:
			to = s.ends[ToClient]
		default:
			s.t.Fatalf("packet to unknown destination %v", p.dstAddr())
		}
		if p.flags&tcpACK != 0 && !s.noCheck && to.synced {
			// An ACK must never acknowledge what its receiver never sent.
			if seqLT(to.sndNxt, p.ack) {
				s.t.Errorf("ack %d beyond what %v sent (%d)", p.ack, to.addr, to.sndNxt)
			}
		}
		data := p.data()
		if len(data) == 0 || !to.synced {
			continue
		}
		switch {
		case p.seq == to.rcvNxt:
			to.recv = append(to.recv, data...)
			to.rcvNxt += uint32(len(data))
		case seqLT(p.seq, to.rcvNxt):
			// Overlap: what was received before must match.
			off := int(to.rcvNxt - p.seq)
			have := to.recv[len(to.recv)-min(off, len(to.recv)):]
			n := min(off, len(data))
			if string(have[:n]) != string(data[:n]) && !s.noCheck {
				s.t.Errorf("retransmission differs: had %q, got %q", have[:n], data[:n])
			}
			if off < len(data) {
				to.recv = append(to.recv, data[off:]...)
				to.rcvNxt += uint32(len(data) - off)
			}
		default:
			if !s.noCheck {
				s.t.Errorf("segment at %d beyond expected %d (data %q)", p.seq, to.rcvNxt, data)
			}
		}
	}
}

// check verifies an emitted packet with gopacket as an independent reference.
func (s *sim) check(b []byte) {
	s.t.Helper()
	if !checksumOK(b) {
		s.t.Errorf("bad checksum on emitted packet % x", b)
	}
	first := layers.LayerTypeIPv4
	if b[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	pkt := gopacket.NewPacket(b, first, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		s.t.Errorf("gopacket cannot decode emitted packet: %v", el.Error())
	}
}

// done checks that every packet injected so far came out exactly once.
func (s *sim) done() {
	s.t.Helper()
	for tag := uint64(1); tag <= s.tag; tag++ {
		if n := s.emitted[tag]; n != 1 {
			s.t.Errorf("packet %d emitted %d times", tag, n)
		}
	}
}

// got returns what the endpoint of direction d received (as text).
func (s *sim) got(d Dir) string { return string(s.ends[1-d].recv) }

func lines(ls ...string) string { return strings.Join(ls, "\r\n") + "\r\n" }
