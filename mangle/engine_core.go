package mangle

import (
	"encoding/binary"
	"time"
)

// Engine rewrites the FTP control connections of a NAT64, one packet at a
// time. It is not safe for concurrent use: a daemon runs one per queue, and
// the kernel's queue hash sends both directions of a flow to the same one.
type Engine struct {
	cfg   Config
	stats Stats
	flows map[FlowKey]*flow
	free  []*flow
	heldF []*flow // flows holding packets

	hoHead, hoTail *flow   // half-open flows, oldest first (evict.go)
	ho             hoTable // half-open connections opened by a SYN (halfopen.go)
	noRecords      bool    // tests: every connection a flow from its first packet, as before records
	nHalfOpen      int
	noRoom         int // new flows to refuse before looking for room again

	pkt        packet
	last       *flow // the flow of the previous packet: consecutive packets often share one
	res        *Result
	bufs       [][]byte // output packets of the current call
	nbuf       int
	scratch    []byte // transcript text of the current call
	lineOut    []byte // a replacement line being built
	textBuf    []byte // replacement text being built
	lastSweep  time.Time
	unverified bool          // the current packet's checksum was not verified (see retransmission)
	watcher    LengthWatcher // cfg.Mapper, if it is one
	active     ActiveChecker // cfg.Mapper, if it is one
	stateBuf   []byte        // an encoded flow state (state.go)
	pools      pools         // buffers flows take only while they need them
}

// New returns an engine. cfg.Mapper must be set.
func New(cfg *Config) *Engine {
	e := &Engine{cfg: *cfg}
	if e.cfg.MaxFlows <= 0 {
		e.cfg.MaxFlows = 131072
	}
	if e.cfg.MaxHeld <= 0 {
		e.cfg.MaxHeld = 4
	}
	e.cfg.MaxHeld = min(e.cfg.MaxHeld, maxHeldCap)
	if e.cfg.IdleTimeout <= 0 {
		e.cfg.IdleTimeout = 2 * time.Hour
	}
	if len(e.cfg.ServerPorts) == 0 {
		e.cfg.ServerPorts = []uint16{21}
	}
	e.watcher, _ = e.cfg.Mapper.(LengthWatcher)
	e.active, _ = e.cfg.Mapper.(ActiveChecker)
	e.flows = make(map[FlowKey]*flow)
	e.ho.init()
	e.lineOut = make([]byte, 0, 2*maxRegionBytes)
	e.textBuf = make([]byte, 0, 2*maxRegionBytes)
	e.scratch = make([]byte, 0, 4096)
	return e
}

// Stats returns a copy of the counters.
func (e *Engine) Stats() Stats {
	s := e.stats
	return s
}

// Flows returns the number of connections the engine follows: flows and
// half-open records.
func (e *Engine) Flows() int { return len(e.flows) + e.ho.n }

func (e *Engine) begin(res *Result) {
	res.reset()
	e.res = res
	e.nbuf = 0
	e.scratch = e.scratch[:0]
}

func (e *Engine) outBuf(n int) []byte {
	if e.nbuf == len(e.bufs) {
		e.bufs = append(e.bufs, make([]byte, 0, max(n, 2048)))
	}
	b := e.bufs[e.nbuf]
	if cap(b) < n {
		b = make([]byte, 0, n+256)
		e.bufs[e.nbuf] = b
	}
	e.nbuf++
	return b[:0]
}

func (e *Engine) isServerPort(p uint16) bool {
	for _, q := range e.cfg.ServerPorts {
		if p == q {
			return true
		}
	}
	return false
}

// Process handles one packet arriving at the ALG, tagged by the caller.
// now is the arrival time (the capture time in replay).
func (e *Engine) Process(b []byte, tag uint64, now time.Time, res *Result) {
	e.begin(res)
	e.stats.Packets++
	p := &e.pkt
	switch p.decode(b) {
	case notTCP:
		e.stats.NotTCP++
		e.emitOrig(tag, b)
		return
	case malformed:
		e.stats.Malformed++
		e.emitOrig(tag, b)
		return
	}
	var d Dir
	var key FlowKey
	switch {
	case e.isServerPort(p.dport):
		d = ToServer
		key = FlowKey{client: p.src, server: p.dst, cport: p.sport, sport: p.dport, v6: p.v6}
	case e.isServerPort(p.sport):
		d = ToClient
		key = FlowKey{client: p.dst, server: p.src, cport: p.dport, sport: p.sport, v6: p.v6}
	default:
		e.stats.Untranslated++
		e.emitOrig(tag, b)
		return
	}
	f := e.last
	if f == nil || f.key != key {
		f = e.flows[key]
	}
	if f == nil && e.ho.n > 0 {
		if i := e.ho.find(&key); i >= 0 {
			if e.halfOpenPacket(i, d, tag, b, now, false) {
				return
			}
			if f = e.promote(i); f == nil {
				e.stats.FlowsRefused++
				e.emitOrig(tag, b)
				return
			}
		}
	}
	if f != nil && !f.translate {
		e.stats.Untranslated++
		e.emitOrig(tag, b)
		return
	}
	e.unverified = !e.cfg.TrustChecksums && e.retransmission(f, d)
	if !e.cfg.TrustChecksums && !e.unverified && !p.checksumOK() {
		// Never parsed, never the start of a flow: it leaves as wrong as
		// it came (its numbers mapped, checksums updated incrementally),
		// and its receiver drops it.
		e.stats.BadChecksum++
		if f == nil {
			e.emitOrig(tag, b)
		} else {
			e.emit(f, d, tag, p, p.seq, true)
		}
		return
	}
	if f == nil || (p.flags&(tcpSYN|tcpACK) == tcpSYN && d == ToServer && f.s[ToServer].synced && p.seq+1 != f.s[ToServer].next) {
		if p.flags&tcpRST != 0 {
			e.stats.Untranslated++
			e.emitOrig(tag, b)
			return
		}
		if f != nil {
			// A new connection reusing the key of an old one: what the
			// old one held goes out as it is.
			e.forceRelease(f, ToServer)
			e.forceRelease(f, ToClient)
			e.dropFlow(f)
		}
		if e.isClientSYN(d) && !e.noRecords {
			e.startHalfOpen(key, tag, b, now)
			return
		}
		if f = e.newFlow(key, now); f == nil {
			e.stats.FlowsRefused++
			e.emitOrig(tag, b)
			return
		}
		if e.cfg.State != nil {
			e.restoreState(f, d, p.flags)
		}
		if d == ToClient && f.n == 0 && !f.rep.active && !f.greeted && isGreeting(p.data()) {
			// Met at the server's first reply, a 220: the greeting (the
			// rules queue a connection from its greeting on, and a
			// restart between handshake and greeting looks the same),
			// not a reply to a command the engine missed.
			f.push(pendingCmd{kind: cmdGreeting})
		}
	}
	if f.halfOpen && len(p.data()) > 0 {
		e.unlinkHalfOpen(f)
	}
	f.last = now
	e.last = f
	if !f.translate {
		e.stats.Untranslated++
		e.emitOrig(tag, b)
		return
	}
	e.process(f, d, tag, b, now)
}

// isGreeting reports whether a server's segment opens with a 220 reply
// line (RFC 959 section 4.2: "220 Service ready for new user").
func isGreeting(b []byte) bool {
	return len(b) >= 4 && b[0] == '2' && b[1] == '2' && b[2] == '0' && (b[3] == ' ' || b[3] == '-')
}

func (e *Engine) emitOrig(tag uint64, b []byte) {
	e.res.Emits = append(e.res.Emits, Emit{Tag: tag, Packet: b})
}

// newFlow starts following a connection, or returns nil when the table
// is full and no flow can go (evict.go).
func (e *Engine) newFlow(key FlowKey, now time.Time) *flow {
	f := e.allocFlow(key, now)
	if f != nil {
		e.stats.Flows++
	}
	return f
}

// allocFlow puts a new flow for key in the table, or returns nil when the
// table is full and no flow can go.
func (e *Engine) allocFlow(key FlowKey, now time.Time) *flow {
	if len(e.flows) >= e.cfg.MaxFlows && !e.makeRoom() {
		return nil
	}
	var f *flow
	if n := len(e.free); n > 0 {
		f = e.free[n-1]
		e.free = e.free[:n-1]
		*f = flow{}
	} else {
		f = new(flow)
	}
	f.key = key
	f.last, f.started = now, now
	f.sess, f.translate = e.cfg.Mapper.Classify(key.Client(), key.Server())
	if f.translate && f.sess.Kind == KindNone {
		f.translate = false
	}
	e.flows[key] = f
	e.linkHalfOpen(f)
	return f
}

func (e *Engine) dropFlow(f *flow) {
	if f.inHeldList {
		for i, g := range e.heldF {
			if g == f {
				e.heldF = append(e.heldF[:i], e.heldF[i+1:]...)
				break
			}
		}
		f.inHeldList = false
	}
	e.unlinkHalfOpen(f)
	e.pools.releaseFlow(f)
	delete(e.flows, f.key)
	e.noRoom = 0
	if e.last == f {
		e.last = nil
	}
	if len(e.free) < 1024 {
		e.free = append(e.free, f)
	}
}

// process runs one decoded TCP segment of a translated flow.
func (e *Engine) process(f *flow, d Dir, tag uint64, b []byte, now time.Time) {
	p := &e.pkt
	st := &f.s[d]
	data := p.data()
	s := p.seq
	if p.flags&tcpSYN != 0 {
		s++
		// The MSS the sender announces bounds what its peer may send it
		// (RFC 9293 section 3.7.1): the other direction's segments.
		f.s[1-d].mss = p.mss()
		if !st.synced || d == ToServer && f.n == 0 {
			st.next = s
			st.synced = true
			st.line.reset()
			if d == ToServer && f.n == 0 && !f.rep.active {
				f.push(pendingCmd{kind: cmdGreeting})
			}
		}
		if !f.saved {
			// From its SYN on, a translated session waits for the
			// next daemon rather than pass untranslated (state.go).
			f.dirty = true
			e.saveState(f)
		}
	}
	if !st.synced {
		st.next = s
		st.synced = true
	}
	if d == ToClient && len(data) > 0 {
		f.greeted = true
	}
	if p.flags&tcpRST != 0 {
		f.closed = true
	}
	end := s + uint32(len(data))
	if p.flags&tcpFIN != 0 {
		end++
	}

	if end == s {
		// No data: SYN, pure ACK, RST. Never held; a pure ACK sent while
		// data of its direction is held says the position the receiver
		// will have, not one inside an unresolved line.
		seq := p.seq
		if p.flags&tcpSYN == 0 {
			if r := e.resolved(f, d); seqLT(r, seq) {
				seq = r
			}
		}
		e.emit(f, d, tag, p, seq, true)
		e.afterAck(f, d)
		return
	}

	switch {
	case seqLT(s, st.next) && seqLE(end, st.next):
		e.stats.Retransmits++
		if st.nheld > 0 && st.coveredByHeld(s, end) {
			// A repeat of bytes held: the held copy goes out once its
			// line is complete (a zero-window probe, an early RTO).
			e.drop(tag)
			return
		}
	case seqLT(st.next, s):
		e.stats.OutOfOrder++
	default:
		// In order (possibly overlapping old data): parse what is new.
		e.feed(f, d, s, data, p.flags&tcpFIN != 0)
	}

	// Everything up to resolved can be sent; the rest waits.
	if st.nheld > 0 {
		e.drainParsed(f, d)
	}
	r := e.resolved(f, d)
	if seqLE(end, r) {
		// Send in sequence order: held packets before this one, this
		// one, then held packets it unblocked.
		if st.nheld > 0 {
			e.release(f, d, r, false, &s)
		}
		if st.line.started && seqLT(st.line.start, end) && !st.line.frozen {
			st.line.frozen = true
			e.frozen(f)
		}
		e.emit(f, d, tag, p, p.seq, true)
	} else {
		e.hold(f, d, tag, p, s, end, now, !seqLT(st.next, s))
	}
	if st.nheld > 0 {
		e.release(f, d, r, false, nil)
	}
	e.afterAck(f, d)
}

// retransmission reports whether p carries only data of flow f's
// direction d that the engine has already read: it is never parsed, and
// an incremental checksum update keeps it as right or wrong as it came, so
// its checksum need not be verified (that is the cost of a full pass).
func (e *Engine) retransmission(f *flow, d Dir) bool {
	p := &e.pkt
	if f == nil || p.flags&(tcpSYN|tcpFIN|tcpRST) != 0 {
		return false
	}
	st := &f.s[d]
	n := uint32(len(p.b) - p.payload)
	return st.synced && n > 0 && seqLE(p.seq+n, st.next)
}

// afterAck records how far the packet just processed acknowledged the
// other direction (in that direction's original numbering), for the
// history to know which rewrites no retransmission can need any more.
func (e *Engine) afterAck(f *flow, d Dir) {
	p := &e.pkt
	if p.flags&tcpACK == 0 || e.unverified {
		return // an unverified acknowledgement might be a corrupted one
	}
	ot := &f.s[1-d]
	a := ot.hist.toOrig(p.ack, false)
	if !ot.ackSeen || seqLT(ot.acked, a) {
		ot.acked, ot.ackSeen = a, true
	}
	if !ot.rcvSeen || seqLT(ot.rcvAck, p.ack) {
		ot.rcvAck, ot.rcvSeen = p.ack, true
	}
}

// resolved is the original sequence number up to which direction d's
// bytes have a known translation.
func (e *Engine) resolved(f *flow, d Dir) uint32 {
	st := &f.s[d]
	if st.line.started && f.wantsHold(d) {
		return st.line.start
	}
	return st.next
}

// feed runs the new bytes of an in-order segment through the assembler.
func (e *Engine) feed(f *flow, d Dir, s uint32, data []byte, fin bool) {
	st := &f.s[d]
	if seqLT(s, st.next) {
		skip := st.next - s
		if skip > uint32(len(data)) {
			skip = uint32(len(data))
		}
		data = data[skip:]
		s = st.next
	}
	if len(data) > 0 && st.line.text == nil {
		st.line.text = e.pools.getLine()
	}
	unsent := s // bytes from here on have not been sent
	for len(data) > 0 {
		if !f.active() {
			// Transparent or desynchronised: no parsing, only positions.
			st.line.reset()
			st.line.nneg = 0
			s += uint32(len(data))
			break
		}
		n, complete := st.line.push(s, data)
		s += uint32(n)
		data = data[n:]
		if st.line.nneg > 0 {
			e.telnet(f, d, unsent)
		}
		if complete {
			if st.line.overlong {
				e.stats.Overlong++
			}
			if !st.line.skip {
				if d == ToServer {
					e.commandLine(f, s)
				} else {
					e.replyLine(f, s)
				}
			}
			if st.nrefuse > 0 {
				e.refuseAtLineEnd(f, d, s)
			}
			st.line.reset()
			f.dirty = true
		}
	}
	st.next = s
	e.pools.releaseLine(st)
	if fin {
		st.next++
		st.fin = true
		if f.s[1-d].fin {
			f.closed = true
			f.dirty = true // saved closed: not waited for (state.go)
		}
	}
	e.saveState(f)
}

// emit sends the packet p (of direction d, tagged tag) with its sequence
// number mapped from seq, its acknowledgement and SACK blocks mapped back
// to the peer's numbering, and its payload rebuilt from the history. With
// stable false the bytes of p may not outlive this call, so even an
// unchanged packet is copied.
func (e *Engine) emit(f *flow, d Dir, tag uint64, p *packet, seq uint32, stable bool) {
	st, ot := &f.s[d], &f.s[1-d]
	data := p.data()
	ds := p.seq
	if p.flags&tcpSYN != 0 {
		ds++
	}
	newSeq := seq
	payloadChanged := false
	if !st.hist.empty() && p.flags&tcpSYN == 0 {
		newSeq = st.hist.toSent(seq)
		payloadChanged = len(data) > 0 && st.hist.overlaps(ds, ds+uint32(len(data)))
	}
	newAck := p.ack
	ackMapped := p.flags&tcpACK != 0 && !ot.hist.empty()
	if ackMapped {
		newAck = ot.hist.toOrig(p.ack, false)
	}
	urg := p.flags&tcpURG != 0 && !st.hist.empty()
	if newSeq == p.seq && !payloadChanged && !ackMapped && !urg {
		if stable {
			e.res.Emits = append(e.res.Emits, Emit{Tag: tag, Packet: p.raw})
			return
		}
		out := append(e.outBuf(len(p.raw)), p.raw...)
		e.res.Emits = append(e.res.Emits, Emit{Tag: tag, Packet: out})
		return
	}
	old := p.mutableSum(payloadChanged)
	var out []byte
	if payloadChanged {
		out = e.outBuf(len(p.b) + 2*maxRegionBytes)
		out = append(out, p.b[:p.payload]...)
		out = st.hist.appendSent(out, ds, data)
		if max := st.maxPacket(p); len(out) > max {
			e.split(f, d, tag, p, out, newSeq, newAck, ackMapped, old, max)
			return
		}
	} else {
		out = append(e.outBuf(len(p.b)), p.b...)
	}
	binary.BigEndian.PutUint32(out[p.tcp+4:], newSeq)
	binary.BigEndian.PutUint32(out[p.tcp+8:], newAck)
	if ackMapped {
		mapSACK(out, p.tcp, p.payload, &ot.hist)
	}
	if urg {
		mapUrgent(out, p, &st.hist, newSeq)
	}
	finishPacket(out, p, old, payloadChanged)
	e.stats.Modified++
	e.res.Emits = append(e.res.Emits, Emit{Tag: tag, Packet: out, Modified: true})
}

// maxPacket is the largest packet direction d may carry on this leg
// (RFC 6384 section 5; docs/PROTOCOL.md PB-8): the MSS its receiver
// announced plus the headers of p, else 1280 bytes on IPv6 and 576 on
// IPv4 (RFC 8200 section 5, RFC 791); never less than p itself.
func (st *stream) maxPacket(p *packet) int {
	n := 576
	if p.v6 {
		n = 1280
	}
	if st.mss != 0 {
		n = p.tcp + tcpMinLen + int(st.mss)
	}
	return max(n, len(p.b))
}

// split sends the rewritten packet out (headers of p, its new payload
// after them), which is larger than max, as several packets of at most
// max bytes: the first on p's verdict, the others as Extra emits. Bytes
// the receiver already acknowledged are left out first (a retransmission
// after a tail the caller could not send only carries what is missing,
// so each one makes progress).
func (e *Engine) split(f *flow, d Dir, tag uint64, p *packet, out []byte, seq, ack uint32, ackMapped bool, old uint64, max int) {
	st, ot := &f.s[d], &f.s[1-d]
	payload := out[p.payload:]
	if st.rcvSeen {
		if k := st.rcvAck - seq; int32(k) > 0 && int(k) < len(payload) {
			payload, seq = payload[k:], st.rcvAck
		}
	}
	room := max - p.payload
	if room < 1 {
		room = 1
	}
	e.stats.Modified++
	for first := true; ; first = false {
		n := min(room, len(payload))
		last := n == len(payload)
		var b []byte
		if first {
			b = out[:p.payload] // the payload is copied down over itself
		} else {
			b = append(e.outBuf(p.payload+n), p.b[:p.payload]...)
		}
		b = append(b, payload[:n]...)
		binary.BigEndian.PutUint32(b[p.tcp+4:], seq)
		binary.BigEndian.PutUint32(b[p.tcp+8:], ack)
		if ackMapped {
			mapSACK(b, p.tcp, p.payload, &ot.hist)
		}
		if p.flags&tcpURG != 0 {
			mapUrgent(b, p, &st.hist, seq)
		}
		if !last {
			b[p.tcp+13] &^= tcpFIN | tcpPSH // FIN and PSH belong to the last part
		}
		finishPacket(b, p, old, true)
		e.res.Emits = append(e.res.Emits, Emit{Tag: tag, Packet: b, Modified: true, Extra: !first})
		if !first {
			e.stats.Split++
		}
		if last {
			return
		}
		payload = payload[n:]
		seq += uint32(n)
	}
}

// mapUrgent keeps the urgent pointer of out (a rewrite of p, now at
// sequence number newSeq) pointing at the same byte (RFC 9293 section
// 3.8.5; RFC 6384 section 5): the byte it named in p's numbering, mapped
// through the history. When that cannot be said in 16 bits, URG is
// cleared (the receiver then reads the data in band, as FTP allows).
func mapUrgent(out []byte, p *packet, h *history, newSeq uint32) {
	u := uint32(binary.BigEndian.Uint16(out[p.tcp+18:]))
	nu := h.toSent(p.seq+u) - newSeq
	if u == 0 || int32(nu) <= 0 || nu > 0xffff {
		out[p.tcp+13] &^= tcpURG
		nu = 0
	}
	binary.BigEndian.PutUint16(out[p.tcp+18:], uint16(nu))
}

// mapSACK maps every SACK block (RFC 2018) back to the sender's numbering:
// left edges round up and right edges down, so a block never claims bytes
// the receiver may not have. A block that becomes empty (a D-SACK inside
// a rewritten line, say) is dropped: the option shrinks and NOPs fill the
// bytes it freed, so the header keeps its length.
func mapSACK(b []byte, tcp, payload int, h *history) {
	for i := tcp + tcpMinLen; i < payload; {
		switch b[i] {
		case tcpOptEnd:
			return
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= payload {
			return
		}
		n := int(b[i+1])
		if n < 2 || i+n > payload {
			return
		}
		if b[i] == tcpOptSACK {
			w := i + 2
			for j := i + 2; j+8 <= i+n; j += 8 {
				l := h.toOrig(binary.BigEndian.Uint32(b[j:]), true)
				r := h.toOrig(binary.BigEndian.Uint32(b[j+4:]), false)
				if !seqLT(l, r) {
					continue
				}
				binary.BigEndian.PutUint32(b[w:], l)
				binary.BigEndian.PutUint32(b[w+4:], r)
				w += 8
			}
			if w == i+2 {
				w = i // no block left: the whole option goes
			} else {
				b[i+1] = byte(w - i)
			}
			for k := w; k < i+n; k++ {
				b[k] = tcpOptNOP
			}
		}
		i += n
	}
}
