package ftpcap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// A scale capture: N concurrent 46 control connections on the IPv4 leg of
// the translator (IPv4 clients, the IPv6 server Server6 reached as
// Server6As4), or on its IPv6 leg, in three phases: the handshake and the server's greeting
// of every connection, then PASV and its 229 reply for every connection,
// then NOOP and its 200 reply for every connection. Every connection is
// open at the end of each phase, so the ALG follows all N at once.
// Optionally M spoofed SYNs to port 21 from random IPv4 sources are spread
// evenly among the real packets. Every packet is what arrives at the ALG:
// each endpoint numbers its own bytes and acknowledges what it received
// after the ALG (P46-1 of docs/PROTOCOL.md: the server receives PASV as
// EPSV 2, the client receives the 229 as a 227). The capture is streamed
// (WriteScale keeps nothing per connection) and deterministic: the same
// ScaleConfig gives the same bytes.
//
// CheckScale reads what an ALG emitted for such a capture and counts, per
// connection, the translated 227 and the NOOP and 200 that came out at the
// shifted sequence numbers.

// ScaleConfig describes a scale capture.
type ScaleConfig struct {
	// Conns is the number of real control connections.
	Conns int
	// SYNs is the number of spoofed SYNs to port 21 spread among them.
	SYNs int
	// Seed picks the spoofed SYNs' sources, ports and sequence numbers.
	Seed uint64
	// Lockstep sends each packet of a phase for every connection before
	// the next packet (every SYN, then every SYN-ACK, ...): all
	// connections are half-open at once. Otherwise a connection's packets
	// of a phase come one after the other.
	Lockstep bool
	// V6 writes the capture on the translator's IPv6 leg: the clients as
	// Prefix::10.x.y.z, the spoofed sources as Prefix::a.b.c.d, the
	// server as Server6. Otherwise on the IPv4 leg.
	V6 bool
	// Start is the time of the first packet (default 2026-01-01 00:00 UTC);
	// packets are Step apart (default 10us).
	Start time.Time
	Step  time.Duration
}

func (c *ScaleConfig) defaults() {
	if c.Start.IsZero() {
		c.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if c.Step == 0 {
		c.Step = 10 * time.Microsecond
	}
}

// Real packets per connection and phase: SYN, SYN-ACK, ACK, greeting, its
// ACK; PASV, ACK, 229, ACK; NOOP, ACK, 200, ACK.
const (
	scalePhase1 = 5
	scalePhase2 = 4
	scalePhase3 = 4
	// ScalePackets is the number of real packets of one connection.
	ScalePackets = scalePhase1 + scalePhase2 + scalePhase3
)

// The lines of a scale connection (the 229 and 227 carry its data port).
const (
	scaleGreeting = "220 scale test server ready.\r\n"
	scalePASV     = "PASV\r\n"
	scaleEPSV2    = "EPSV 2\r\n"
	scaleNOOP     = "NOOP\r\n"
	scaleOK       = "200 NOOP ok.\r\n"
)

// ScaleConn is connection i of a scale capture: its client's address on
// the IPv4 leg (10.0.0.0/8, ports 1024 to 61023), its initial sequence
// numbers (some near the wrap of the sequence space) and its data port.
func ScaleConn(i int) (client netip.AddrPort, clientISN, serverISN uint32, dataPort uint16) {
	a := uint32(10<<24) | uint32(i/60000+1)
	client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), uint16(1024+i%60000))
	clientISN = uint32(i)*2654435761 + 12345
	serverISN = ^uint32(0) - uint32(i)*7 // 0xffffffff down: early ones wrap
	dataPort = uint16(20000 + i%40000)
	return
}

// scaleIndex is the inverse of ScaleConn's client address (on either
// leg).
func scaleIndex(client netip.AddrPort) (int, bool) {
	a := client.Addr()
	if a.Is6() {
		if !Prefix.Contains(a) {
			return 0, false
		}
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	b := a.As4()
	hi := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	p := int(client.Port())
	if b[0] != 10 || hi == 0 || p < 1024 || p >= 1024+60000 {
		return 0, false
	}
	return (hi-1)*60000 + p - 1024, true
}

// scaleServer is the server of every scale connection on the leg.
func scaleServer(v6 bool) netip.AddrPort {
	if v6 {
		return netip.AddrPortFrom(Server6, 21)
	}
	return netip.AddrPortFrom(Server6As4, 21)
}

// scaleLeg is an IPv4 client or source as it appears on the leg: on the
// IPv6 leg behind Prefix (RFC 6052, /96: the last four bytes).
func scaleLeg(a netip.AddrPort, v6 bool) netip.AddrPort {
	if !v6 {
		return a
	}
	b := Prefix.Addr().As16()
	v4 := a.Addr().As4()
	copy(b[12:], v4[:])
	return netip.AddrPortFrom(netip.AddrFrom16(b), a.Port())
}

func scale229(port uint16) string {
	return fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)\r\n", port)
}

// scale227 is the 229 of P46-1 after the ALG: the server's IPv4 address
// (the control connection's) and the same port (Tayga keeps ports).
func scale227(port uint16) string {
	s := Server6As4.As4()
	return fmt.Sprintf("227 Entering Passive Mode (%d,%d,%d,%d,%d,%d)\r\n", s[0], s[1], s[2], s[3], port>>8, port&0xff)
}

// scaleStreams are the byte streams of connection i: what each endpoint
// sends, and what its peer receives after the ALG. Every write is one
// line and one segment.
type scaleStreams struct {
	client, toServer [2]string // PASV, NOOP; EPSV 2, NOOP
	server, toClient [3]string // greeting, 229, 200; greeting, 227, 200
}

func scaleConnStreams(port uint16) scaleStreams {
	return scaleStreams{
		client:   [2]string{scalePASV, scaleNOOP},
		toServer: [2]string{scaleEPSV2, scaleNOOP},
		server:   [3]string{scaleGreeting, scale229(port), scaleOK},
		toClient: [3]string{scaleGreeting, scale227(port), scaleOK},
	}
}

// lenUpTo is the length of the first n strings.
func lenUpTo(s []string, n int) uint32 {
	t := 0
	for _, x := range s[:n] {
		t += len(x)
	}
	return uint32(t)
}

// scaleSeg is a TCP segment of a scale capture before it has addresses.
type scaleSeg struct {
	fromServer bool
	flags      uint8
	seq, ack   uint32
	payload    string
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// scaleSegs returns the packets of connection i in the given phase
// (1..3), as the ALG receives them.
func scaleSegs(i, phase int) []scaleSeg {
	_, ci, si, port := ScaleConn(i)
	st := scaleConnStreams(port)
	c0, s0 := ci+1, si+1
	// Each side's next sequence number, and what it has received from
	// the other (after the ALG), before writes w (client) and v (server).
	cSeq := func(w int) uint32 { return c0 + lenUpTo(st.client[:], w) }
	cRcv := func(v int) uint32 { return s0 + lenUpTo(st.toClient[:], v) }
	sSeq := func(v int) uint32 { return s0 + lenUpTo(st.server[:], v) }
	sRcv := func(w int) uint32 { return c0 + lenUpTo(st.toServer[:], w) }
	const data = tcpACK | tcpPSH
	switch phase {
	case 1:
		return []scaleSeg{
			{false, tcpSYN, ci, 0, ""},
			{true, tcpSYN | tcpACK, si, c0, ""},
			{false, tcpACK, c0, s0, ""},
			{true, data, sSeq(0), sRcv(0), st.server[0]},
			{false, tcpACK, cSeq(0), cRcv(1), ""},
		}
	case 2:
		return []scaleSeg{
			{false, data, cSeq(0), cRcv(1), st.client[0]},
			{true, tcpACK, sSeq(1), sRcv(1), ""},
			{true, data, sSeq(1), sRcv(1), st.server[1]},
			{false, tcpACK, cSeq(1), cRcv(2), ""},
		}
	default:
		return []scaleSeg{
			{false, data, cSeq(1), cRcv(2), st.client[1]},
			{true, tcpACK, sSeq(2), sRcv(2), ""},
			{true, data, sSeq(2), sRcv(2), st.server[2]},
			{false, tcpACK, cSeq(2), cRcv(3), ""},
		}
	}
}

// appendTCP appends an IPv4 or IPv6 packet (by the addresses' family)
// carrying a TCP segment (the MSS option on a SYN) with correct checksums.
func appendTCP(b []byte, src, dst netip.AddrPort, flags uint8, seq, ack uint32, id uint16, payload string) []byte {
	optLen := 0
	if flags&tcpSYN != 0 {
		optLen = 4
	}
	thl := 20 + optLen
	v6 := src.Addr().Is6()
	ipLen := 20
	if v6 {
		ipLen = 40
	}
	total := ipLen + thl + len(payload)
	start := len(b)
	b = append(b, make([]byte, total)...)
	p := b[start:]
	var pseudo uint32
	if v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(thl+len(payload)))
		p[6] = 6
		p[7] = 64
		s6, d6 := src.Addr().As16(), dst.Addr().As16()
		copy(p[8:], s6[:])
		copy(p[24:], d6[:])
		pseudo = uint32(sum16(p[8:40], 0)) + 6 + uint32(thl+len(payload))
	} else {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(total))
		binary.BigEndian.PutUint16(p[4:], id)
		p[6] = 0x40 // DF
		p[8] = 64
		p[9] = 6
		s4, d4 := src.Addr().As4(), dst.Addr().As4()
		copy(p[12:], s4[:])
		copy(p[16:], d4[:])
		binary.BigEndian.PutUint16(p[10:], ^sum16(p[:20], 0))
		pseudo = pseudo4(s4, d4, thl+len(payload))
	}
	t := p[ipLen:]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	if flags&tcpACK != 0 {
		binary.BigEndian.PutUint32(t[8:], ack)
	}
	t[12] = byte(thl/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 64240)
	if optLen > 0 {
		t[20], t[21] = 2, 4 // MSS 1460
		binary.BigEndian.PutUint16(t[22:], 1460)
	}
	copy(t[thl:], payload)
	binary.BigEndian.PutUint16(t[16:], ^sum16(t, pseudo))
	return b
}

// pseudo4 is the sum of the TCP pseudo-header over IPv4 (RFC 793).
func pseudo4(src, dst [4]byte, n int) uint32 {
	s := uint32(binary.BigEndian.Uint16(src[:])) + uint32(binary.BigEndian.Uint16(src[2:]))
	s += uint32(binary.BigEndian.Uint16(dst[:])) + uint32(binary.BigEndian.Uint16(dst[2:]))
	return s + 6 + uint32(n)
}

// sum16 is the folded one's complement sum of b plus s (RFC 1071).
func sum16(b []byte, s uint32) uint16 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// splitmix64 is a small deterministic generator (the spoofed SYNs).
type splitmix64 uint64

func (x *splitmix64) next() uint64 {
	*x += 0x9e3779b97f4a7c15
	z := uint64(*x)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// spoofSource is a random IPv4 source outside 10.0.0.0/8 (the real
// clients) that Tayga would translate (not 0/8, 127/8, multicast or
// above, or 169.254/16).
func spoofSource(r *splitmix64) netip.AddrPort {
	for {
		v := r.next()
		a := [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
		if a[0] == 0 || a[0] == 10 || a[0] == 127 || a[0] >= 224 || (a[0] == 169 && a[1] == 254) {
			continue
		}
		return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(1024+v>>32%64000))
	}
}

// WriteScale writes the scale capture of cfg to w as a classic pcap with
// raw IP frames (link type 101).
func WriteScale(w io.Writer, cfg ScaleConfig) error {
	cfg.defaults()
	bw := bufio.NewWriterSize(w, 1<<20)
	pw := pcapgo.NewWriter(bw)
	if err := pw.WriteFileHeader(snaplen, layers.LinkTypeRaw); err != nil {
		return err
	}
	rng := splitmix64(cfg.Seed)
	server := scaleServer(cfg.V6)
	real := ScalePackets * cfg.Conns
	var n, written, synsOut int
	var buf []byte
	emit := func(p []byte) error {
		ci := gopacket.CaptureInfo{Timestamp: cfg.Start.Add(time.Duration(n) * cfg.Step), CaptureLength: len(p), Length: len(p)}
		n++
		return pw.WritePacket(ci, p)
	}
	// After real packet k (1-based), the spoofed SYNs due so far:
	// floor(k*M/real), so that they spread evenly (all of them when
	// there is no real packet).
	flood := func() error {
		due := cfg.SYNs
		if real > 0 {
			due = int(int64(written) * int64(cfg.SYNs) / int64(real))
		}
		for ; synsOut < due; synsOut++ {
			src := scaleLeg(spoofSource(&rng), cfg.V6)
			buf = appendTCP(buf[:0], src, server, tcpSYN, uint32(rng.next()), 0, uint16(synsOut), "")
			if err := emit(buf); err != nil {
				return err
			}
		}
		return nil
	}
	one := func(i, phase, k int, s scaleSeg) error {
		client, _, _, _ := ScaleConn(i)
		src, dst := scaleLeg(client, cfg.V6), server
		if s.fromServer {
			src, dst = dst, src
		}
		buf = appendTCP(buf[:0], src, dst, s.flags, s.seq, s.ack, uint16(phase<<8|k), s.payload)
		if err := emit(buf); err != nil {
			return err
		}
		written++
		return flood()
	}
	for phase := 1; phase <= 3; phase++ {
		if cfg.Lockstep {
			n := len(scaleSegs(0, phase))
			for k := 0; k < n; k++ {
				for i := 0; i < cfg.Conns; i++ {
					if err := one(i, phase, k, scaleSegs(i, phase)[k]); err != nil {
						return err
					}
				}
			}
			continue
		}
		for i := 0; i < cfg.Conns; i++ {
			for k, s := range scaleSegs(i, phase) {
				if err := one(i, phase, k, s); err != nil {
					return err
				}
			}
		}
	}
	if err := flood(); err != nil {
		return err
	}
	return bw.Flush()
}

// ScaleReport is what CheckScale found.
type ScaleReport struct {
	Conns   int // real connections expected
	Packets int // IP packets read
	// Translated counts the connections whose client received the 227
	// (P46-1) with the server's IPv4 address and the data port, at the
	// sequence number and acknowledgement the translated stream puts it.
	Translated int
	// Shifted counts the connections whose NOOP reached the server at the
	// sequence number shifted by the rewrite of PASV (and whose server's
	// 200 reached the client at the number shifted by the rewrite of the
	// 229), each with an acknowledgement in the receiver's numbering.
	Shifted int
	// Complete counts the connections all of whose packets came out
	// right (each exactly once, checksums valid).
	Complete int
	// Untouched counts the connections all of whose packets came out as
	// they were sent (an ALG that does not follow them: not translated,
	// but not broken either).
	Untouched int
	// SYNs counts the spoofed SYNs that came out, unchanged.
	SYNs     int
	Problems []string // the first problems found
	NProblem int      // all problems
}

func (r *ScaleReport) problem(format string, a ...any) {
	r.NProblem++
	if len(r.Problems) < 20 {
		r.Problems = append(r.Problems, fmt.Sprintf(format, a...))
	}
}

// OK says whether every real connection came out right.
func (r *ScaleReport) OK() bool {
	return r.NProblem == 0 && r.Translated == r.Conns && r.Shifted == r.Conns && r.Complete == r.Conns
}

func (r *ScaleReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d packets; %d connections: 227 translated %d, NOOP and 200 shifted %d, complete %d, untouched %d; spoofed SYNs out %d; %d problems",
		r.Packets, r.Conns, r.Translated, r.Shifted, r.Complete, r.Untouched, r.SYNs, r.NProblem)
	for _, p := range r.Problems {
		b.WriteString("\n  ")
		b.WriteString(p)
	}
	return b.String()
}

// scaleOut is what came out of one connection: a bit per expected output
// packet (phase and position).
type scaleOut struct {
	seen  uint16 // bit k: real packet k of the connection came out right
	raw   uint16 // bit k: real packet k came out as it was sent
	extra bool   // a packet came out twice or did not match
}

// scaleConnSegs are a connection's packets as sent and as the ALG must
// emit them, in order; CheckScale keeps those of the last connection it
// looked at (a connection's packets of a phase come one after the other).
type scaleConnSegs struct {
	i             int
	sent, emitted [ScalePackets]scaleSeg
}

func (c *scaleConnSegs) load(i int) {
	if c.i == i {
		return
	}
	c.i = i
	k := 0
	for phase := 1; phase <= 3; phase++ {
		copy(c.emitted[k:], scaleExpected(i, phase))
		k += copy(c.sent[k:], scaleSegs(i, phase))
	}
}

// match records a packet of connection i (whose packets are in c):
// translated as the ALG must (in seen), as it was sent (in raw), or both
// when the two are the same. It reports false for any other packet, or
// one that came out before.
func (o *scaleOut) match(c *scaleConnSegs, fromServer bool, flags uint8, seq, ack uint32, payload []byte) bool {
	matched := false
	for _, raw := range [2]bool{false, true} {
		bits, segs := &o.seen, &c.emitted
		if raw {
			bits, segs = &o.raw, &c.sent
		}
		for k, s := range segs {
			if s.fromServer == fromServer && s.flags == flags && s.seq == seq && s.ack == ack && s.payload == string(payload) && *bits&(1<<k) == 0 {
				*bits |= 1 << k
				matched = true
				break
			}
		}
	}
	return matched
}

// CheckScale reads the capture an ALG emitted for the scale capture of cfg
// (pcap or pcapng, any link type ReadPcap knows) and checks every packet:
// valid IPv4 and TCP checksums (IPv6 on the IPv6 leg), and for a real connection's packet, the
// sequence number, acknowledgement, flags and payload that the ALG must
// emit for one of that connection's packets (each exactly once). Packets
// of no real connection must be the spoofed SYNs. It reads the capture as
// a stream and keeps two bytes per connection.
func CheckScale(r io.Reader, cfg ScaleConfig) (*ScaleReport, error) {
	cfg.defaults()
	rep := &ScaleReport{Conns: cfg.Conns}
	src, err := openScale(r)
	if err != nil {
		return nil, err
	}
	out := make([]scaleOut, cfg.Conns)
	server := scaleServer(cfg.V6)
	segs := &scaleConnSegs{i: -1}
	for {
		data, _, err := src.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rep, err
		}
		ip := extractIP(src.LinkType(), data)
		if ip == nil {
			rep.problem("a frame without an IP packet")
			continue
		}
		rep.Packets++
		srcAP, dstAP, flags, seq, ack, payload, ok := parseTCP(ip)
		if !ok {
			rep.problem("packet %d: not a well-formed IPv4 TCP packet with valid checksums", rep.Packets)
			continue
		}
		client, fromServer := srcAP, false
		if srcAP == server {
			client, fromServer = dstAP, true
		} else if dstAP != server {
			rep.problem("packet %d: %v -> %v is not to or from the server", rep.Packets, srcAP, dstAP)
			continue
		}
		i, real := scaleIndex(client)
		if !real || i >= cfg.Conns {
			if !fromServer && flags == tcpSYN && len(payload) == 0 {
				rep.SYNs++
			} else {
				rep.problem("packet %d: %v -> %v flags %#x of no connection", rep.Packets, srcAP, dstAP, flags)
			}
			continue
		}
		// Which of the connection's packets is it? Compare with every
		// expected output of the same direction, then with the packets as
		// they were sent (a connection the ALG does not follow).
		o := &out[i]
		segs.load(i)
		if !o.match(segs, fromServer, flags, seq, ack, payload) {
			if !o.extra {
				rep.problem("connection %d (%v): unexpected or repeated packet %s seq %d ack %d flags %#x %q", i, client, dirName(fromServer), seq, ack, flags, payload)
			}
			o.extra = true
		}
	}
	// Bits of the 227 (phase 2, packet 3), the NOOP and the 200 (phase 3,
	// packets 1 and 3).
	const bit227 = 1 << (scalePhase1 + 2)
	const bitShifted = 1<<(scalePhase1+scalePhase2) | 1<<(scalePhase1+scalePhase2+2)
	const all = 1<<ScalePackets - 1
	for i := range out {
		o := out[i]
		if o.seen&bit227 != 0 {
			rep.Translated++
		}
		if o.seen&bitShifted == bitShifted {
			rep.Shifted++
		}
		switch {
		case o.extra:
		case o.seen == all:
			rep.Complete++
		case o.raw == all:
			rep.Untouched++
		default:
			rep.problem("connection %d: %d of %d packets came out translated, %d as they were sent", i, popcount(o.seen), ScalePackets, popcount(o.raw))
		}
	}
	if rep.SYNs != cfg.SYNs {
		rep.problem("%d spoofed SYNs came out, want %d", rep.SYNs, cfg.SYNs)
	}
	return rep, nil
}

func dirName(fromServer bool) string {
	if fromServer {
		return "to client"
	}
	return "to server"
}

func popcount(x uint16) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

// scaleExpected returns what the ALG must emit for the packets of
// connection i in the given phase: the client's packets reach the server
// with sequence numbers in the server's numbering of what it receives and
// acknowledgements in the server's numbering of what it sent; the
// server's the other way round; the payloads rewritten per P46-1.
func scaleExpected(i, phase int) []scaleSeg {
	_, ci, si, port := ScaleConn(i)
	st := scaleConnStreams(port)
	segs := scaleSegs(i, phase)
	c0, s0 := ci+1, si+1
	// Offsets at write boundaries map to the same write boundary in the
	// other numbering.
	mapped := func(n uint32, base uint32, from, to []string) uint32 {
		for w := 0; w <= len(from); w++ {
			if n-base == lenUpTo(from, w) {
				return base + lenUpTo(to, w)
			}
		}
		return n // not at a boundary: cannot happen in this capture
	}
	for k := range segs {
		s := &segs[k]
		if s.flags&tcpSYN != 0 {
			continue // the handshake is not touched
		}
		if s.fromServer {
			s.seq = mapped(s.seq, s0, st.server[:], st.toClient[:])
			s.ack = mapped(s.ack, c0, st.toServer[:], st.client[:])
			for w, x := range st.server {
				if s.payload == x {
					s.payload = st.toClient[w]
					break
				}
			}
		} else {
			s.seq = mapped(s.seq, c0, st.client[:], st.toServer[:])
			s.ack = mapped(s.ack, s0, st.toClient[:], st.server[:])
			for w, x := range st.client {
				if s.payload == x {
					s.payload = st.toServer[w]
					break
				}
			}
		}
	}
	return segs
}

// parseTCP takes apart an IPv4 TCP packet (verifying both checksums) or
// an IPv6 one without extension headers (verifying the TCP checksum).
func parseTCP(p []byte) (src, dst netip.AddrPort, flags uint8, seq, ack uint32, payload []byte, ok bool) {
	if len(p) >= 60 && p[0]>>4 == 6 && p[6] == 6 {
		n := int(binary.BigEndian.Uint16(p[4:]))
		if 40+n > len(p) || n < 20 {
			return
		}
		t := p[40 : 40+n]
		thl := int(t[12]>>4) * 4
		if thl < 20 || thl > len(t) || sum16(t, uint32(sum16(p[8:40], 0))+6+uint32(n)) != 0xffff {
			return
		}
		src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(p[8:24])), binary.BigEndian.Uint16(t[0:]))
		dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(p[24:40])), binary.BigEndian.Uint16(t[2:]))
		return src, dst, t[13], binary.BigEndian.Uint32(t[4:]), binary.BigEndian.Uint32(t[8:]), t[thl:], true
	}
	if len(p) < 40 || p[0] != 0x45 || p[9] != 6 {
		return
	}
	total := int(binary.BigEndian.Uint16(p[2:]))
	if total < 40 || total > len(p) || sum16(p[:20], 0) != 0xffff {
		return
	}
	p = p[:total]
	var s4, d4 [4]byte
	copy(s4[:], p[12:16])
	copy(d4[:], p[16:20])
	t := p[20:]
	thl := int(t[12]>>4) * 4
	if thl < 20 || thl > len(t) || sum16(t, pseudo4(s4, d4, len(t))) != 0xffff {
		return
	}
	src = netip.AddrPortFrom(netip.AddrFrom4(s4), binary.BigEndian.Uint16(t[0:]))
	dst = netip.AddrPortFrom(netip.AddrFrom4(d4), binary.BigEndian.Uint16(t[2:]))
	return src, dst, t[13], binary.BigEndian.Uint32(t[4:]), binary.BigEndian.Uint32(t[8:]), t[thl:], true
}

type pcapSource interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

func openScale(r io.Reader) (pcapSource, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("read capture header: %w", err)
	}
	if string(magic) == "\x0a\x0d\x0d\x0a" {
		return pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
	}
	return pcapgo.NewReader(br)
}
