package mangle

// Telnet option negotiation (RFC 6384 section 5; docs/PROTOCOL.md PB-6).
//
// The control connection is a Telnet connection (RFC 959 section 4.1),
// and RFC 6384 section 5 asks the ALG to refuse option negotiation by
// either side without relaying it, as an FTP server does (RFC 1123
// section 4.1.2.12): WILL x is answered DONT x, DO x is answered WONT x.
//
// A packet ALG cannot make a packet of its own without taking over TCP's
// reliability for it, so both halves ride on the peers' own segments:
//
//   - The negotiation (IAC WILL/WONT/DO/DONT opt, three bytes) is removed
//     from the stream, a rewrite to nothing that the sequence history
//     accounts for like any other. A segment that ends inside one is held
//     until the three bytes are complete. WONT and DONT are removed too
//     and get no answer (nothing was ever agreed, RFC 854).
//   - The refusal is added to the other direction, after the line ending
//     of the next line that direction sends: toward a server, behind the
//     client's next command; toward a client, behind the server's next
//     reply line. It is thus delivered, acknowledged and retransmitted as
//     part of that line. Until such a line comes, the refusal waits; a peer
//     that sent a negotiation and waits for its answer before sending
//     anything else is not an FTP peer.
//
// A negotiation whose first byte already left unmodified (held past the
// hold timeout) is relayed as it is and counted.

// maxRefuse bounds the refusal bytes waiting for a direction's next line
// (four refusals); more are dropped and counted.
const maxRefuse = 12

// telnet handles the negotiations the assembler of direction d reported.
// Bytes from unsent on are in the segment being fed; earlier ones may
// sit in held segments.
func (e *Engine) telnet(f *flow, d Dir, unsent uint32) {
	st := &f.s[d]
	l := &st.line
	for i := int32(0); i < l.nneg; i++ {
		n := l.text.neg[i]
		if !seqLE(unsent, n.seq) && !st.heldCovers(n.seq) ||
			!st.hist.add(&e.pools, n.seq, 3, nil, st.acked, st.ackSeen && f.s[1-d].nheld == 0) {
			e.stats.TelnetRelayed++
			continue
		}
		e.stats.TelnetRefused++
		e.noteLength(f, 3, 0)
		var ans byte
		switch n.cmd {
		case will:
			ans = dont
		case do:
			ans = wont
		default:
			continue
		}
		ot := &f.s[1-d]
		if ot.nrefuse+3 > maxRefuse {
			e.stats.TelnetRelayed++
			continue
		}
		ot.refuse[ot.nrefuse], ot.refuse[ot.nrefuse+1], ot.refuse[ot.nrefuse+2] = iac, ans, n.opt
		ot.nrefuse += 3
	}
	l.nneg = 0
}

// heldCovers reports whether the byte at seq is in a held segment (not
// sent yet).
func (st *stream) heldCovers(seq uint32) bool {
	for i := 0; i < st.nheld; i++ {
		h := &st.held[i]
		if seqLE(h.seq, seq) && seqLT(seq, h.end) {
			return true
		}
	}
	return false
}

// refuseAtLineEnd sends the refusals waiting for direction d after the
// line that just ended at lineEnd (its line feed becomes the line feed and
// the refusals), unless a rewrite of that line already carried them.
func (e *Engine) refuseAtLineEnd(f *flow, d Dir, lineEnd uint32) {
	st := &f.s[d]
	if end, ok := st.hist.lastEnd(); ok && seqLT(lineEnd-1, end) {
		return // the line's own rewrite reaches its end: it could not take them
	}
	b := append(e.lineOut[:0], '\n')
	b = append(b, st.refuse[:st.nrefuse]...)
	e.lineOut = b
	if !st.hist.add(&e.pools, lineEnd-1, 1, b, st.acked, st.ackSeen && f.s[1-d].nheld == 0) {
		e.stats.RegionsFull++
		return
	}
	e.noteLength(f, 1, len(b))
	st.nrefuse = 0
}
