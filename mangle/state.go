package mangle

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"time"
)

// Persistent flow state (docs/STATE.md).
//
// A control connection whose length the engine changed depends on the
// engine's sequence history for the rest of its life; one with a translated
// command in flight depends on the engine to translate the reply. Such a
// flow's state is handed to a StateStore each time a command or reply line
// completes, before any packet that depends on it is emitted, so that an
// engine started later (a restarted or upgraded daemon) picks the flow up
// where the last one left it: the first packet it meets mid-connection
// finds the state, and a retransmission of a segment rewritten before is
// rebuilt from the same history, byte for byte.

// StateStore keeps the state of flows outside the engine (Config.State).
// The engine calls it from the packet path, never concurrently; a store
// shared by several engines must be safe for concurrent use.
type StateStore interface {
	// SaveFlow records the flow's state, replacing what was saved for key
	// before. state is valid only during the call.
	SaveFlow(key FlowKey, state []byte)
	// LoadFlow appends the state last saved for key to buf and returns it,
	// or returns nil when there is none.
	LoadFlow(key FlowKey, buf []byte) []byte
	// DropFlow forgets key's state: the connection is over, or a new
	// connection reuses its key.
	DropFlow(key FlowKey)
}

// FlowKeyOf is the key of the connection client -> server, for a
// StateStore that lists its connections by their endpoints.
func FlowKeyOf(client, server netip.AddrPort) FlowKey {
	k := FlowKey{cport: client.Port(), sport: server.Port(), v6: client.Addr().Is6() && !client.Addr().Is4In6()}
	k.client = client.Addr().As16()
	k.server = server.Addr().As16()
	return k
}

// stateMagic opens an encoded flow state; its last byte is the version.
var stateMagic = [4]byte{'F', 'T', 'S', 2}

// MaxStateLen bounds the length of an encoded flow state.
const MaxStateLen = 4 + 2 + 4*17 + 1 + 2*maxPending + 9 + 2*(20+maxRegions*(9+maxRegionBytes)) + 4

const (
	stDesync = 1 << iota
	stTransparent
	stDisabled
	stAuthPending
	stLenChanged
	stClosed
	stTeardown
)

const (
	stAckSeen = 1 << iota
	stFin
	stSynced
	stMidLine
	stRcvSeen
)

// needsState reports whether the flow's state must be saved: every
// translated session's is, from its first line on (docs/STATE.md, "Which
// connections wait"). Not only a shifted one breaks without the engine: a
// 46 client's PASV that passes untranslated while no daemon runs reaches
// an IPv6 server as it is, and the transfer fails; waiting a restart out
// is what the client can live with.
func (f *flow) needsState() bool {
	return f.saved || f.translate && f.sess.Kind != KindNone && f.greeted
}

// saveState hands the flow's state to the store if a line completed since
// the last save and the flow needs it.
func (e *Engine) saveState(f *flow) {
	if !f.dirty {
		return
	}
	f.dirty = false
	if e.cfg.State == nil || !f.needsState() {
		return
	}
	e.stateBuf = f.appendState(e.stateBuf[:0])
	e.cfg.State.SaveFlow(f.key, e.stateBuf)
	f.saved = true
}

// restoreState gives a flow the engine meets for the first time the state
// an earlier engine saved for it. A client's SYN opens a new connection:
// a state left under its key is stale and dropped.
func (e *Engine) restoreState(f *flow, d Dir, flags uint8) {
	if e.cfg.State == nil {
		return
	}
	if d == ToServer && flags&(tcpSYN|tcpACK) == tcpSYN {
		e.cfg.State.DropFlow(f.key)
		return
	}
	b := e.cfg.State.LoadFlow(f.key, e.stateBuf[:0])
	if b == nil {
		return
	}
	e.stateBuf = b[:0]
	if f.decodeState(b) {
		e.stats.Restored++
	} else {
		e.stats.RestoreFailed++
	}
}

// forgetState drops the saved state of a flow the engine forgets.
func (e *Engine) forgetState(f *flow) {
	if e.cfg.State != nil && f.saved {
		e.cfg.State.DropFlow(f.key)
		f.saved = false
	}
}

// holeTimeout is how long a flow with saved state holds a segment beyond a
// hole. Segments lost with a daemon leave such holes in the next one,
// which TCP fills with a retransmission after its timeout (backed off
// while no daemon ran); released early, the later segment would end the
// session's translation (Engine.jump).
const holeTimeout = 5 * time.Second

// holdCut is the time before which a held packet of st times out.
func (e *Engine) holdCut(f *flow, st *stream, cut, now time.Time) time.Time {
	if !f.saved || st.nheld == 0 || st.held[0].parsed || !seqLT(st.next, st.held[0].seq) {
		return cut
	}
	if c := now.Add(-holeTimeout); c.Before(cut) {
		return c
	}
	return cut
}

// frozen saves the state when the start of a line went out unmodified
// (see appendState), before the packet carrying it.
func (e *Engine) frozen(f *flow) {
	if f.saved {
		f.dirty = true
		e.saveState(f)
	}
}

func appendAddr(b []byte, a netip.Addr) []byte {
	switch {
	case a.Is4():
		b = append(b, 4)
		v := a.As4()
		return append(b, v[:]...)
	case a.Is6():
		b = append(b, 16)
		v := a.As16()
		return append(b, v[:]...)
	}
	return append(b, 0)
}

// StateClosed reports whether an encoded state (as a StateStore gets it)
// is of a connection that was closed (FIN both ways, or RST).
func StateClosed(b []byte) bool {
	return len(b) > 5 && [4]byte(b[:4]) == stateMagic && b[5]&stClosed != 0
}

// StateValid reports whether b is an encoded state this engine would
// restore (magic, version, checksum and every field in range), for a
// store that takes states from elsewhere (a peer's replication).
func StateValid(b []byte) bool {
	if len(b) > MaxStateLen {
		return false
	}
	var f flow
	return f.decodeState(b)
}

// appendState appends the encoded state of the flow to b.
func (f *flow) appendState(b []byte) []byte {
	start := len(b)
	b = append(b, stateMagic[:]...)
	b = append(b, byte(f.sess.Kind))
	var fl byte
	for i, v := range []bool{f.desync, f.transparent, f.disabled, f.authPending, f.lenChanged, f.closed, f.teardown} {
		if v {
			fl |= 1 << i
		}
	}
	b = append(b, fl)
	b = appendAddr(b, f.sess.Client4)
	b = appendAddr(b, f.sess.Client6)
	b = appendAddr(b, f.sess.Server4)
	b = appendAddr(b, f.sess.Server6)
	b = append(b, byte(f.n))
	for i := 0; i < f.n; i++ {
		c := f.pending[(f.phead+i)%maxPending]
		b = append(b, byte(c.kind), byte(c.local))
	}
	r := &f.rep
	var rf byte
	for i, v := range []bool{r.active, r.recode, r.addrDone, r.first, r.final} {
		if v {
			rf |= 1 << i
		}
	}
	b = append(b, rf)
	b = binary.BigEndian.AppendUint16(b, uint16(r.code))
	b = append(b, r.codeText[:]...)
	b = append(b, r.newCode[:]...)
	for d := range f.s {
		st := &f.s[d]
		next, mid := st.next, false
		if st.line.started {
			if st.line.frozen {
				// Its start went out unmodified: the rest is consumed
				// unparsed, as this engine would.
				mid = true
			} else {
				// Held, or not yet sent: parsed again from its start,
				// its segments die with the engine and are resent.
				next = st.line.start
			}
		}
		b = binary.BigEndian.AppendUint32(b, next)
		b = binary.BigEndian.AppendUint32(b, st.acked)
		var sf byte
		if st.ackSeen {
			sf |= stAckSeen
		}
		if st.fin {
			sf |= stFin
		}
		if st.synced {
			sf |= stSynced
		}
		if mid {
			sf |= stMidLine
		}
		if st.rcvSeen {
			sf |= stRcvSeen
		}
		b = append(b, sf)
		b = binary.BigEndian.AppendUint32(b, st.rcvAck)
		b = binary.BigEndian.AppendUint16(b, st.mss)
		h := &st.hist
		b = binary.BigEndian.AppendUint32(b, h.base)
		b = append(b, byte(h.n))
		for i := 0; i < h.n; i++ {
			rg := &h.regions[i]
			b = binary.BigEndian.AppendUint32(b, rg.start)
			b = binary.BigEndian.AppendUint32(b, rg.olen)
			b = append(b, byte(rg.nlen))
			b = append(b, h.data(rg)...)
		}
	}
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start:]))
}

// stateReader reads an encoded state; a short read sets bad.
type stateReader struct {
	b   []byte
	bad bool
}

func (r *stateReader) next(n int) []byte {
	if r.bad || len(r.b) < n {
		r.bad = true
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *stateReader) u8() byte    { return r.next(1)[0] }
func (r *stateReader) u16() uint16 { return binary.BigEndian.Uint16(r.next(2)) }
func (r *stateReader) u32() uint32 { return binary.BigEndian.Uint32(r.next(4)) }

func (r *stateReader) addr() netip.Addr {
	switch r.u8() {
	case 0:
		return netip.Addr{}
	case 4:
		return netip.AddrFrom4([4]byte(r.next(4)))
	case 16:
		return netip.AddrFrom16([16]byte(r.next(16)))
	}
	r.bad = true
	return netip.Addr{}
}

// decodeState restores the flow from an encoded state. On a malformed or
// corrupt state it reports false and leaves the flow as it was.
func (f *flow) decodeState(b []byte) bool {
	if len(b) < 8 || [4]byte(b[:4]) != stateMagic {
		return false
	}
	body := b[:len(b)-4]
	if crc32.ChecksumIEEE(body) != binary.BigEndian.Uint32(b[len(b)-4:]) {
		return false
	}
	var g flow
	r := &stateReader{b: body[4:]}
	g.sess.Kind = Kind(r.u8())
	fl := r.u8()
	g.desync, g.transparent, g.disabled = fl&stDesync != 0, fl&stTransparent != 0, fl&stDisabled != 0
	g.authPending, g.lenChanged, g.closed = fl&stAuthPending != 0, fl&stLenChanged != 0, fl&stClosed != 0
	g.teardown = fl&stTeardown != 0
	g.sess.Client4, g.sess.Client6 = r.addr(), r.addr()
	g.sess.Server4, g.sess.Server6 = r.addr(), r.addr()
	n := int(r.u8())
	if n > maxPending {
		return false
	}
	for i := 0; i < n; i++ {
		g.pending[i] = pendingCmd{kind: cmdKind(r.u8()), local: localReply(r.u8())}
	}
	g.n = n
	rf := r.u8()
	g.rep.active, g.rep.recode, g.rep.addrDone, g.rep.first = rf&1 != 0, rf&2 != 0, rf&4 != 0, rf&8 != 0
	g.rep.final = rf&16 != 0
	g.rep.code = int(r.u16())
	g.rep.codeText = [3]byte(r.next(3))
	g.rep.newCode = [3]byte(r.next(3))
	for d := range g.s {
		st := &g.s[d]
		st.next, st.acked = r.u32(), r.u32()
		sf := r.u8()
		st.ackSeen, st.fin = sf&stAckSeen != 0, sf&stFin != 0
		st.synced = sf&stSynced != 0
		st.rcvSeen = sf&stRcvSeen != 0
		st.rcvAck, st.mss = r.u32(), r.u16()
		if sf&stMidLine != 0 {
			st.line.started, st.line.start, st.line.skip = true, st.next, true
		}
		h := &st.hist
		h.base = r.u32()
		h.n = int(r.u8())
		if h.n > maxRegions {
			return false
		}
		if h.n > 0 {
			h.regions = newRegions(h.n)
		}
		for i := 0; i < h.n; i++ {
			rg := &h.regions[i]
			rg.start, rg.olen, rg.nlen = r.u32(), r.u32(), uint32(r.u8())
			if rg.nlen > maxRegionBytes {
				return false
			}
			rg.off = uint32(len(h.bytes))
			h.bytes = append(h.bytes, r.next(int(rg.nlen))...)
		}
		if h.n > 0 {
			h.bytes = append(newBytes(len(h.bytes)), h.bytes...)
		}
	}
	if r.bad || len(r.b) != 0 || g.sess.Kind == KindNone {
		return false
	}
	f.sess, f.translate = g.sess, true
	f.pending, f.phead, f.n, f.rep = g.pending, 0, g.n, g.rep
	f.desync, f.transparent, f.disabled = g.desync, g.transparent, g.disabled
	f.authPending, f.teardown = g.authPending, g.teardown
	f.lenChanged, f.closed, f.saved = g.lenChanged, g.closed, true
	for d := range f.s {
		st, gs := &f.s[d], &g.s[d]
		st.hist = gs.hist
		st.next, st.acked, st.ackSeen, st.fin = gs.next, gs.acked, gs.ackSeen, gs.fin
		st.synced = gs.synced
		st.rcvAck, st.rcvSeen, st.mss = gs.rcvAck, gs.rcvSeen, gs.mss
		st.line.reset()
		st.line.started, st.line.start, st.line.skip = gs.line.started, gs.line.start, gs.line.skip
	}
	return true
}
