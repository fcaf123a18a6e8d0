package mangle

// FTP message syntax: parsers and formatters for the commands and replies
// that carry addresses and ports.
//
// Everything here is pure and allocation-free: parsers read a line given
// without its line ending (it may hold any bytes) and never panic;
// formatters append to a caller-supplied slice and allocate only when its
// capacity is too small. Numbers are parsed by hand so that no string is
// ever built from the input.

import "net/netip"

// Reply texts written by the formatters.
const (
	// textPassive is the 227 text of RFC 959 4.2 as the seed draft
	// (draft-tsou-behave-ftp46-00 section 4) writes it.
	textPassive = "Entering Passive Mode ("
	// textExtPassive is the 229 text of RFC 2428 section 3.
	textExtPassive = "Entering Extended Passive Mode (|||"
	// textLongPassive is the 228 text of RFC 1639 section 3.
	textLongPassive = "Entering Long Passive Mode ("
)

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isLetter(c byte) bool { return (c|0x20) >= 'a' && (c|0x20) <= 'z' }

// isDelimiter reports whether c may delimit the fields of an EPRT argument
// or a 229 reply. RFC 2428 sections 2 and 3 allow any character in 33-126;
// digits are refused as well, because a digit delimiter cannot be told
// apart from the decimal port it surrounds.
func isDelimiter(c byte) bool { return c >= 33 && c <= 126 && !isDigit(c) }

// trimSpaces removes leading and trailing spaces.
func trimSpaces(b []byte) []byte {
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return b
}

// parseReplyCode reads the reply code of a reply line. RFC 959 4.2: a
// reply line is a three-digit code followed by a space (the last line of a
// reply) or a hyphen (a multi-line reply that goes on), then text. The code
// is 100-599; a line that is only a code, without the separator, is
// rejected.
func parseReplyCode(line []byte) (code int, sep byte, ok bool) {
	if len(line) < 4 {
		return 0, 0, false
	}
	c0, c1, c2 := line[0], line[1], line[2]
	if c0 < '1' || c0 > '5' || !isDigit(c1) || !isDigit(c2) {
		return 0, 0, false
	}
	sep = line[3]
	if sep != ' ' && sep != '-' {
		return 0, 0, false
	}
	return int(c0-'0')*100 + int(c1-'0')*10 + int(c2-'0'), sep, true
}

// replyText returns the offset in line where a reply's text starts: after
// the code and separator when the line opens with them (RFC 959 4.2), else
// 0, so that a continuation line of a multi-line reply is scanned whole.
func replyText(line []byte) int {
	if _, _, ok := parseReplyCode(line); ok {
		return 4
	}
	return 0
}

// splitCommand splits a command line into its verb and argument. RFC 959
// 5.3.1: a command is an alphabetic code of three or four characters,
// case-insensitive, followed by end of line or by a single space and the
// argument. The verb comes back upper-cased and zero-padded to four bytes;
// arg is what follows the one separating space (further spaces are kept),
// or nil when there is no argument.
func splitCommand(line []byte) (verb [4]byte, arg []byte, ok bool) {
	n := 0
	for n < len(line) && n < 5 && isLetter(line[n]) {
		n++
	}
	if n < 3 || n > 4 {
		return [4]byte{}, nil, false
	}
	if n < len(line) && line[n] != ' ' {
		return [4]byte{}, nil, false
	}
	for i := 0; i < n; i++ {
		verb[i] = line[i] &^ 0x20 // ASCII letters only: clearing 0x20 upper-cases
	}
	if n < len(line) {
		arg = line[n+1:]
	}
	return verb, arg, true
}

// parseDecimal reads the decimal digits at line[i:] (at least one, at most
// maxDigits) and returns their value and the offset after them. A run of
// more digits than maxDigits is rejected whole, so "1922" never reads as
// 192 followed by 2. Signs are never accepted: the first byte must be a
// digit.
func parseDecimal(line []byte, i, maxDigits int) (v uint32, next int, ok bool) {
	j := i
	for j < len(line) && isDigit(line[j]) {
		if j-i == maxDigits {
			return 0, 0, false
		}
		v = v*10 + uint32(line[j]-'0')
		j++
	}
	if j == i {
		return 0, 0, false
	}
	return v, j, true
}

// parseByte reads one number 0-255 of one to three digits (RFC 959 4.1.2:
// the fields of a host-port are 8-bit decimal numbers).
func parseByte(line []byte, i int) (b byte, next int, ok bool) {
	v, next, ok := parseDecimal(line, i, 3)
	if !ok || v > 255 {
		return 0, 0, false
	}
	return byte(v), next, true
}

// parsePort reads a TCP port 1-65535 of one to five decimal digits (RFC 2428
// sections 2 and 3: the port is a decimal string; 0 is no port).
func parsePort(line []byte, i int) (port uint16, next int, ok bool) {
	v, next, ok := parseDecimal(line, i, 5)
	if !ok || v == 0 || v > 65535 {
		return 0, 0, false
	}
	return uint16(v), next, true
}

// parseHostPort reads the six comma-separated numbers h1,h2,h3,h4,p1,p2 of
// RFC 959 4.1.2 (PORT) and 4.2 (227) starting at line[i]. No spaces are
// allowed around the commas. The port p1*256+p2 must not be 0. It returns
// the offset after the last number.
func parseHostPort(line []byte, i int) (addr [4]byte, port uint16, next int, ok bool) {
	var f [6]byte
	for k := range f {
		if k > 0 {
			if i >= len(line) || line[i] != ',' {
				return [4]byte{}, 0, 0, false
			}
			i++
		}
		if f[k], i, ok = parseByte(line, i); !ok {
			return [4]byte{}, 0, 0, false
		}
	}
	port = uint16(f[4])<<8 | uint16(f[5])
	if port == 0 {
		return [4]byte{}, 0, 0, false
	}
	return [4]byte{f[0], f[1], f[2], f[3]}, port, i, true
}

// firstNumber returns the offset of the first digit in line at or after i,
// as RFC 1123 4.1.2.6 asks of a 227 reply ("scan for the first digit"). A
// digit right after '+' or '-' is a signed number, which no host-port field
// may be: ok is false then, as when there is no digit at all.
func firstNumber(line []byte, i int) (int, bool) {
	for ; i < len(line); i++ {
		if isDigit(line[i]) {
			if i > 0 && (line[i-1] == '+' || line[i-1] == '-') {
				return 0, false
			}
			return i, true
		}
	}
	return 0, false
}

// parse227 reads the address and port of a 227 (Entering Passive Mode)
// reply line. RFC 959 4.2 writes the text as "=h1,h2,h3,h4,p1,p2" in
// parentheses; RFC 1123 4.1.2.6 says clients must scan the text for the
// first digit, since servers vary it: parentheses are optional and any text
// may surround the numbers. Six numbers 0-255 separated by commas must
// follow, not a seventh; the port must not be 0. start and end delimit the
// six numbers in line. A line that does not open with a reply code is
// scanned from its first byte (a continuation line of a multi-line reply).
// The reply code itself is not checked: the caller knows which reply this
// is.
func parse227(line []byte) (addr [4]byte, port uint16, start, end int, ok bool) {
	start, ok = firstNumber(line, replyText(line))
	if !ok {
		return [4]byte{}, 0, 0, 0, false
	}
	addr, port, end, ok = parseHostPort(line, start)
	if !ok || (end < len(line) && line[end] == ',') {
		return [4]byte{}, 0, 0, 0, false
	}
	return addr, port, start, end, true
}

// parse229 reads the port of a 229 (Entering Extended Passive Mode) reply
// line. RFC 2428 section 3: the text holds "(<d><d><d><tcp-port><d>)", the
// network protocol and address fields left empty, the delimiter <d> one
// character in 33-126 used four times (digits are refused, see
// isDelimiter). The first '(' after the reply code is taken; the port is
// 1-65535 in at most five decimal digits. start and end delimit the port's
// digits in line so that a caller can replace only them.
func parse229(line []byte) (port uint16, start, end int, ok bool) {
	i := replyText(line)
	for i < len(line) && line[i] != '(' {
		i++
	}
	i++ // past '('
	if i+3 > len(line) {
		return 0, 0, 0, false
	}
	d := line[i]
	if !isDelimiter(d) || line[i+1] != d || line[i+2] != d {
		return 0, 0, 0, false
	}
	start = i + 3
	port, end, ok = parsePort(line, start)
	if !ok || end+1 >= len(line) || line[end] != d || line[end+1] != ')' {
		return 0, 0, 0, false
	}
	return port, start, end, true
}

// parsePORT reads the argument of a PORT command. RFC 959 4.1.2: the
// argument is the host-port "h1,h2,h3,h4,p1,p2", six 8-bit decimal numbers
// separated by commas. Surrounding spaces are ignored, anything else is
// not; the port must not be 0.
func parsePORT(arg []byte) (addr [4]byte, port uint16, ok bool) {
	arg = trimSpaces(arg)
	addr, port, next, ok := parseHostPort(arg, 0)
	if !ok || next != len(arg) {
		return [4]byte{}, 0, false
	}
	return addr, port, true
}

// Network protocol numbers of RFC 2428 section 2 (EPRT, and EPSV's argument).
const (
	netPrt4 = '1' // IPv4
	netPrt6 = '2' // IPv6
)

// parseEPRT reads the argument of an EPRT command. RFC 2428 section 2:
// "<d><net-prt><d><net-addr><d><tcp-port><d>", the delimiter <d> one
// character in 33-126 (not a digit, see isDelimiter) used four times.
// net-prt 1 is IPv4 with the address in dotted-decimal form; net-prt 2 is
// IPv6 with the address in any text form of RFC 4291 2.2 (RFC 5952's among
// them, "::" and an embedded dotted IPv4 included); an address of the other
// family is rejected, as are other protocol numbers and zones. The port is
// 1-65535 in at most five decimal digits. Surrounding spaces are ignored.
func parseEPRT(arg []byte) (ap netip.AddrPort, ok bool) {
	arg = trimSpaces(arg)
	// Shortest form: "|1|a.b.c.d|p|" is longer, but "|2|::|1|" is 8 bytes.
	if len(arg) < 8 {
		return netip.AddrPort{}, false
	}
	d := arg[0]
	if !isDelimiter(d) || arg[2] != d || arg[len(arg)-1] != d {
		return netip.AddrPort{}, false
	}
	prt := arg[1]
	addrStart := 3
	addrEnd := addrStart
	for addrEnd < len(arg) && arg[addrEnd] != d {
		addrEnd++
	}
	port, next, ok := parsePort(arg, addrEnd+1)
	if !ok || next != len(arg)-1 {
		return netip.AddrPort{}, false
	}
	text := arg[addrStart:addrEnd]
	var addr netip.Addr
	switch prt {
	case netPrt4:
		a4, ok := parseIPv4(text)
		if !ok {
			return netip.AddrPort{}, false
		}
		addr = netip.AddrFrom4(a4)
	case netPrt6:
		// An IPv6 text form is one with a colon before any dot (the rule
		// netip.ParseAddr dispatches on), so a dotted quad is refused here.
		a6, ok := parseIPv6(text)
		if !ok {
			return netip.AddrPort{}, false
		}
		addr = netip.AddrFrom16(a6)
	default:
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(addr, port), true
}

// parseLongHostPort reads the comma-separated numbers of an RFC 1639 long
// host-port starting at line[i]: "af,hal,h1,...,h<hal>,pal,p1,...,p<pal>".
// The numbers are unsigned decimals 0-255, no sign allowed. Only the forms
// TCP uses over IPv4 and IPv6 are accepted: af 4 (IPv4) with hal 4, af 6
// (IPv6) with hal 16, and pal 2 with the port p1*256+p2, which must not be
// 0. It returns the offset after the last number.
func parseLongHostPort(line []byte, i int) (ap netip.AddrPort, next int, ok bool) {
	var af, hal, pal, p1, p2 byte
	if af, i, ok = parseByte(line, i); !ok {
		return netip.AddrPort{}, 0, false
	}
	if i, ok = comma(line, i); !ok {
		return netip.AddrPort{}, 0, false
	}
	if hal, i, ok = parseByte(line, i); !ok {
		return netip.AddrPort{}, 0, false
	}
	if !(af == 4 && hal == 4) && !(af == 6 && hal == 16) {
		return netip.AddrPort{}, 0, false
	}
	var h [16]byte
	for k := 0; k < int(hal); k++ {
		if i, ok = comma(line, i); !ok {
			return netip.AddrPort{}, 0, false
		}
		if h[k], i, ok = parseByte(line, i); !ok {
			return netip.AddrPort{}, 0, false
		}
	}
	if i, ok = comma(line, i); !ok {
		return netip.AddrPort{}, 0, false
	}
	if pal, i, ok = parseByte(line, i); !ok || pal != 2 {
		return netip.AddrPort{}, 0, false
	}
	if i, ok = comma(line, i); !ok {
		return netip.AddrPort{}, 0, false
	}
	if p1, i, ok = parseByte(line, i); !ok {
		return netip.AddrPort{}, 0, false
	}
	if i, ok = comma(line, i); !ok {
		return netip.AddrPort{}, 0, false
	}
	if p2, i, ok = parseByte(line, i); !ok {
		return netip.AddrPort{}, 0, false
	}
	port := uint16(p1)<<8 | uint16(p2)
	if port == 0 {
		return netip.AddrPort{}, 0, false
	}
	var addr netip.Addr
	if af == 4 {
		addr = netip.AddrFrom4([4]byte{h[0], h[1], h[2], h[3]})
	} else {
		addr = netip.AddrFrom16(h)
	}
	return netip.AddrPortFrom(addr, port), i, true
}

// comma returns the offset after the ',' at line[i].
func comma(line []byte, i int) (int, bool) {
	if i >= len(line) || line[i] != ',' {
		return 0, false
	}
	return i + 1, true
}

// parseLPRT reads the argument of an LPRT command (RFC 1639 section 2):
// "4,4,h1,h2,h3,h4,2,p1,p2" for IPv4 or "6,16,h1,...,h16,2,p1,p2" for IPv6.
// Surrounding spaces are ignored. An IPv4 address comes back as a 4-byte
// Addr.
func parseLPRT(arg []byte) (ap netip.AddrPort, ok bool) {
	arg = trimSpaces(arg)
	ap, next, ok := parseLongHostPort(arg, 0)
	if !ok || next != len(arg) {
		return netip.AddrPort{}, false
	}
	return ap, true
}

// parse228 reads the address and port of a 228 (Entering Long Passive Mode)
// reply line, RFC 1639 section 3. As for 227 (RFC 1123 4.1.2.6) the text is
// scanned for the first digit after the reply code, and the numbers follow
// the grammar of LPRT's argument; no further number may follow them.
func parse228(line []byte) (ap netip.AddrPort, ok bool) {
	start, ok := firstNumber(line, replyText(line))
	if !ok {
		return netip.AddrPort{}, false
	}
	ap, next, ok := parseLongHostPort(line, start)
	if !ok || (next < len(line) && line[next] == ',') {
		return netip.AddrPort{}, false
	}
	return ap, true
}

// parseIP reads an IPv4 or IPv6 address in text form. It accepts exactly
// what netip.ParseAddr accepts, zones excepted (an FTP address never has
// one): the form is IPv4 if a '.' comes before any ':', IPv6 if a ':'
// comes first.
func parseIP(b []byte) (netip.Addr, bool) {
	for _, c := range b {
		switch c {
		case '.':
			a4, ok := parseIPv4(b)
			if !ok {
				return netip.Addr{}, false
			}
			return netip.AddrFrom4(a4), true
		case ':':
			a6, ok := parseIPv6(b)
			if !ok {
				return netip.Addr{}, false
			}
			return netip.AddrFrom16(a6), true
		}
	}
	return netip.Addr{}, false
}

// parseIPv4 reads a dotted-decimal IPv4 address: four decimal numbers
// 0-255 separated by dots (RFC 2428 section 2 names this form for net-prt
// 1; RFC 4291 2.2 for the tail of an IPv6 address). Leading zeros are
// refused, as netip refuses them, since some systems read them as octal.
func parseIPv4(b []byte) (a [4]byte, ok bool) {
	field, digits, v := 0, 0, 0
	for _, c := range b {
		switch {
		case isDigit(c):
			if digits == 1 && v == 0 {
				return [4]byte{}, false // leading zero
			}
			v = v*10 + int(c-'0')
			if v > 255 {
				return [4]byte{}, false
			}
			digits++
		case c == '.':
			if digits == 0 || field == 3 {
				return [4]byte{}, false
			}
			a[field] = byte(v)
			field++
			v, digits = 0, 0
		default:
			return [4]byte{}, false
		}
	}
	if field != 3 || digits == 0 {
		return [4]byte{}, false
	}
	a[3] = byte(v)
	return a, true
}

// hexValue returns the value of the hexadecimal digit c, or -1.
func hexValue(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// parseIPv6 reads an IPv6 address in the text forms of RFC 4291 2.2: eight
// groups of one to four hex digits separated by colons, at most one "::"
// standing for one or more zero groups, and optionally a dotted-decimal
// IPv4 address in place of the last two groups. RFC 5952's canonical form
// is one of these. Zones ("%eth0") are refused.
func parseIPv6(b []byte) (a [16]byte, ok bool) {
	n := 0    // bytes of a filled so far
	gap := -1 // where "::" stands in a, if it was seen
	i := 0
	if len(b) >= 2 && b[0] == ':' && b[1] == ':' {
		gap = 0
		i = 2
		if i == len(b) {
			return a, true // "::"
		}
	}
	for {
		if n == 16 {
			return [16]byte{}, false // more than eight groups
		}
		j, v := i, 0
		for j < len(b) {
			h := hexValue(b[j])
			if h < 0 {
				break
			}
			if j-i == 4 {
				return [16]byte{}, false // a group of more than four digits
			}
			v = v<<4 | h
			j++
		}
		if j == i {
			return [16]byte{}, false // an empty group
		}
		if j < len(b) && b[j] == '.' {
			// An embedded IPv4 address ends the text and fills the last
			// four bytes: right after six groups, or anywhere before
			// them when "::" fills the rest.
			if n > 12 || (gap < 0 && n != 12) {
				return [16]byte{}, false
			}
			a4, ok := parseIPv4(b[i:])
			if !ok {
				return [16]byte{}, false
			}
			copy(a[n:], a4[:])
			n += 4
			break
		}
		a[n], a[n+1] = byte(v>>8), byte(v)
		n += 2
		if j == len(b) {
			break
		}
		if b[j] != ':' || j+1 == len(b) {
			return [16]byte{}, false // a stray character or a trailing ':'
		}
		j++
		if b[j] == ':' {
			if gap >= 0 {
				return [16]byte{}, false // a second "::"
			}
			gap = n
			j++
			if j == len(b) {
				break // "::" at the end
			}
		}
		i = j
	}
	switch {
	case n < 16 && gap < 0:
		return [16]byte{}, false // too few groups
	case n == 16 && gap >= 0:
		return [16]byte{}, false // "::" must stand for at least one group
	case n < 16:
		// Move the groups after "::" to the end and zero the gap.
		shift := 16 - n
		copy(a[gap+shift:], a[gap:n])
		clear(a[gap : gap+shift])
	}
	return a, true
}

// appendUint appends v in decimal.
func appendUint(dst []byte, v uint64) []byte {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}

// appendHostPort appends the six numbers of an RFC 959 host-port
// "h1,h2,h3,h4,p1,p2" for an IPv4 address.
func appendHostPort(dst []byte, a4 [4]byte, port uint16) []byte {
	for _, h := range a4 {
		dst = appendUint(dst, uint64(h))
		dst = append(dst, ',')
	}
	dst = appendUint(dst, uint64(port>>8))
	dst = append(dst, ',')
	return appendUint(dst, uint64(port&0xff))
}

// appendLongHostPort appends an RFC 1639 long host-port: "4,4,h1,...,h4,
// 2,p1,p2" for an IPv4 address, "6,16,h1,...,h16,2,p1,p2" for IPv6 (an
// IPv4-mapped IPv6 address included).
func appendLongHostPort(dst []byte, ap netip.AddrPort) []byte {
	addr := ap.Addr()
	if addr.Is4() {
		dst = append(dst, "4,4"...)
		for _, h := range addr.As4() {
			dst = append(dst, ',')
			dst = appendUint(dst, uint64(h))
		}
	} else {
		dst = append(dst, "6,16"...)
		for _, h := range addr.As16() {
			dst = append(dst, ',')
			dst = appendUint(dst, uint64(h))
		}
	}
	port := ap.Port()
	dst = append(dst, ",2,"...)
	dst = appendUint(dst, uint64(port>>8))
	dst = append(dst, ',')
	return appendUint(dst, uint64(port&0xff))
}

// appendPORT appends the command "PORT h1,h2,h3,h4,p1,p2" (RFC 959 4.1.2)
// for an IPv4 endpoint (an IPv4-mapped IPv6 address is unmapped). For any
// other address it appends nothing: the caller must not pass one.
func appendPORT(dst []byte, ap netip.AddrPort) []byte {
	addr := ap.Addr().Unmap()
	if !addr.Is4() {
		return dst
	}
	dst = append(dst, "PORT "...)
	return appendHostPort(dst, addr.As4(), ap.Port())
}

// appendEPRT appends the command "EPRT |1|a.b.c.d|port|" for an IPv4
// address or "EPRT |2|ipv6|port|" for an IPv6 one (RFC 2428 section 2),
// the IPv6 address in RFC 5952 form without its zone. An IPv4-mapped IPv6
// address stays IPv6 (|2|::ffff:a.b.c.d|); unmap it first to get |1|. For
// the zero Addr it appends nothing.
func appendEPRT(dst []byte, ap netip.AddrPort) []byte {
	addr := ap.Addr()
	switch {
	case addr.Is4():
		dst = append(dst, "EPRT |1|"...)
	case addr.Is6():
		dst = append(dst, "EPRT |2|"...)
		addr = addr.WithZone("")
	default:
		return dst
	}
	dst = addr.AppendTo(dst)
	dst = append(dst, '|')
	dst = appendUint(dst, uint64(ap.Port()))
	return append(dst, '|')
}

// append227 appends the reply "<code><sep>Entering Passive Mode
// (h1,h2,h3,h4,p1,p2)" (RFC 959 4.2 and 4.1.2, in the words of the seed
// draft's section 4 example). code is normally "227" and sep ' ' or '-'.
// ap must be IPv4 (an IPv4-mapped IPv6 address is unmapped); for any other
// address it appends nothing.
func append227(dst []byte, code string, sep byte, ap netip.AddrPort) []byte {
	addr := ap.Addr().Unmap()
	if !addr.Is4() {
		return dst
	}
	dst = append(dst, code...)
	dst = append(dst, sep)
	dst = append(dst, textPassive...)
	dst = appendHostPort(dst, addr.As4(), ap.Port())
	return append(dst, ')')
}

// append229 appends the reply "229<sep>Entering Extended Passive Mode
// (|||port|)" of RFC 2428 section 3.
func append229(dst []byte, sep byte, port uint16) []byte {
	dst = append(dst, "229"...)
	dst = append(dst, sep)
	dst = append(dst, textExtPassive...)
	dst = appendUint(dst, uint64(port))
	return append(dst, "|)"...)
}

// append228 appends the reply "228<sep>Entering Long Passive Mode
// (af,hal,h1,...,pal,p1,p2)" of RFC 1639 section 3: af 4 for an IPv4
// address, 6 for IPv6 (an IPv4-mapped IPv6 address included). For the zero
// Addr it appends nothing.
func append228(dst []byte, sep byte, ap netip.AddrPort) []byte {
	if !ap.Addr().IsValid() {
		return dst
	}
	dst = append(dst, "228"...)
	dst = append(dst, sep)
	dst = append(dst, textLongPassive...)
	dst = appendLongHostPort(dst, ap)
	return append(dst, ')')
}

// appendLPRT appends the command "LPRT af,hal,h1,...,pal,p1,p2" of RFC 1639
// section 2, in the same forms as append228. For the zero Addr it appends
// nothing.
func appendLPRT(dst []byte, ap netip.AddrPort) []byte {
	if !ap.Addr().IsValid() {
		return dst
	}
	dst = append(dst, "LPRT "...)
	return appendLongHostPort(dst, ap)
}
