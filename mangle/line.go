package mangle

import "bytes"

// Line assembly for one direction of a control connection.
//
// FTP commands and replies are lines ending in CRLF (RFC 959 section 4);
// a bare LF is accepted. They travel over a Telnet-flavoured stream
// (RFC 959 section 4.1, RFC 854): IAC IAC is a literal 0xFF, and IAC
// WILL/WONT/DO/DONT <opt>, IAC SB ... IAC SE and two-byte commands such as
// IAC IP and IAC DM (sent before ABOR) are never part of the text. The
// assembler keeps the text of the current line with those removed, and the
// sequence numbers where the line and its text start, so a rewrite can
// replace exactly the text bytes on the wire.

// maxLine is the longest line the engine parses; a longer one passes
// unchanged (docs/PROTOCOL.md PB-5).
const maxLine = 1024

const (
	iac  = 255
	dont = 254
	do   = 253
	wont = 252
	will = 251
	sb   = 250
	se   = 240
)

// Telnet parser states.
const (
	tnData   uint8 = iota
	tnIAC          // after IAC
	tnOption       // after IAC WILL/WONT/DO/DONT
	tnSB           // inside a subnegotiation
	tnSBIAC        // IAC inside a subnegotiation
)

// maxNeg bounds the Telnet option negotiations one push can report.
const maxNeg = 8

// telnetNeg is one IAC WILL/WONT/DO/DONT <opt> seen in the stream.
type telnetNeg struct {
	seq      uint32 // sequence number of its IAC
	cmd, opt byte
}

// lineBuf is what a line needs only while it is being assembled: its text,
// and the negotiations push reports to its caller (who takes them before
// the next push). It comes from the engine's pools and goes back between
// lines (pool.go), so that an idle flow does not carry it.
type lineBuf struct {
	text [maxLine]byte
	neg  [maxNeg]telnetNeg
}

// The fields are ordered so that the struct has no padding: every flow
// carries two.
type lineState struct {
	started   bool   // a byte of the current line has been seen
	textSet   bool   //
	overlong  bool   // the text did not fit
	telnet    bool   // Telnet bytes inside the text: offsets do not map 1:1 to the wire
	frozen    bool   // part of the line was sent unmodified: it is never rewritten
	skip      bool   // the line's start was never seen: consume it without parsing
	tn        uint8  // Telnet parser state
	tnCmd     byte   // WILL/WONT/DO/DONT being parsed
	start     uint32 // sequence number of the line's first byte
	textStart uint32 // sequence number of the first text byte
	tnSeq     uint32 // sequence number of the IAC being parsed
	nneg      int32  // negotiations in text.neg seen since the caller last took them
	n         int    // text length (capped at maxLine)
	// text is non-nil while a line is being assembled (from feed's
	// first byte of a segment on).
	text *lineBuf
}

func (l *lineState) reset() {
	l.started, l.textSet, l.overlong, l.telnet, l.frozen, l.skip = false, false, false, false, false, false
	l.n = 0
}

// bytes returns the text of the line so far, without the line ending once
// complete.
func (l *lineState) bytes() []byte {
	if l.text == nil {
		return nil
	}
	return l.text.text[:l.n]
}

// clean reports whether the line's text maps byte for byte onto the wire
// from textStart, so that it may be rewritten.
func (l *lineState) clean() bool {
	return l.textSet && !l.overlong && !l.telnet && !l.frozen && !l.skip
}

func (l *lineState) appendText(seq uint32, b []byte) {
	if len(b) == 0 {
		return
	}
	if !l.textSet {
		l.textSet = true
		l.textStart = seq
	}
	if l.overlong {
		return
	}
	if l.n+len(b) > maxLine {
		l.overlong = true
		b = b[:maxLine-l.n]
	}
	l.n += copy(l.text.text[l.n:], b)
}

// push feeds bytes starting at sequence number seq. It consumes up to and
// including the first line feed that ends a line and reports how many bytes
// it consumed and whether a line is now complete (its text in bytes(); the
// caller handles it and calls reset).
func (l *lineState) push(seq uint32, b []byte) (n int, complete bool) {
	if !l.started {
		l.started = true
		l.start = seq
	}
	// Fast path: no Telnet state and no IAC in sight.
	if l.tn == tnData {
		end := bytes.IndexByte(b, '\n')
		chunk := b
		if end >= 0 {
			chunk = b[:end]
		}
		if bytes.IndexByte(chunk, iac) < 0 {
			if !l.skip {
				l.appendText(seq, chunk)
			}
			if end < 0 {
				return len(b), false
			}
			l.trimCR()
			return end + 1, true
		}
	}
	for i, c := range b {
		pos := seq + uint32(i)
		switch l.tn {
		case tnData:
			switch c {
			case iac:
				l.tn = tnIAC
				l.tnSeq = pos
			case '\n':
				l.trimCR()
				return i + 1, true
			default:
				if !l.skip {
					l.appendText(pos, b[i:i+1])
				}
			}
		case tnIAC:
			l.tn = tnData
			switch c {
			case iac: // IAC IAC: a literal 0xFF in the text
				if !l.skip {
					l.appendText(pos, b[i:i+1])
				}
				l.telnet = true
			case will, wont, do, dont:
				l.tn = tnOption
				l.tnCmd = c
			case sb:
				l.tn = tnSB
			}
			if l.textSet {
				l.telnet = true
			}
		case tnOption:
			l.tn = tnData
			if l.nneg < maxNeg {
				l.text.neg[l.nneg] = telnetNeg{seq: l.tnSeq, cmd: l.tnCmd, opt: c}
				l.nneg++
			}
		case tnSB:
			if c == iac {
				l.tn = tnSBIAC
			}
		case tnSBIAC:
			l.tn = tnSB
			if c == se {
				l.tn = tnData
			}
		}
	}
	return len(b), false
}

func (l *lineState) trimCR() {
	if l.n > 0 && !l.overlong && l.text.text[l.n-1] == '\r' {
		l.n--
	}
}
