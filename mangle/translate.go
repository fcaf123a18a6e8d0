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
	localNone         localReply = iota
	localEPSV1                   // RFC 6384 section 6 / RFC 2428 section 3
	localEPSVAll                 // RFC 2428 section 4
	localAlgsOn                  // RFC 6384 section 11: ALGS STATUS64 / ENABLE64
	localAlgsOff                 // ALGS STATUS64 / DISABLE64
	localAlgsBad                 // ALGS with an unknown argument
	localAfterEPSVAll            // RFC 2428 section 4: after EPSV ALL, refuse other data commands
)

var localTexts = [...]struct{ code, text string }{
	localEPSV1:        {"522", "Network protocol not supported, use (2)"},
	localEPSVAll:      {"200", "EPSV ALL command successful."},
	localAlgsOn:       {"216", "EPSVEPRT translation of EPSV and EPRT is enabled"},
	localAlgsOff:      {"216", "NONE translation is disabled"},
	localAlgsBad:      {"501", "Syntax error in ALGS arguments"},
	localAfterEPSVAll: {"503", "Only EPSV is allowed after EPSV ALL"},
}

const (
	text425NoMap  = "Can't open data connection (ALG: no mapping)"
	text425Strict = "Can't open data connection (ALG: server announced another address)"
)

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
	candidates64All   = [][4]byte{vEPSV, vEPRT, vLPRT, vLPSV, vALGS, vPASV, vPORT}
	candidates64Algs  = [][4]byte{vALGS}
	candidatesNothing = [][4]byte{}
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
	case !f.active():
		return candidatesNothing
	case f.sess.Kind == Kind46:
		return candidates46
	case f.disabled:
		return candidates64Algs
	case f.epsvAll:
		return candidates64All
	}
	return candidates64
}

// wantsHold reports whether a segment that ends inside the current line
// of direction d must wait for the rest of the line.
func (f *flow) wantsHold(d Dir) bool {
	l := &f.s[d].line
	if !l.started || l.skip || l.frozen || l.overlong || l.telnet || !f.active() {
		return false
	}
	if d == ToClient {
		c, ok := f.head()
		return ok && c.kind.translated()
	}
	t := l.bytes()
	for _, v := range f.candidates() {
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
	e.lineOut = nb
	if !st.hist.add(l.textStart, lineEnd-l.textStart, nb, st.acked, st.ackSeen && f.s[1-d].nheld == 0) {
		e.stats.RegionsFull++
		return false
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
	if !st.hist.add(l.textStart+uint32(i), uint32(j-i), b, st.acked, st.ackSeen && f.s[1-d].nheld == 0) {
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
	if e.watcher == nil || f.lenChanged || olen == uint32(nlen) {
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

// commandLine handles a complete line from the client.
func (e *Engine) commandLine(f *flow, lineEnd uint32) {
	l := &f.s[ToServer].line
	verb, arg, ok := splitCommand(l.bytes())
	if !ok {
		if l.n > 0 {
			f.push(pendingCmd{kind: cmdOther})
		}
		return
	}
	switch verb {
	case vAUTH:
		f.push(pendingCmd{kind: cmdAUTH})
		return
	case vREIN:
		// REIN resets the session (RFC 959 section 4.1.1), and with it the
		// ALG's settings (RFC 6384 section 11).
		f.disabled, f.epsvAll = false, false
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
	to, err := e.cfg.Mapper.MapData(DataRequest{Session: f.sess, Client: f.key.Client(), Server: f.key.Server(), Mode: Active46, Target: ap})
	if err != nil || !to.Addr().Is6() || to.Port() == 0 {
		e.stats.MapFailed++
		return
	}
	e.replaceLine(f, ToServer, lineEnd, appendEPRT(e.textBuf[:0], to))
}

// command64: RFC 6384 sections 6, 7 and 11 (docs/PROTOCOL.md P64-n).
func (e *Engine) command64(f *flow, lineEnd uint32, verb [4]byte, arg []byte) {
	if verb == vALGS {
		a := trimSpace(arg)
		r := localAlgsBad
		switch {
		case equalFold(a, "STATUS64"):
			r = localAlgsOn
			if f.disabled {
				r = localAlgsOff
			}
		case equalFold(a, "ENABLE64"):
			f.disabled = false
			r = localAlgsOn
		case equalFold(a, "DISABLE64"):
			f.disabled = true
			r = localAlgsOff
		}
		e.substitute(f, lineEnd, r)
		return
	}
	if f.disabled {
		f.push(pendingCmd{kind: cmdOther})
		return
	}
	if f.epsvAll {
		switch verb {
		case vPASV, vPORT, vEPRT, vLPRT, vLPSV:
			e.substitute(f, lineEnd, localAfterEPSVAll)
			return
		}
	}
	kind := cmdOther
	switch verb {
	case vEPSV:
		a := trimSpace(arg)
		switch {
		case len(a) == 0 || equalFold(a, "2"):
			if e.replaceLine(f, ToServer, lineEnd, []byte("PASV")) {
				kind = cmdEPSV64
			}
		case equalFold(a, "1"):
			e.substitute(f, lineEnd, localEPSV1)
			return
		case equalFold(a, "ALL"):
			f.epsvAll = true
			e.substitute(f, lineEnd, localEPSVAll)
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
			e.active64(f, lineEnd, ap)
		}
	case vLPRT:
		ap, ok := parseLPRT(trimSpace(arg))
		if !ok {
			e.stats.BadSyntax++
			break
		}
		if ap.Addr().Is6() {
			e.active64(f, lineEnd, ap)
		}
	}
	f.push(pendingCmd{kind: kind})
}

// active64 turns EPRT |2| / LPRT naming the client itself into PORT C4'.
func (e *Engine) active64(f *flow, lineEnd uint32, ap netip.AddrPort) {
	// When the client's IPv6 address is unknown on this leg (a dynamic
	// pool seen from the IPv4 side) the engine cannot check it; the PORT
	// it sends still names the client's own IPv4 address, and a Mapper
	// that creates state toward the target checks it itself.
	if c6 := f.sess.Client6; c6.IsValid() && ap.Addr() != c6 {
		e.stats.Bounce++
		return
	}
	to, err := e.cfg.Mapper.MapData(DataRequest{Session: f.sess, Client: f.key.Client(), Server: f.key.Server(), Mode: Active64, Target: ap})
	if err != nil || !to.Addr().Is4() || to.Port() == 0 || to.Addr() != f.sess.Client4 {
		e.stats.MapFailed++
		return
	}
	e.replaceLine(f, ToServer, lineEnd, appendPORT(e.textBuf[:0], to))
}

// replyLine handles a complete line from the server.
func (e *Engine) replyLine(f *flow, lineEnd uint32) {
	l := &f.s[ToClient].line
	t := l.bytes()
	r := &f.rep
	final := false
	if !r.active {
		code, sep, ok := parseReplyCode(t)
		if !ok {
			return // text between replies: not ours to judge
		}
		*r = replyState{active: true, code: code, first: true}
		copy(r.codeText[:], t[:3])
		final = sep == ' '
	} else {
		r.first = false
		final = len(t) >= 4 && t[0] == r.codeText[0] && t[1] == r.codeText[1] && t[2] == r.codeText[2] && t[3] == ' '
	}
	c, ok := f.head()
	if !ok {
		if final {
			r.active = false
			e.stats.Desync++
		}
		return
	}
	prelim := r.code < 200
	if !prelim && c.kind.translated() {
		e.translateReply(f, c, lineEnd)
	}
	if !final {
		return
	}
	r.active = false
	if prelim {
		return // 1yz: the command is not complete yet
	}
	f.pop()
	if c.kind == cmdAUTH && r.code < 400 {
		// RFC 6384 section 5 (and RFC 4217): a successful AUTH makes
		// the control channel opaque; only sequence numbers are kept.
		f.transparent = true
		e.stats.Transparent++
	}
}

// translateReply rewrites one line of the reply to command c.
func (e *Engine) translateReply(f *flow, c pendingCmd, lineEnd uint32) {
	l := &f.s[ToClient].line
	t := l.bytes()
	r := &f.rep
	sep := byte(' ')
	if len(t) > 3 && t[3] == '-' {
		sep = '-'
	}
	isCodeLine := len(t) >= 4 && t[0] == r.codeText[0] && t[1] == r.codeText[1] && t[2] == r.codeText[2] && (t[3] == ' ' || t[3] == '-')

	switch c.kind {
	case cmdLocal:
		lt := localTexts[c.local]
		if r.first {
			setCode(r, lt.code)
			nt := append(e.textBuf[:0], lt.code...)
			nt = append(nt, sep)
			nt = append(nt, lt.text...)
			e.replaceLine(f, ToClient, lineEnd, nt)
			return
		}
	case cmdPASV46:
		if r.code != 229 {
			return
		}
		if r.first {
			setCode(r, "227")
		}
		if !r.addrDone {
			if p6, _, _, ok := parse229(t); ok {
				r.addrDone = true
				to, err := e.cfg.Mapper.MapData(DataRequest{Session: f.sess, Client: f.key.Client(), Server: f.key.Server(), Mode: Passive46,
					Target: netip.AddrPortFrom(f.sess.Server6, p6)})
				if err != nil || !to.Addr().Is4() || to.Port() == 0 {
					e.stats.MapFailed++
					e.fail425(f, lineEnd, sep, text425NoMap)
					return
				}
				// The draft: the address is the one the client used for
				// the control connection, whatever the mapper says.
				to = netip.AddrPortFrom(f.sess.Server4, to.Port())
				e.replaceLine(f, ToClient, lineEnd, append227(e.textBuf[:0], "227", sep, to))
				return
			}
			if e.unparsed(r, sep) {
				return
			}
		}
	case cmdEPSV46:
		if r.code != 229 || r.addrDone {
			return
		}
		p6, i, j, ok := parse229(t)
		if !ok {
			e.unparsed(r, sep)
			return
		}
		r.addrDone = true
		to, err := e.cfg.Mapper.MapData(DataRequest{Session: f.sess, Client: f.key.Client(), Server: f.key.Server(), Mode: Passive46,
			Target: netip.AddrPortFrom(f.sess.Server6, p6)})
		if err != nil || to.Port() == 0 {
			e.stats.MapFailed++
			e.fail425(f, lineEnd, sep, text425NoMap)
			return
		}
		if to.Port() != p6 {
			e.replaceSpan(f, ToClient, i, j, appendUint(e.textBuf[:0], uint64(to.Port())), true)
		}
		return
	case cmdEPSV64, cmdLPSV64:
		if r.code != 227 {
			return
		}
		if r.first {
			if c.kind == cmdEPSV64 {
				setCode(r, "229")
			} else {
				setCode(r, "228")
			}
		}
		if !r.addrDone {
			if a4, p, _, _, ok := parse227(t); ok {
				r.addrDone = true
				if netip.AddrFrom4(a4) != f.sess.Server4 {
					// RFC 6384 section 6: the data connection goes to
					// the server's address whatever the 227 says.
					e.stats.AddrMismatch++
					if e.cfg.Strict {
						e.fail425(f, lineEnd, sep, text425Strict)
						return
					}
				}
				to, err := e.cfg.Mapper.MapData(DataRequest{Session: f.sess, Client: f.key.Client(), Server: f.key.Server(), Mode: Passive64,
					Target: netip.AddrPortFrom(f.sess.Server4, p)})
				if err != nil || to.Port() == 0 {
					e.stats.MapFailed++
					e.fail425(f, lineEnd, sep, text425NoMap)
					return
				}
				var nt []byte
				if c.kind == cmdEPSV64 {
					nt = append229(e.textBuf[:0], sep, to.Port())
				} else {
					nt = append228(e.textBuf[:0], sep, netip.AddrPortFrom(f.sess.Server6, to.Port()))
				}
				e.replaceLine(f, ToClient, lineEnd, nt)
				return
			}
			if e.unparsed(r, sep) {
				return
			}
		}
	}
	// Any other line of a reply whose code changes gets the new code.
	if r.recode && isCodeLine {
		e.replaceSpan(f, ToClient, 0, 3, r.newCode[:], true)
	}
}

// unparsed handles a line of a translated reply that carries no address
// it can parse. A single-line reply then passes unchanged (and counted);
// the closing line of a multi-line reply that never carried one is
// counted, and keeps the new code so that all its lines agree. It reports
// whether the line must be left alone.
func (e *Engine) unparsed(r *replyState, sep byte) bool {
	if sep != ' ' {
		return false
	}
	e.stats.BadSyntax++
	if r.first {
		r.recode = false
		return true
	}
	return false
}

func setCode(r *replyState, code string) {
	copy(r.newCode[:], code)
	r.recode = r.newCode != r.codeText
}

// fail425 answers the command with 425 instead of the server's reply line.
func (e *Engine) fail425(f *flow, lineEnd uint32, sep byte, text string) {
	setCode(&f.rep, "425")
	nt := append(e.textBuf[:0], "425"...)
	nt = append(nt, sep)
	nt = append(nt, text...)
	e.replaceLine(f, ToClient, lineEnd, nt)
}
