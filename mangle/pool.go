package mangle

// Buffers a flow needs only now and then: the text of an incomplete line,
// held packets, the regions of rewrites not yet acknowledged. An idle
// established flow keeps none of them (about 800 bytes in all with its slot
// in the flow table), so a queue follows 100,000 connections in about 80 MB.
// A flow takes them from the engine's free lists when it needs them and
// gives them back when it no longer does, so the steady state allocates
// nothing.

// regionClasses are the capacities a history's regions come in: most
// sessions have one or two rewrites awaiting acknowledgement.
var regionClasses = [...]int{1, 4, maxRegions}

// bytesClasses are the capacities a history's replacement bytes come in:
// one 227 or 229 (about 50 bytes), one 228 with an IPv6 address (about
// 100), a few, and the most a full history can hold.
var bytesClasses = [...]int{64, maxRegionBytes, 4 * maxRegionBytes, maxRegions * maxRegionBytes}

// pools are an engine's free lists (an engine is used by one goroutine).
type pools struct {
	regions [len(regionClasses)][][]region
	bytes   [len(bytesClasses)][][]byte
	lines   []*lineBuf
	held    []*[maxHeldCap]heldPkt
	heldBuf [][]byte
}

// poolKeep bounds each free list: past it, returned buffers go to the
// garbage collector.
const poolKeep = 4096

// newRegions allocates room for n regions in the smallest class that
// holds them.
func newRegions(n int) []region {
	for _, size := range regionClasses {
		if n <= size {
			return make([]region, size)
		}
	}
	return nil
}

func (p *pools) getRegions(n int) []region {
	for c, size := range regionClasses {
		if n > size {
			continue
		}
		if k := len(p.regions[c]); k > 0 {
			r := p.regions[c][k-1]
			p.regions[c] = p.regions[c][:k-1]
			return r
		}
		return make([]region, size)
	}
	return nil
}

func (p *pools) putRegions(r []region) {
	for c, size := range regionClasses {
		if cap(r) == size && len(p.regions[c]) < poolKeep {
			p.regions[c] = append(p.regions[c], r[:size])
			return
		}
	}
}

// newBytes allocates an empty buffer for n replacement bytes in the
// smallest class that holds them.
func newBytes(n int) []byte {
	for _, size := range bytesClasses {
		if n <= size {
			return make([]byte, 0, size)
		}
	}
	return make([]byte, 0, n)
}

// getBytes returns an empty buffer with room for n bytes.
func (p *pools) getBytes(n int) []byte {
	for c, size := range bytesClasses {
		if n > size {
			continue
		}
		if k := len(p.bytes[c]); k > 0 {
			b := p.bytes[c][k-1]
			p.bytes[c] = p.bytes[c][:k-1]
			return b
		}
		break
	}
	return newBytes(n)
}

func (p *pools) putBytes(b []byte) {
	for c, size := range bytesClasses {
		if cap(b) == size && len(p.bytes[c]) < poolKeep {
			p.bytes[c] = append(p.bytes[c], b[:0])
			return
		}
	}
}

// releaseHistory takes back the buffers of a history that maps nothing
// any more.
func (p *pools) releaseHistory(h *history) {
	if h.regions != nil {
		p.putRegions(h.regions)
		h.regions = nil
	}
	if h.bytes != nil {
		p.putBytes(h.bytes)
		h.bytes = nil
	}
}

func (p *pools) getLine() *lineBuf {
	if k := len(p.lines); k > 0 {
		b := p.lines[k-1]
		p.lines = p.lines[:k-1]
		return b
	}
	return new(lineBuf)
}

func (p *pools) putLine(b *lineBuf) {
	if len(p.lines) < poolKeep {
		p.lines = append(p.lines, b)
	}
}

// holdBufs gives stream st its held-packet list and byte store.
func (p *pools) holdBufs(st *stream) {
	if st.held == nil {
		if k := len(p.held); k > 0 {
			st.held = p.held[k-1]
			p.held = p.held[:k-1]
		} else {
			st.held = new([maxHeldCap]heldPkt)
		}
	}
	if st.heldBuf == nil {
		if k := len(p.heldBuf); k > 0 {
			st.heldBuf = p.heldBuf[k-1]
			p.heldBuf = p.heldBuf[:k-1]
		}
	}
}

// releaseHeld takes back the held-packet buffers of a stream that holds
// nothing.
func (p *pools) releaseHeld(st *stream) {
	if st.nheld > 0 {
		return
	}
	if st.held != nil {
		if len(p.held) < poolKeep {
			p.held = append(p.held, st.held)
		}
		st.held = nil
	}
	if st.heldBuf != nil {
		if len(p.heldBuf) < poolKeep && cap(st.heldBuf) <= 4*2048 {
			p.heldBuf = append(p.heldBuf, st.heldBuf[:0])
		}
		st.heldBuf = nil
	}
}

// releaseLine takes back the line buffer of a stream between lines.
func (p *pools) releaseLine(st *stream) {
	if st.line.text != nil && !st.line.started {
		p.putLine(st.line.text)
		st.line.text = nil
	}
}

// releaseFlow takes back every buffer of a flow that is being forgotten.
func (p *pools) releaseFlow(f *flow) {
	for d := range f.s {
		st := &f.s[d]
		st.nheld = 0
		p.releaseHeld(st)
		if st.line.text != nil {
			p.putLine(st.line.text)
			st.line.text = nil
		}
		p.releaseHistory(&st.hist)
	}
}

// compact gives back what an idle flow no longer needs: the regions its
// peer acknowledged (no retransmission can need them after the flow has
// been quiet for a sweep period; their length changes stay in base).
func (p *pools) compact(f *flow) {
	for d := range f.s {
		st := &f.s[d]
		if st.ackSeen && st.hist.n > 0 {
			st.hist.forget(st.acked)
		}
		if st.hist.n == 0 {
			p.releaseHistory(&st.hist)
		}
		p.releaseLine(st)
	}
}
