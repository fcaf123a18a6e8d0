package mangle

import (
	"time"
)

// Holding packets: commands and replies split across segments, and
// pipelined ones (RFC 6384 section 5: a command may straddle packets).
//
// A segment that ends inside a line the engine may rewrite cannot be sent
// yet: its bytes' translation is unknown until the line ends. The engine
// keeps a copy and tells the caller to keep the verdict pending; when the
// line completes it sends the segment rewritten. A segment beyond a hole
// waits the same way until the hole is filled, so lines are always parsed
// in order.
//
// When the caller's timeout fires or the bound is hit, what happens
// depends on whether the line's translation is already committed:
//
//   - A command line is not: nothing was rewritten for it yet, so its
//     segments go out unmodified and the line is left as it was; its reply
//     then passes untranslated too, and the exchange stays consistent.
//   - A reply line to a command the engine translated is: the server got
//     PASV for the client's EPSV, say, so the client must get a 229, never
//     a raw 227. Its segments are never released unmodified: the timeout
//     does not apply to them (up to maxCommittedHold), a repeat of bytes
//     already held is dropped (the held copy goes out), and a new segment
//     past the bound is dropped after its bytes were read. A drop is what
//     a lossy path does: the sender resends, and the resent segment is
//     rewritten from the history like any retransmission.

// hold keeps packet p of direction d. parsed says its bytes have been
// through the assembler (false for a segment beyond a hole).
func (e *Engine) hold(f *flow, d Dir, tag uint64, p *packet, s, end uint32, now time.Time, parsed bool) {
	st := &f.s[d]
	if st.nheld >= e.cfg.MaxHeld && f.committed(d) {
		e.drop(tag)
		return
	}
	if st.nheld >= e.cfg.MaxHeld {
		e.stats.HeldOverflow += uint64(st.nheld) + 1
		e.forceRelease(f, d)
		if !parsed {
			e.jump(f, d, s)
			e.feed(f, d, s, p.data(), p.flags&tcpFIN != 0)
		}
		st.line.frozen = st.line.started
		e.emit(f, d, tag, p, p.seq, true)
		return
	}
	e.stats.Held++
	e.res.Held = true
	e.pools.holdBufs(st)
	off := len(st.heldBuf)
	st.heldBuf = append(st.heldBuf, p.b...)
	h := heldPkt{tag: tag, off: off, n: len(p.b), seq: s, end: end, at: now, parsed: parsed}
	// Keep the list in sequence order (it is tiny).
	i := st.nheld
	for i > 0 && seqLT(s, st.held[i-1].seq) {
		st.held[i] = st.held[i-1]
		i--
	}
	st.held[i] = h
	st.nheld++
	if !f.inHeldList {
		f.inHeldList = true
		e.heldF = append(e.heldF, f)
	}
}

func (st *stream) heldBytes(h *heldPkt) []byte { return st.heldBuf[h.off : h.off+h.n] }

// drop tells the caller to drop the packet tagged tag.
func (e *Engine) drop(tag uint64) {
	e.stats.HeldDropped++
	e.res.Emits = append(e.res.Emits, Emit{Tag: tag, Drop: true})
}

// coveredByHeld reports whether a held packet of st carries all of the
// original range [s, end).
func (st *stream) coveredByHeld(s, end uint32) bool {
	for i := 0; i < st.nheld; i++ {
		h := &st.held[i]
		if seqLE(h.seq, s) && seqLE(end, h.end) {
			return true
		}
	}
	return false
}

// maxCommittedHold bounds how long the segments of a reply being
// translated are held: past it they are dropped (never sent half
// translated), and a sender still alive resends them.
const maxCommittedHold = 2 * time.Minute

// committed reports whether the line being assembled in direction d has a
// translation the engine is already bound to (see the top of this file).
func (f *flow) committed(d Dir) bool {
	if d != ToClient {
		return false
	}
	l := &f.s[d].line
	if !l.started || l.skip || l.frozen || l.overlong || l.telnet || !f.active() {
		return false
	}
	c, ok := f.head()
	return ok && c.kind.translated()
}

// drainParsed feeds held segments that the hole before them no longer
// separates from the stream.
func (e *Engine) drainParsed(f *flow, d Dir) {
	st := &f.s[d]
	for progress := true; progress; {
		progress = false
		for i := 0; i < st.nheld; i++ {
			h := &st.held[i]
			if h.parsed || seqLT(st.next, h.seq) {
				continue
			}
			var p packet
			if p.decode(st.heldBytes(h)) == decodedTCP && seqLT(st.next, h.end) {
				e.feed(f, d, h.seq, p.data(), p.flags&tcpFIN != 0)
			}
			h.parsed = true
			progress = true
		}
	}
}

// release sends the held packets of direction d that end at or before r
// (all of them with force), in sequence order; with a non-nil before, only
// those that start before *before.
func (e *Engine) release(f *flow, d Dir, r uint32, force bool, before *uint32) {
	st := &f.s[d]
	k := 0
	for i := 0; i < st.nheld; i++ {
		h := &st.held[i]
		if !force && (!h.parsed || !seqLE(h.end, r)) || before != nil && !seqLT(h.seq, *before) {
			st.held[k] = *h
			k++
			continue
		}
		var p packet
		if p.decode(st.heldBytes(h)) == decodedTCP {
			e.emit(f, d, h.tag, &p, p.seq, false)
		}
	}
	if k == st.nheld {
		return
	}
	st.nheld = k
	// Compact the byte store (released packets were copied out). The list
	// is in sequence order, which need not be the order of the bytes in the
	// store, so move them in the store's order: each only ever moves down.
	w := 0
	for moved := 0; moved < k; moved++ {
		next := -1
		for i := 0; i < k; i++ {
			h := &st.held[i]
			if h.off >= w && (next < 0 || h.off < st.held[next].off) {
				next = i
			}
		}
		h := &st.held[next]
		copy(st.heldBuf[w:], st.heldBuf[h.off:h.off+h.n])
		h.off = w
		w += h.n
	}
	st.heldBuf = st.heldBuf[:w]
}

// forceRelease sends every held packet of direction d: the line being
// held is left as it was, and a hole that never filled is skipped (the
// session then stops translating: commands in the hole were never seen).
func (e *Engine) forceRelease(f *flow, d Dir) {
	st := &f.s[d]
	if st.line.started {
		st.line.frozen = true
	}
	for i := 0; i < st.nheld; i++ {
		h := &st.held[i]
		if h.parsed {
			continue
		}
		if seqLT(st.next, h.seq) {
			e.jump(f, d, h.seq)
		}
		var p packet
		if p.decode(st.heldBytes(h)) == decodedTCP && seqLT(st.next, h.end) {
			e.feed(f, d, h.seq, p.data(), p.flags&tcpFIN != 0)
		}
		h.parsed = true
	}
	e.release(f, d, 0, true, nil)
}

// dropHeld drops every held packet of direction d; their bytes stay read,
// so a resent copy is rewritten once the line is complete.
func (e *Engine) dropHeld(f *flow, d Dir) {
	st := &f.s[d]
	for i := 0; i < st.nheld; i++ {
		e.drop(st.held[i].tag)
	}
	st.nheld = 0
	st.heldBuf = st.heldBuf[:0]
}

// jump moves direction d past a hole to s.
func (e *Engine) jump(f *flow, d Dir, s uint32) {
	st := &f.s[d]
	if !seqLT(st.next, s) {
		return
	}
	if f.active() {
		f.desync = true
		e.stats.Desync++
	}
	st.next = s
	st.line.reset()
}

// Expire releases, unmodified, packets held since before now-holdTimeout,
// and forgets flows idle for longer than Config.IdleTimeout (closed flows
// after two minutes).
func (e *Engine) Expire(now time.Time, holdTimeout time.Duration, res *Result) {
	e.begin(res)
	cut := now.Add(-holdTimeout)
	k := 0
	for _, f := range e.heldF {
		for d := range f.s {
			st := &f.s[d]
			if st.nheld == 0 || !oldest(st).Before(e.holdCut(f, st, cut, now)) {
				continue
			}
			if f.committed(Dir(d)) {
				if oldest(st).Before(now.Add(-maxCommittedHold)) {
					e.dropHeld(f, Dir(d))
				}
				continue
			}
			e.stats.HeldTimeout += uint64(st.nheld)
			e.forceRelease(f, Dir(d))
		}
		if f.s[0].nheld+f.s[1].nheld > 0 {
			e.heldF[k] = f
			k++
		} else {
			f.inHeldList = false
			e.pools.releaseHeld(&f.s[0])
			e.pools.releaseHeld(&f.s[1])
		}
	}
	clear(e.heldF[k:])
	e.heldF = e.heldF[:k]

	sweep := min(e.cfg.IdleTimeout/4, 10*time.Second)
	if now.Sub(e.lastSweep) < sweep {
		return
	}
	e.lastSweep = now
	e.expireHalfOpen(now)
	for _, f := range e.flows {
		if f.inHeldList {
			continue
		}
		idle := now.Sub(f.last)
		if idle > e.cfg.IdleTimeout || f.closed && idle > 2*time.Minute {
			e.forgetState(f)
			e.dropFlow(f)
		} else if idle >= sweep {
			e.pools.compact(f)
		}
	}
}

func oldest(st *stream) time.Time {
	t := st.held[0].at
	for i := 1; i < st.nheld; i++ {
		if st.held[i].at.Before(t) {
			t = st.held[i].at
		}
	}
	return t
}

// Flush releases every held packet unmodified (end of a capture, shutdown).
func (e *Engine) Flush(res *Result) {
	e.begin(res)
	for _, f := range e.heldF {
		for d := range f.s {
			if n := f.s[d].nheld; n > 0 {
				e.stats.HeldTimeout += uint64(n)
				e.forceRelease(f, Dir(d))
			}
			e.pools.releaseHeld(&f.s[d])
		}
		f.inHeldList = false
	}
	clear(e.heldF)
	e.heldF = e.heldF[:0]
}
