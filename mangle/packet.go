package mangle

import (
	"encoding/binary"
)

// Offsets and sizes of the headers the engine reads and writes.
// IPv4: RFC 791; IPv6: RFC 8200; TCP: RFC 9293.
const (
	ipv4MinLen = 20
	ipv6Len    = 40
	tcpMinLen  = 20

	protoTCP = 6

	// IPv6 extension headers walked to find TCP (RFC 8200 section 4).
	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6AH       = 51
	ipv6DestOpts = 60
	maxExtHdrs   = 8

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20

	tcpOptEnd  = 0
	tcpOptNOP  = 1
	tcpOptMSS  = 2 // RFC 9293 section 3.2
	tcpOptSACK = 5 // RFC 2018
)

// decodeStatus says why a packet was or was not decoded.
type decodeStatus uint8

const (
	decodedTCP decodeStatus = iota
	notTCP                  // not IPv4/IPv6, or not TCP, or a non-first fragment
	malformed               // claims to be TCP but its headers do not fit
)

// packet is a validated view of an IPv4 or IPv6 packet carrying a whole
// TCP segment. It holds offsets into the bytes, never copies; decode fills
// it without allocating.
type packet struct {
	raw     []byte // the bytes as given
	b       []byte // the IP packet, trimmed to the length its header gives
	v6      bool
	tcp     int // offset of the TCP header
	payload int // offset of the TCP payload
	src     [16]byte
	dst     [16]byte
	sport   uint16
	dport   uint16
	seq     uint32
	ack     uint32
	flags   uint8
}

// decode validates b as an IPv4 or IPv6 packet carrying TCP. It never
// panics; junk is reported, not rejected with an error value.
func (p *packet) decode(b []byte) decodeStatus {
	p.raw = b
	if len(b) < 1 {
		return notTCP
	}
	switch b[0] >> 4 {
	case 4:
		return p.decode4(b)
	case 6:
		return p.decode6(b)
	}
	return notTCP
}

func (p *packet) decode4(b []byte) decodeStatus {
	if len(b) < ipv4MinLen {
		return malformed
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < ipv4MinLen || total < ihl || total > len(b) {
		return malformed
	}
	if b[9] != protoTCP {
		return notTCP
	}
	// Fragments: only a whole datagram carries a whole TCP header and
	// payload (MF set or a non-zero offset means a fragment).
	if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 {
		return notTCP
	}
	p.b = b[:total]
	p.v6 = false
	// IPv4-mapped form (RFC 4291 section 2.5.5.2), written field by field:
	// copying one fresh array into the other stalls store forwarding.
	p.src = [16]byte{10: 0xff, 11: 0xff, 12: b[12], 13: b[13], 14: b[14], 15: b[15]}
	p.dst = [16]byte{10: 0xff, 11: 0xff, 12: b[16], 13: b[17], 14: b[18], 15: b[19]}
	return p.decodeTCP(ihl)
}

func (p *packet) decode6(b []byte) decodeStatus {
	if len(b) < ipv6Len {
		return malformed
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	if plen == 0 || ipv6Len+plen > len(b) { // 0: a jumbogram, not for us
		return malformed
	}
	b = b[:ipv6Len+plen]
	next := b[6]
	off := ipv6Len
	for i := 0; ; i++ {
		if next == protoTCP {
			break
		}
		if i == maxExtHdrs {
			return notTCP
		}
		switch next {
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts:
			if off+8 > len(b) {
				return malformed
			}
			next, off = b[off], off+(int(b[off+1])+1)*8
		case ipv6AH:
			if off+8 > len(b) {
				return malformed
			}
			next, off = b[off], off+(int(b[off+1])+2)*4
		case ipv6Fragment:
			if off+8 > len(b) {
				return malformed
			}
			if binary.BigEndian.Uint16(b[off+2:off+4])&0xfff9 != 0 { // offset or M flag
				return notTCP
			}
			next, off = b[off], off+8
		default:
			return notTCP
		}
		if off > len(b) {
			return malformed
		}
	}
	p.b = b
	p.v6 = true
	copy(p.src[:], b[8:24])
	copy(p.dst[:], b[24:40])
	return p.decodeTCP(off)
}

func (p *packet) decodeTCP(off int) decodeStatus {
	b := p.b
	if off+tcpMinLen > len(b) {
		return malformed
	}
	doff := int(b[off+12]>>4) * 4
	if doff < tcpMinLen || off+doff > len(b) {
		return malformed
	}
	p.tcp = off
	p.payload = off + doff
	p.sport = binary.BigEndian.Uint16(b[off:])
	p.dport = binary.BigEndian.Uint16(b[off+2:])
	p.seq = binary.BigEndian.Uint32(b[off+4:])
	p.ack = binary.BigEndian.Uint32(b[off+8:])
	p.flags = b[off+13]
	return decodedTCP
}

// mss returns the MSS option of the segment, 0 when it has none.
func (p *packet) mss() uint16 {
	b := p.b
	for i := p.tcp + tcpMinLen; i < p.payload; {
		switch b[i] {
		case tcpOptEnd:
			return 0
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= p.payload {
			return 0
		}
		n := int(b[i+1])
		if n < 2 || i+n > p.payload {
			return 0
		}
		if b[i] == tcpOptMSS && n == 4 {
			return binary.BigEndian.Uint16(b[i+2:])
		}
		i += n
	}
	return 0
}

// data returns the TCP payload.
func (p *packet) data() []byte { return p.b[p.payload:] }

// Checksums: RFC 1071 (the Internet checksum), RFC 1624 (incremental
// update), RFC 793/8200 section 8.1 (TCP pseudo-headers for IPv4/IPv6).

// sum adds b to a one's-complement accumulator, 16 bits at a time
// (big-endian), folding lazily in a 64-bit register.
func sum(acc uint64, b []byte) uint64 {
	for len(b) >= 8 {
		acc += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	if len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold reduces an accumulator to 16 bits.
func fold(acc uint64) uint16 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// mutableSum is the one's-complement sum of what a rewrite may change in
// the TCP segment: its header without the checksum field and, withData,
// its payload and the segment length of the pseudo-header.
func (p *packet) mutableSum(withData bool) uint64 {
	return segmentSum(p.b, p.tcp, p.payload, withData)
}

func segmentSum(b []byte, tcp, payload int, withData bool) uint64 {
	acc := sum(sum(0, b[tcp:tcp+16]), b[tcp+18:payload])
	if withData {
		// The payload starts at an even offset of the segment (the TCP
		// header is a multiple of 4 bytes long), so its 16-bit words line
		// up with the segment's.
		acc = sum(acc, b[payload:]) + uint64(len(b)-tcp)
	}
	return acc
}

// updateChecksum updates the 16-bit Internet checksum at b[off:] for data
// whose one's-complement sum changed from old to new: RFC 1624 equation
// 3, HC' = ~(~HC + ~m + m'). A checksum that was wrong stays exactly as
// wrong, so a receiver still drops a corrupted packet.
func updateChecksum(b []byte, off int, old, new uint64) {
	hc := binary.BigEndian.Uint16(b[off:])
	acc := uint64(^hc) + uint64(^fold(old)) + new
	binary.BigEndian.PutUint16(b[off:], ^fold(acc))
}

// finishPacket completes out, a rewritten copy of p (the same IP and TCP
// header layout; TCP header fields and, withData, the payload changed):
// it sets the IP length and updates both checksums incrementally. old is
// p.mutableSum(withData), taken before any change.
func finishPacket(out []byte, p *packet, old uint64, withData bool) {
	if withData {
		if p.v6 {
			setLengths(out, true)
		} else {
			ol := uint64(binary.BigEndian.Uint16(p.b[2:4]))
			setLengths(out, false)
			updateChecksum(out, 10, ol, uint64(binary.BigEndian.Uint16(out[2:4])))
		}
	}
	updateChecksum(out, p.tcp+16, old, segmentSum(out, p.tcp, p.payload, withData))
}

// fixChecksums recomputes the IPv4 header checksum (IPv4) and the TCP
// checksum over the pseudo-header and the segment of the packet in b,
// whose TCP header starts at tcp. Lengths must already be right.
func fixChecksums(b []byte, v6 bool, tcp int) {
	var acc uint64
	seglen := len(b) - tcp
	if v6 {
		acc = sum(0, b[8:40])
	} else {
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:12], ^fold(sum(0, b[:tcp])))
		acc = sum(0, b[12:20])
	}
	acc += uint64(protoTCP) + uint64(seglen)
	b[tcp+16], b[tcp+17] = 0, 0
	acc = sum(acc, b[tcp:])
	binary.BigEndian.PutUint16(b[tcp+16:], ^fold(acc))
}

// setLengths writes the IP length field for a packet of len(b) bytes.
func setLengths(b []byte, v6 bool) {
	if v6 {
		binary.BigEndian.PutUint16(b[4:6], uint16(len(b)-ipv6Len))
	} else {
		binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	}
}

// checksumOK reports whether the decoded packet's TCP checksum (and IPv4
// header checksum) verify.
func (p *packet) checksumOK() bool {
	b := p.b
	var acc uint64
	if p.v6 {
		acc = sum(0, b[8:40])
	} else {
		if fold(sum(0, b[:p.tcp])) != 0xffff {
			return false
		}
		acc = sum(0, b[12:20])
	}
	acc += uint64(protoTCP) + uint64(len(b)-p.tcp)
	acc = sum(acc, b[p.tcp:])
	return fold(acc) == 0xffff
}
