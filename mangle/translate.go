package mangle

import (
	"net/netip"
)

// The command and reply translations of docs/PROTOCOL.md: RFC 6384 for 64
// sessions (IPv6 client, IPv4 server) and draft-tsou-behave-ftp46 for 46
// sessions (IPv4 client, IPv6 server).

// localReply is a reply the ALG gives itself, by substituting NOOP for the
// command and rewriting the server's reply to that NOOP (RFC 6384
// section 12), so the ALG never makes a packet of its own.
type localReply uint8

const (
	localNone      localReply = iota
	localEPSVProto            // RFC 6384 section 6: EPSV <n> with n other than 2
	localEPSVAll              // RFC 6384 section 6: EPSV ALL
	localAlgsBoth             // RFC 6384 section 11: EPSV and EPRT translated
	localAlgsEPSV             // RFC 6384 section 11: only EPSV translated
	localAlgsOff              // RFC 6384 section 11: translation disabled
	localAlgsBad              // RFC 6384 section 11: ALGS with no or an unknown argument
	localRefused              // RFC 6384 section 12: the server did not answer NOOP with 2xx
)

var localTexts = [...]struct{ code, text string }{
	localEPSVProto: {"522", "Network protocol not supported, use (2)"},
	localEPSVAll:   {"504", "Command not implemented for that parameter"},
	localAlgsBoth:  {"216", "EPSVEPRT translation of EPSV and EPRT is enabled"},
	localAlgsEPSV:  {"216", "EPSV translation of EPSV is enabled, EPRT is not translated"},
	localAlgsOff:   {"216", "NONE translation is disabled"},
	localAlgsBad:   {"504", "Command not implemented for that parameter"},
	localRefused:   {"421", "Service not available, closing control connection (ALG: the server refused NOOP)"},
}

const (
	text425NoMap    = "Can't open data connection (ALG: no mapping)"
	text425Strict   = "Can't open data connection (ALG: server announced another address)"
	text425Unparsed = "Can't open data connection (ALG: reply not understood)"
)

// AlertNoopRefused is the Alert of a control connection torn down because
// the server answered a substituted NOOP with something other than 2xx
// (RFC 6384 section 12).
const AlertNoopRefused = "the server did not accept a substituted NOOP: control connection torn down (RFC 6384 section 12)"

var crlf = []byte("\r\n")

// verbs as splitCommand returns them.
var (
	vPASV = [4]byte{'P', 'A', 'S', 'V'}
	vEPSV = [4]byte{'E', 'P', 'S', 'V'}
	vPORT = [4]byte{'P', 'O', 'R', 'T'}
	vEPRT = [4]byte{'E', 'P', 'R', 'T'}
	vLPRT = [4]byte{'L', 'P', 'R', 'T'}
	vLPSV = [4]byte{'L', 'P', 'S', 'V'}
	vALGS = [4]byte{'A', 'L', 'G', 'S'}
	vAUTH = [4]byte{'A', 'U', 'T', 'H'}
	vREIN = [4]byte{'R', 'E', 'I', 'N'}
)

// candidates46 and candidates64 are the verbs whose lines the engine may
// rewrite; a segment ending inside such a line is held.
var (
	candidates46      = [][4]byte{vPASV, vEPSV, vPORT, vEPRT}
	candidates64      = [][4]byte{vEPSV, vEPRT, vLPRT, vLPSV, vALGS}
	candidates64Algs  = [][4]byte{vALGS}
	candidatesNothing = [][4]byte{}
	candidatesAll     = [][4]byte{{}} // every line (see wantsHold)
)

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// equalFold reports whether b equals the upper-case ASCII s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if upper(b[i]) != s[i] {
			return false
		}
	}
	return true
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func (f *flow) candidates() [][4]byte {
	switch {
	case !f.active() || f.authPending:
		return candidatesNothing
	case f.teardown:
		return candidatesAll
	case f.sess.Kind == Kind46:
		return candidates46
	case f.disabled:
		return candidates64Algs
	}
	return candidates64
}

// wantsHold reports whether a segment that ends inside the current line
// of direction d must wait for the rest of the line.
func (f *flow) wantsHold(d Dir) bool {
	l := &f.s[d].line
	if !l.started || l.skip || l.frozen || !f.active() {
		return false
	}
	if l.tn == tnIAC || l.tn == tnOption {
		return true // inside a Telnet negotiation, which may be removed
	}
	if l.overlong || l.telnet {
		return false
	}
	if d == ToClient {
		c, ok := f.head()
		return ok && c.kind.translated()
	}
	t := l.bytes()
	for _, v := range f.candidates() {
		if v == ([4]byte{}) {
			return true
		}
		n := min(len(t), 4)
		match := true
		for i := 0; i < n; i++ {
			if upper(t[i]) != v[i] {
				match = false
				break
			}
		}
		// A verb alone may still be waiting for its LF after the CR.
		if match && (len(t) <= 4 || t[4] == ' ' || len(t) == 5 && t[4] == '\r') {
			return true
		}
	}
	return false
}

// replaceLine makes the current line of st (complete, ending at lineEnd) be
// sent as text followed by CRLF. Leading Telnet sequences stay.
func (e *Engine) replaceLine(f *flow, d Dir, lineEnd uint32, text []byte) bool {
	st := &f.s[d]
	l := &st.line
	if !l.clean() {
		e.stats.BadSyntax++
		return false
	}
	if len(text)+2 > maxRegionBytes {
		return false
	}
	nb := append(e.lineOut[:0], text...)
	nb = append(nb, crlf...)
	refused := false
	if st.nrefuse > 0 && len(nb)+st.nrefuse <= maxRegionBytes {
		// Telnet refusals waiting for this direction ride behind the line.
		nb = append(nb, st.refuse[:st.nrefuse]...)
		refused = true
	}
	e.lineOut = nb
	if !st.hist.add(&e.pools, l.textStart, lineEnd-l.textStart, nb, st.acked, st.ackSeen && f.s[1-d].nheld == 0) {
		e.stats.RegionsFull++
		return false
	}
	if refused {
		st.nrefuse = 0
	}
	e.noteLength(f, lineEnd-l.textStart, len(nb))
	e.record(f, d, l.bytes(), text)
	return true
}

// replaceSpan replaces text bytes [i, j) of the current (complete) line.
func (e *Engine) replaceSpan(f *flow, d Dir, i, j int, b []byte, note bool) bool {
	st := &f.s[d]
	l := &st.line
	if !l.clean() || i < 0 || j > l.n || i > j {
		return false
	}
	if !st.hist.add(&e.pools, l.textStart+uint32(i), uint32(j-i), b, st.acked, st.ackSeen && f.s[1-d].nheld == 0) {
		e.stats.RegionsFull++
		return false
	}
	e.noteLength(f, uint32(j-i), len(b))
	if note {
		t := l.bytes()
		after := append(e.lineOut[:0], t[:i]...)
		after = append(after, b...)
		after = append(after, t[j:]...)
		e.lineOut = after
		e.record(f, d, t, after)
	}
	return true
}

// noteLength tells a LengthWatcher mapper, once per flow, that a rewrite
// changed a length.
func (e *Engine) noteLength(f *flow, olen uint32, nlen int) {
	if e.watcher == nil || f.lenChanged || olen == uint32(nlen) || !f.heard() {
		// Not before the server spoke (flow.heard): a flood's garbage
		// must not cost a conntrack update per flow; a real connection's
		// next length change after its greeting tells the watcher.
		return
	}
	f.lenChanged = true
	e.watcher.LengthChanged(f.key.Client(), f.key.Server())
}

func (e *Engine) record(f *flow, d Dir, before, after []byte) {
	e.stats.Rewrites++
	start := len(e.scratch)
	e.scratch = append(e.scratch, before...)
	mid := len(e.scratch)
	e.scratch = append(e.scratch, after...)
	e.res.Rewrites = append(e.res.Rewrites, Rewrite{
		Flow: f.key, Kind: f.sess.Kind, Dir: d,
		Before: e.scratch[start:mid:mid], After: e.scratch[mid:],
	})
}

// substitute sends NOOP instead of the command and queues the local reply.
func (e *Engine) substitute(f *flow, lineEnd uint32, r localReply) {
	if e.replaceLine(f, ToServer, lineEnd, []byte("NOOP")) {
		e.stats.LocalReplies++
		f.push(pendingCmd{kind: cmdLocal, local: r})
		return
	}
	f.push(pendingCmd{kind: cmdOther})
}

// mapData asks the Mapper for the far side of a data channel of f.
// long says the exchange is LPSV's or LPRT's (DataRequest.Long).
func (e *Engine) mapData(f *flow, mode DataMode, target netip.AddrPort, long bool) (netip.AddrPort, error) {
	return e.cfg.Mapper.MapData(DataRequest{Session: f.sess, Client: f.key.Client(), Server: f.key.Server(), Mode: mode, Target: target, Long: long})
}

// commandLine handles a complete line from the client.
func (e *Engine) commandLine(f *flow, lineEnd uint32) {
	l := &f.s[ToServer].line
	if f.teardown {
		// RFC 6384 section 12: the client was told 421; whatever it still
		// sends becomes QUIT, so that the server closes its side too.
		if l.n > 0 && !equalFold(l.bytes(), "QUIT") {
			e.replaceLine(f, ToServer, lineEnd, []byte("QUIT"))
		}
		f.push(pendingCmd{kind: cmdOther})
		return
	}
	verb, arg, ok := splitCommand(l.bytes())
	if !ok {
		if l.n > 0 {
			f.push(pendingCmd{kind: cmdOther})
		}
		return
	}
	if f.authPending {
		// RFC 6384 section 5: from AUTH on, nothing is translated until
		// its reply says whether the channel is now protected.
		f.push(pendingCmd{kind: cmdOther})
		return
	}
	switch verb {
	case vAUTH:
		f.authPending = true
		f.push(pendingCmd{kind: cmdAUTH})
		return
	case vREIN:
		// REIN resets the session (RFC 959 section 4.1.1), and with it the
		// ALG's settings (RFC 6384 section 11).
		f.disabled = false
		f.push(pendingCmd{kind: cmdOther})
		return
	}
	if f.sess.Kind == Kind46 {
		e.command46(f, lineEnd, verb, arg)
	} else {
		e.command64(f, lineEnd, verb, arg)
	}
}

// command46: draft-tsou-behave-ftp46 sections 4 and 5.
func (e *Engine) command46(f *flow, lineEnd uint32, verb [4]byte, arg []byte) {
	kind := cmdOther
	switch verb {
	case vPASV:
		if e.replaceLine(f, ToServer, lineEnd, []byte("EPSV 2")) {
			kind = cmdPASV46
		}
	case vEPSV:
		a := trimSpace(arg)
		switch {
		case len(a) == 0:
			kind = cmdEPSV46
		case equalFold(a, "1"):
			if e.replaceLine(f, ToServer, lineEnd, []byte("EPSV 2")) {
				kind = cmdEPSV46
			}
		case equalFold(a, "2"):
			kind = cmdEPSV46
		}
	case vPORT:
		addr, port, ok := parsePORT(arg)
		if !ok {
			e.stats.BadSyntax++
			break
		}
		e.active46(f, lineEnd, netip.AddrPortFrom(netip.AddrFrom4(addr), port))
	case vEPRT:
		ap, ok := parseEPRT(trimSpace(arg))
		if !ok {
			e.stats.BadSyntax++
			break
		}
		if ap.Addr().Is4() {
			e.active46(f, lineEnd, ap)
		}
	}
	f.push(pendingCmd{kind: kind})
}

// active46 turns PORT/EPRT |1| naming the client itself into EPRT |2|.
func (e *Engine) active46(f *flow, lineEnd uint32, ap netip.AddrPort) {
	if ap.Addr() != f.sess.Client4 {
		e.stats.Bounce++ // never translate a bounce (RFC 2577)
		return
	}
	to, err := e.mapData(f, Active46, ap, false)
	if err != nil || !to.Addr().Is6() || to.Port() == 0 {
		e.stats.MapFailed++
		return
	}
	e.replaceLine(f, ToServer, lineEnd, appendEPRT(e.textBuf[:0], to))
}

// canActive64 reports whether an EPRT of the 64 session f is translated:
// the client's IPv6 address must be known, to tell the client's own EPRT
// from a third party's (RFC 6384 section 7), and the Mapper able to map it.
func (e *Engine) canActive64(f *flow) bool {
	if !f.sess.Client6.IsValid() {
		return false
	}
	return e.active == nil || e.active.CanMapActive64(f.sess)
}

// algsToken is the local reply carrying the 216 token that is true for
// the session (RFC 6384 section 11).
func (e *Engine) algsToken(f *flow) localReply {
	switch {
	case f.disabled:
		return localAlgsOff
	case e.canActive64(f):
		return localAlgsBoth
	}
	return localAlgsEPSV
}

// epsvProto reads the net-prt argument of EPSV (RFC 2428 section 3): ok
// is false when a is not a number.
func epsvProto(a []byte) (n uint32, ok bool) {
	if len(a) == 0 || len(a) > 5 {
		return 0, false
	}
	for _, c := range a {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + uint32(c-'0')
	}
	return n, true
}

// command64: RFC 6384 sections 5 to 7 and 11.
func (e *Engine) command64(f *flow, lineEnd uint32, verb [4]byte, arg []byte) {
	if verb == vALGS {
		a := trimSpace(arg)
		switch {
		case equalFold(a, "STATUS64"):
		case equalFold(a, "ENABLE64"):
			f.disabled = false
		case equalFold(a, "DISABLE64"):
			f.disabled = true
		default:
			e.substitute(f, lineEnd, localAlgsBad)
			return
		}
		e.substitute(f, lineEnd, e.algsToken(f))
		return
	}
	if f.disabled {
		f.push(pendingCmd{kind: cmdOther})
		return
	}
	kind := cmdOther
	switch verb {
	case vEPSV:
		a := trimSpace(arg)
		if len(a) == 0 {
			if e.replaceLine(f, ToServer, lineEnd, []byte("PASV")) {
				kind = cmdEPSV64
			}
			break
		}
		if equalFold(a, "ALL") {
			// Section 6: answered 504 by the ALG; nothing else changes.
			e.substitute(f, lineEnd, localEPSVAll)
			return
		}
		n, ok := epsvProto(a)
		switch {
		case !ok:
			e.stats.BadSyntax++ // the server answers it
		case n == 2:
			if e.replaceLine(f, ToServer, lineEnd, []byte("PASV")) {
				kind = cmdEPSV64
			}
		default:
			// Section 6: any protocol but IPv6 is refused by the ALG.
			e.substitute(f, lineEnd, localEPSVProto)
			return
		}
	case vLPSV:
		if e.replaceLine(f, ToServer, lineEnd, []byte("PASV")) {
			kind = cmdLPSV64
		}
	case vEPRT:
		ap, ok := parseEPRT(trimSpace(arg))
		if !ok {
			e.stats.BadSyntax++
			break
		}
		if ap.Addr().Is6() {
			e.active64(f, lineEnd, ap, false)
		}
	case vLPRT:
		ap, ok := parseLPRT(trimSpace(arg))
		if !ok {
			e.stats.BadSyntax++
			break
		}
		if ap.Addr().Is6() {
			e.active64(f, lineEnd, ap, true)
		}
	}
	f.push(pendingCmd{kind: kind})
}

// active64 turns EPRT |2| / LPRT (long) naming the client itself into PORT C4'.
func (e *Engine) active64(f *flow, lineEnd uint32, ap netip.AddrPort, long bool) {
	if !e.canActive64(f) {
		// Section 7: an EPRT that cannot be checked against the client's
		// address (a dynamic-pool client seen from the IPv4 leg), or that
		// the translator cannot map, passes unchanged.
		e.stats.Unverified++
		return
	}
	if ap.Addr() != f.sess.Client6 {
		e.stats.Bounce++
		return
	}
	to, err := e.mapData(f, Active64, ap, long)
	if err != nil || !to.Addr().Is4() || to.Port() == 0 || to.Addr() != f.sess.Client4 {
		e.stats.MapFailed++
		return
	}
	e.replaceLine(f, ToServer, lineEnd, appendPORT(e.textBuf[:0], to))
}
