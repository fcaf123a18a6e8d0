package mangle

// Sequence-number bookkeeping for one direction of a connection.
//
// Rewriting a line changes the byte stream one peer sends into another
// one the other peer receives. The history remembers each rewrite as a
// region: the original byte range [start, start+olen) and the bytes sent
// instead. From it, positions map both ways (original <-> sent), and any
// segment, retransmissions included, is rebuilt from its original bytes
// plus the regions it overlaps: a retransmitted segment comes out
// byte-identical to its first rewrite.
//
// All arithmetic is modulo 2^32 and comparisons use the sign of the
// difference (RFC 9293 section 3.4; gVisor's seqnum does the same), so
// wraparound needs no special case.

// maxRegionBytes bounds the bytes of one rewrite (the longest is a 228
// reply carrying an IPv6 address, about 100 bytes).
const maxRegionBytes = 160

// maxRegions bounds the rewrites one direction remembers until the peer
// acknowledges them; past it a rewrite is skipped and counted.
const maxRegions = 16

type region struct {
	start uint32 // original sequence number of the first replaced byte
	olen  uint32 // original length
	nlen  uint32 // length of the replacement
	off   uint32 // where the replacement starts in history.bytes
}

func (r *region) delta() uint32 { return r.nlen - r.olen }

// sentOff maps an offset strictly inside the original range (0 < off <
// olen) to an offset in the replacement. The two ranges are aligned at
// their ends: the original's last k bytes map onto the replacement's last
// k bytes (clamped to its start when the replacement is shorter). So a
// keep-alive probe at SND.NXT-1 after a shortened line maps to RCV.NXT-1
// and a 1-byte probe stays 1 byte (both ranges end with the same line
// ending); offsets never decrease, so segments that split a line still
// tile the replacement exactly.
func (r *region) sentOff(off uint32) uint32 {
	if r.nlen >= r.olen {
		return off + r.nlen - r.olen
	}
	if short := r.olen - r.nlen; off > short {
		return off - short
	}
	return 0
}

type history struct {
	base    uint32   // cumulative delta of the regions already forgotten
	n       int      // regions in use
	regions []region // from the engine's pools (pool.go), nil when unused
	// bytes holds the replacements of the regions in use, one after the
	// other: sized to what they need (a 227 is about 50 bytes) rather
	// than maxRegionBytes each. From the engine's pools, nil when unused.
	bytes []byte
}

// data returns the replacement of region r of the history.
func (h *history) data(r *region) []byte { return h.bytes[r.off : r.off+r.nlen] }

// seqLT reports a < b in sequence space.
func seqLT(a, b uint32) bool { return int32(a-b) < 0 }

// seqLE reports a <= b in sequence space.
func seqLE(a, b uint32) bool { return int32(a-b) <= 0 }

// toSent maps an original sequence number to the number the receiver
// sees. A number strictly inside a rewritten range maps inside the
// replacement by region.sentOff.
func (h *history) toSent(x uint32) uint32 {
	d := h.base
	for i := 0; i < h.n; i++ {
		r := &h.regions[i]
		off := x - r.start
		if int32(off) <= 0 {
			break
		}
		if off < r.olen {
			return r.start + d + r.sentOff(off)
		}
		d += r.delta()
	}
	return x + d
}

// toOrig maps a number the receiver acknowledges back to the sender's
// original numbering. A number strictly inside a replacement maps to the
// start of the original range (roundUp false: acknowledge no more than was
// surely received) or to its end (roundUp true: for SACK left edges).
func (h *history) toOrig(y uint32, roundUp bool) uint32 {
	d := h.base
	for i := 0; i < h.n; i++ {
		r := &h.regions[i]
		sent := r.start + d
		off := y - sent
		if off == 0 && r.nlen == 0 {
			// A range removed (a Telnet negotiation): having everything
			// before it is having it.
			d += r.delta()
			continue
		}
		if int32(off) <= 0 {
			break
		}
		if off < r.nlen {
			if roundUp {
				return r.start + r.olen
			}
			return r.start
		}
		d += r.delta()
	}
	return y - d
}

// lastEnd returns the end of the last region's original range.
func (h *history) lastEnd() (uint32, bool) {
	if h.n == 0 {
		return 0, false
	}
	r := &h.regions[h.n-1]
	return r.start + r.olen, true
}

// overlaps reports whether a region overlaps the original range [s, e).
func (h *history) overlaps(s, e uint32) bool {
	for i := 0; i < h.n; i++ {
		r := &h.regions[i]
		if !seqLT(r.start, e) {
			return false
		}
		if seqLT(s, r.start+r.olen) {
			return true
		}
	}
	return false
}

// empty reports whether the history maps every number to itself.
func (h *history) empty() bool { return h.n == 0 && h.base == 0 }

// appendSent appends to dst what the receiver gets for the original bytes
// payload that start at sequence number s.
func (h *history) appendSent(dst []byte, s uint32, payload []byte) []byte {
	e := s + uint32(len(payload))
	pos := s
	for i := 0; i < h.n; i++ {
		r := &h.regions[i]
		rs, re := r.start, r.start+r.olen
		if seqLE(re, pos) {
			continue
		}
		if seqLE(e, rs) {
			break
		}
		if seqLT(pos, rs) {
			dst = append(dst, payload[pos-s:rs-s]...)
			pos = rs
		}
		var k1 uint32
		if seqLT(rs, pos) {
			k1 = r.sentOff(pos - rs)
		}
		k2 := r.nlen
		if seqLT(e, re) {
			k2 = r.sentOff(e - rs)
		}
		dst = append(dst, h.bytes[r.off+k1:r.off+k2]...)
		pos = re
		if seqLT(e, re) {
			pos = e
		}
	}
	if seqLT(pos, e) {
		dst = append(dst, payload[pos-s:]...)
	}
	return dst
}

// add records that the original range [start, start+olen) is sent as b.
// Regions are added in stream order and never overlap. It reports false
// when the history is full or b too long: the caller then leaves the
// line as it was.
//
// Regions are kept after the receiver acknowledged them, so that a
// spurious retransmission, a keep-alive or a D-SACK block still maps
// exactly; only when the history is full are the oldest regions that end
// at or before acked (original numbering, valid with canForget) folded
// into base.
func (h *history) add(p *pools, start, olen uint32, b []byte, acked uint32, canForget bool) bool {
	if len(b) > maxRegionBytes {
		return false
	}
	if h.n == maxRegions && canForget {
		h.forget(acked)
	}
	if h.n == maxRegions {
		return false
	}
	if h.n == len(h.regions) {
		// Move to the next size class.
		r := p.getRegions(h.n + 1)
		copy(r, h.regions[:h.n])
		if h.regions != nil {
			p.putRegions(h.regions)
		}
		h.regions = r
	}
	if len(h.bytes)+len(b) > cap(h.bytes) {
		nb := p.getBytes(len(h.bytes) + len(b))
		nb = append(nb, h.bytes...)
		if h.bytes != nil {
			p.putBytes(h.bytes)
		}
		h.bytes = nb
	}
	r := &h.regions[h.n]
	r.start, r.olen, r.nlen, r.off = start, olen, uint32(len(b)), uint32(len(h.bytes))
	h.bytes = append(h.bytes, b...)
	h.n++
	return true
}

// forget drops the regions that end at or before the original sequence
// number acked, which the receiver has acknowledged: no retransmission can
// cover them again. Their length changes fold into base.
func (h *history) forget(acked uint32) {
	k := 0
	for k < h.n && seqLE(h.regions[k].start+h.regions[k].olen, acked) {
		h.base += h.regions[k].delta()
		k++
	}
	if k == 0 {
		return
	}
	copy(h.regions[:], h.regions[k:h.n])
	h.n -= k
	// The replacements of the regions left move to the front.
	if h.n == 0 {
		h.bytes = h.bytes[:0]
		return
	}
	first := h.regions[0].off
	h.bytes = h.bytes[:copy(h.bytes, h.bytes[first:])]
	for i := 0; i < h.n; i++ {
		h.regions[i].off -= first
	}
}
