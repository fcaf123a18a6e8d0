package mangle

import (
	"net/netip"
)

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
	r.final = final
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
	if c.kind == cmdAUTH {
		f.authPending = false
		if r.code < 400 {
			// RFC 6384 section 5 (and RFC 4217): a successful AUTH makes
			// the control channel opaque; only sequence numbers are kept.
			f.transparent = true
			e.stats.Transparent++
		}
	}
}

// replyLineKind says what a line of a reply is, for translateReply.
type replyLineKind struct {
	sep      byte // ' ' or '-' on a line that opens with the reply's code
	codeLine bool // the line opens with the reply's code
}

// translateReply rewrites one line of the reply to command c.
func (e *Engine) translateReply(f *flow, c pendingCmd, lineEnd uint32) {
	t := f.s[ToClient].line.bytes()
	r := &f.rep
	lk := replyLineKind{sep: ' '}
	if len(t) > 3 && t[3] == '-' {
		lk.sep = '-'
	}
	lk.codeLine = len(t) >= 4 && t[0] == r.codeText[0] && t[1] == r.codeText[1] && t[2] == r.codeText[2] && (t[3] == ' ' || t[3] == '-')

	done := false
	switch c.kind {
	case cmdLocal:
		done = e.localReplyLine(f, c, lineEnd, lk)
	case cmdPASV46:
		done = e.reply229to227(f, lineEnd, lk)
	case cmdEPSV46:
		done = e.reply229Port(f, lineEnd, lk)
	case cmdEPSV64, cmdLPSV64:
		done = e.reply227(f, c, lineEnd, lk)
	}
	// Any other line of a reply whose code changes gets the new code.
	if !done && r.recode && lk.codeLine {
		e.replaceSpan(f, ToClient, 0, 3, r.newCode[:], true)
	}
}

// localReplyLine turns the server's reply to a substituted NOOP into the
// ALG's own. RFC 6384 section 12: a NOOP answered with anything but 2xx is
// never turned into the ALG's normal answer; the client gets 421 and the
// connection is torn down (see teardown in flow.go).
func (e *Engine) localReplyLine(f *flow, c pendingCmd, lineEnd uint32, lk replyLineKind) bool {
	r := &f.rep
	if !r.first {
		return false
	}
	lr := c.local
	if r.code/100 != 2 {
		lr = localRefused
		f.teardown = true
		e.stats.NoopRefused++
		e.res.Alerts = append(e.res.Alerts, Alert{Flow: f.key, Kind: f.sess.Kind, Text: AlertNoopRefused})
	}
	lt := localTexts[lr]
	setCode(r, lt.code)
	nt := append(e.textBuf[:0], lt.code...)
	nt = append(nt, lk.sep)
	nt = append(nt, lt.text...)
	e.replaceLine(f, ToClient, lineEnd, nt)
	return true
}

// reply229to227 translates a 229 reply to a PASV sent as EPSV 2 into a
// 227 (draft-tsou-behave-ftp46 section 4).
func (e *Engine) reply229to227(f *flow, lineEnd uint32, lk replyLineKind) bool {
	r := &f.rep
	if r.code != 229 {
		return false
	}
	if r.first {
		setCode(r, "227")
	}
	if r.addrDone {
		return false
	}
	t := f.s[ToClient].line.bytes()
	p6, i, j, ok := parse229(t)
	if !ok {
		return e.unparsed(f, lineEnd, lk)
	}
	r.addrDone = true
	to, err := e.mapData(f, Passive46, netip.AddrPortFrom(f.sess.Server6, p6), false)
	if err != nil || !to.Addr().Is4() || to.Port() == 0 {
		e.stats.MapFailed++
		e.fail425(f, lineEnd, lk.sep, text425NoMap)
		return true
	}
	// The draft: the address is the one the client used for the control
	// connection, whatever the mapper says.
	to = netip.AddrPortFrom(f.sess.Server4, to.Port())
	if lk.codeLine {
		e.replaceLine(f, ToClient, lineEnd, append227(e.textBuf[:0], "227", lk.sep, to))
		return true
	}
	// A continuation line: only the "(|||p|)" becomes "(h1,...,p2)".
	nt := append(e.textBuf[:0], '(')
	nt = appendHostPort(nt, to.Addr().As4(), to.Port())
	nt = append(nt, ')')
	e.replaceAddress(f, lineEnd, i-4, j+2, nt)
	return true
}

// reply229Port rewrites the port of a 229 reply to EPSV where the mapping
// changes it (draft-tsou-behave-ftp46 section 5).
func (e *Engine) reply229Port(f *flow, lineEnd uint32, lk replyLineKind) bool {
	r := &f.rep
	if r.code != 229 || r.addrDone {
		return false
	}
	p6, i, j, ok := parse229(f.s[ToClient].line.bytes())
	if !ok {
		// A 229 to an EPSV client: usable as it is, counted.
		if lk.sep == ' ' {
			e.stats.BadSyntax++
		}
		return false
	}
	r.addrDone = true
	to, err := e.mapData(f, Passive46, netip.AddrPortFrom(f.sess.Server6, p6), false)
	if err != nil || to.Port() == 0 {
		e.stats.MapFailed++
		e.fail425(f, lineEnd, lk.sep, text425NoMap)
		return true
	}
	if to.Port() != p6 {
		e.replaceSpan(f, ToClient, i, j, appendUint(e.textBuf[:0], uint64(to.Port())), true)
	}
	return false
}

// reply227 translates a 227 reply to EPSV or LPSV sent as PASV into a 229
// or 228 (RFC 6384 section 6; RFC 1639).
func (e *Engine) reply227(f *flow, c pendingCmd, lineEnd uint32, lk replyLineKind) bool {
	r := &f.rep
	if r.code != 227 {
		return false
	}
	if r.first {
		if c.kind == cmdEPSV64 {
			setCode(r, "229")
		} else {
			setCode(r, "228")
		}
	}
	if r.addrDone {
		return false
	}
	t := f.s[ToClient].line.bytes()
	a4, p, i, j, ok := parse227(t)
	if !ok {
		return e.unparsed(f, lineEnd, lk)
	}
	r.addrDone = true
	if netip.AddrFrom4(a4) != f.sess.Server4 {
		// RFC 6384 section 6: the data connection goes to the server's
		// address whatever the 227 says.
		e.stats.AddrMismatch++
		if e.cfg.Strict {
			e.fail425(f, lineEnd, lk.sep, text425Strict)
			return true
		}
	}
	to, err := e.mapData(f, Passive64, netip.AddrPortFrom(f.sess.Server4, p), c.kind == cmdLPSV64)
	if err != nil || to.Port() == 0 {
		e.stats.MapFailed++
		e.fail425(f, lineEnd, lk.sep, text425NoMap)
		return true
	}
	s6 := netip.AddrPortFrom(f.sess.Server6, to.Port())
	if lk.codeLine {
		var nt []byte
		if c.kind == cmdEPSV64 {
			nt = append229(e.textBuf[:0], lk.sep, to.Port())
		} else {
			nt = append228(e.textBuf[:0], lk.sep, s6)
		}
		e.replaceLine(f, ToClient, lineEnd, nt)
		return true
	}
	// A continuation line: only the address changes form, with its
	// parentheses.
	if i > 0 && t[i-1] == '(' && j < len(t) && t[j] == ')' {
		i, j = i-1, j+1
	}
	nt := append(e.textBuf[:0], '(')
	if c.kind == cmdEPSV64 {
		nt = append(nt, "|||"...)
		nt = appendUint(nt, uint64(to.Port()))
		nt = append(nt, '|')
	} else {
		nt = appendLongHostPort(nt, s6)
	}
	nt = append(nt, ')')
	e.replaceAddress(f, lineEnd, i, j, nt)
	return true
}

// replaceAddress rewrites a continuation line of a multi-line reply (one
// that does not open with the reply's code): text bytes [i, j) become
// addr. The line stays a continuation line, so the reply still ends where
// the server ended it.
func (e *Engine) replaceAddress(f *flow, lineEnd uint32, i, j int, addr []byte) {
	t := f.s[ToClient].line.bytes()
	// replaceLine builds its line in lineOut: build this one in textBuf,
	// after the address already there.
	n := len(addr)
	nt := append(addr, t[:i]...)
	nt = append(nt, addr[:n]...)
	nt = append(nt, t[j:]...)
	e.replaceLine(f, ToClient, lineEnd, nt[n:])
}

// unparsed handles a line of a 227/229 reply that carries no address it
// can parse, to a command whose client cannot use that reply as it is. A
// single-line reply becomes 425 (docs/PROTOCOL.md PB-11). The opening and
// middle lines of a multi-line reply pass with the new code: the address
// may come later. Its closing line, when no line carried an address, is
// counted and keeps the new code, since the lines before it already went
// out with that code. It reports whether it rewrote the line.
func (e *Engine) unparsed(f *flow, lineEnd uint32, lk replyLineKind) bool {
	r := &f.rep
	if !r.final {
		return false
	}
	e.stats.BadSyntax++
	if r.first {
		e.stats.Unparsed425++
		e.fail425(f, lineEnd, lk.sep, text425Unparsed)
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
