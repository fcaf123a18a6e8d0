package mangle

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseReplyCode(t *testing.T) {
	type result struct {
		Code int
		Sep  byte
		OK   bool
	}
	tests := []struct {
		line string
		want result
	}{
		{"227 Entering Passive Mode (100,1,1,10,7,208)", result{227, ' ', true}},
		{"227-Entering Passive Mode", result{227, '-', true}},
		{"100 x", result{100, ' ', true}},
		{"599 x", result{599, ' ', true}},
		{"200 ", result{200, ' ', true}},
		{"200", result{}},            // RFC 959 4.2: code, then SP or '-'
		{"600 x", result{}},          // out of range
		{"099 x", result{}},          // out of range
		{"20 x", result{}},           // two digits
		{"2000 x", result{}},         // four digits
		{"200x", result{}},           // no separator
		{"200\tx", result{}},         // tab is not a separator
		{" 200 x", result{}},         // leading space
		{"", result{}},               // empty
		{"2a0 x", result{}},          // not a digit
		{"\xff\xff\xff x", result{}}, // junk
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			var got result
			got.Code, got.Sep, got.OK = parseReplyCode([]byte(tt.line))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseReplyCode(%q) mismatch (-want +got):\n%s", tt.line, diff)
			}
		})
	}
}

func TestFTPSplitCommand(t *testing.T) {
	type result struct {
		Verb   string
		Arg    string
		HasArg bool
		OK     bool
	}
	tests := []struct {
		line string
		want result
	}{
		{"PASV", result{Verb: "PASV", OK: true}},
		{"pasv", result{Verb: "PASV", OK: true}},
		{"EpSv ALL", result{Verb: "EPSV", Arg: "ALL", HasArg: true, OK: true}},
		{"EPSV  ALL ", result{Verb: "EPSV", Arg: " ALL ", HasArg: true, OK: true}}, // only one space removed
		{"EPSV ", result{Verb: "EPSV", Arg: "", HasArg: true, OK: true}},
		{"PORT 192,0,2,1,7,208", result{Verb: "PORT", Arg: "192,0,2,1,7,208", HasArg: true, OK: true}},
		{"EPRT |2|2001:db8::1|2000|", result{Verb: "EPRT", Arg: "|2|2001:db8::1|2000|", HasArg: true, OK: true}},
		{"CWD /x", result{Verb: "CWD\x00", Arg: "/x", HasArg: true, OK: true}},
		{"cwd", result{Verb: "CWD\x00", OK: true}},
		{"CD /x", result{}},                // two letters
		{"PASSV", result{}},                // five letters
		{"PAS1", result{}},                 // a digit
		{"PASV\tx", result{}},              // tab after the verb
		{" PASV", result{}},                // leading space
		{"", result{}},                     // empty
		{"P\xc1SV", result{}},              // not ASCII
		{"[AS]", result{}},                 // brackets are not letters
		{"\xff\xf4\xff\xf2ABOR", result{}}, // Telnet IP/DM are the engine's business
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			verb, arg, ok := splitCommand([]byte(tt.line))
			got := result{Verb: string(verb[:]), Arg: string(arg), HasArg: arg != nil, OK: ok}
			if !ok {
				got.Verb = "" // the zero verb, compared as ""
				if verb != [4]byte{} || arg != nil {
					t.Errorf("splitCommand(%q) = %q, %q on failure; want zero values", tt.line, verb, arg)
				}
			}
			if tt.want.OK && len(tt.want.Verb) == 3 {
				tt.want.Verb += "\x00"
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("splitCommand(%q) mismatch (-want +got):\n%s", tt.line, diff)
			}
		})
	}
}

func TestParse227(t *testing.T) {
	type result struct {
		Addr       netip.Addr
		Port       uint16
		Start, End int
		OK         bool
	}
	ok := func(addr string, port uint16, start, end int) result {
		return result{netip.MustParseAddr(addr), port, start, end, true}
	}
	tests := []struct {
		name, line string
		want       result
	}{
		// The seed draft, section 4.
		{"draft", "227 Entering Passive Mode (100,1,1,10,7,208)", ok("100.1.1.10", 2000, 27, 43)},
		// RFC 1123 4.1.2.6 variants: text, parentheses and punctuation vary.
		{"rfc1123 equals", "227 =192,0,2,1,4,1", ok("192.0.2.1", 1025, 5, 18)},
		{"rfc1123 bare", "227 Entering Passive Mode 192,0,2,1,4,1", ok("192.0.2.1", 1025, 26, 39)},
		{"rfc1123 period", "227 Entering Passive Mode (192,0,2,1,4,1).", ok("192.0.2.1", 1025, 27, 40)},
		{"multi-line first", "227-Entering Passive Mode (192,0,2,1,4,1)", ok("192.0.2.1", 1025, 27, 40)},
		{"continuation line", " 192,0,2,1,4,1", ok("192.0.2.1", 1025, 1, 14)},
		{"zero address", "227 Entering Passive Mode (0,0,0,0,4,1)", ok("0.0.0.0", 1025, 27, 38)},
		{"max", "227 (255,255,255,255,255,255)", ok("255.255.255.255", 65535, 5, 28)},
		{"leading zeros", "227 (192,000,002,001,004,001)", ok("192.0.2.1", 1025, 5, 28)},
		{"port 1", "227 (192,0,2,1,0,1)", ok("192.0.2.1", 1, 5, 18)},
		{"trailing text", "227 Entering Passive Mode (192,0,2,1,4,1) ok", ok("192.0.2.1", 1025, 27, 40)},

		{"number over 255", "227 Entering Passive Mode (192,0,2,256,4,1)", result{}},
		{"port byte over 255", "227 Entering Passive Mode (192,0,2,1,4,256)", result{}},
		{"five numbers", "227 Entering Passive Mode (192,0,2,1,4)", result{}},
		{"proftpd behind NAT64", "227 Entering Passive Mode (10,117,132).", result{}},
		{"seven numbers", "227 Entering Passive Mode (192,0,2,1,4,1,5)", result{}},
		{"leading plus", "227 Entering Passive Mode (+192,0,2,1,4,1)", result{}},
		{"leading minus", "227 Entering Passive Mode (-192,0,2,1,4,1)", result{}},
		{"inner plus", "227 Entering Passive Mode (192,+0,2,1,4,1)", result{}},
		{"inner minus", "227 Entering Passive Mode (192,0,2,1,-4,1)", result{}},
		{"four digits", "227 Entering Passive Mode (0192,0,2,1,4,1)", result{}},
		{"six digits", "227 Entering Passive Mode (192,0,2,1,4,100001)", result{}},
		{"empty field", "227 Entering Passive Mode (192,0,,1,4,1)", result{}},
		{"trailing comma", "227 Entering Passive Mode (192,0,2,1,4,)", result{}},
		{"space after comma", "227 Entering Passive Mode (192, 0, 2, 1, 4, 1)", result{}},
		{"space before comma", "227 Entering Passive Mode (192 ,0 ,2 ,1 ,4 ,1)", result{}},
		{"port 0", "227 Entering Passive Mode (192,0,2,1,0,0)", result{}},
		{"no digits", "227 Entering Passive Mode", result{}},
		{"code only", "227", result{}},
		{"digit before the numbers", "227 Entering Passive Mode v2 (192,0,2,1,4,1)", result{}},
		{"empty", "", result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got result
			var a4 [4]byte
			a4, got.Port, got.Start, got.End, got.OK = parse227([]byte(tt.line))
			if got.OK {
				got.Addr = netip.AddrFrom4(a4)
			} else if a4 != [4]byte{} || got.Port != 0 || got.Start != 0 || got.End != 0 {
				t.Errorf("parse227(%q) returned non-zero values on failure", tt.line)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("parse227(%q) mismatch (-want +got):\n%s", tt.line, diff)
			}
			if got.OK {
				// The span holds exactly a PORT argument's six numbers.
				a, p, ok := parsePORT([]byte(tt.line[got.Start:got.End]))
				if !ok || a != a4 || p != got.Port {
					t.Errorf("span %q of %q does not re-parse as the same host-port", tt.line[got.Start:got.End], tt.line)
				}
			}
		})
	}
}

func TestParse229(t *testing.T) {
	type result struct {
		Port       uint16
		Start, End int
		OK         bool
	}
	tests := []struct {
		name, line string
		want       result
	}{
		{"rfc2428", "229 Entering Extended Passive Mode (|||6446|)", result{6446, 39, 43, true}},
		{"draft", "229 Entering Passive Mode (|||3000|)", result{3000, 30, 34, true}},
		{"other delimiter", "229 Entering Extended Passive Mode (!!!6446!)", result{6446, 39, 43, true}},
		{"trailing text", "229 Entering Extended Passive Mode (|||6446|).", result{6446, 39, 43, true}},
		{"multi-line first", "229-Entering Extended Passive Mode (|||6446|)", result{6446, 39, 43, true}},
		{"port 1", "229 (|||1|)", result{1, 8, 9, true}},
		{"port 65535", "229 (|||65535|)", result{65535, 8, 13, true}},
		{"leading zero", "229 (|||02000|)", result{2000, 8, 13, true}},
		{"paren delimiter", "229 ((((2000()", result{2000, 8, 12, true}},
		{"first paren wins", "229 ok (|||2000|) (|||3000|)", result{2000, 11, 15, true}},

		{"port 0", "229 Entering Extended Passive Mode (|||0|)", result{}},
		{"port 65536", "229 Entering Extended Passive Mode (|||65536|)", result{}},
		{"six digits", "229 Entering Extended Passive Mode (|||006446|)", result{}},
		{"leading plus", "229 Entering Extended Passive Mode (|||+6446|)", result{}},
		{"leading minus", "229 Entering Extended Passive Mode (|||-6446|)", result{}},
		{"empty port", "229 Entering Extended Passive Mode (||||)", result{}},
		{"mismatched delimiters", "229 Entering Extended Passive Mode (||!6446|)", result{}},
		{"mismatched last delimiter", "229 Entering Extended Passive Mode (|||6446!)", result{}},
		{"filled net-prt", "229 Entering Extended Passive Mode (|2|2001:db8::1|6446|)", result{}},
		{"space delimiter", "229 Entering Extended Passive Mode (   6446 )", result{}},
		{"digit delimiter", "229 Entering Extended Passive Mode (1116446 1)", result{}},
		{"no close", "229 Entering Extended Passive Mode (|||6446|", result{}},
		{"no paren", "229 Entering Extended Passive Mode |||6446|", result{}},
		{"short", "229 (||", result{}},
		{"space in port", "229 (||| 6446|)", result{}},
		{"empty", "", result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got result
			got.Port, got.Start, got.End, got.OK = parse229([]byte(tt.line))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parse229(%q) mismatch (-want +got):\n%s", tt.line, diff)
			}
		})
	}
}

func TestParsePORT(t *testing.T) {
	type result struct {
		Addr netip.Addr
		Port uint16
		OK   bool
	}
	ok := func(addr string, port uint16) result { return result{netip.MustParseAddr(addr), port, true} }
	tests := []struct {
		name, arg string
		want      result
	}{
		{"plain", "192,0,2,1,7,208", ok("192.0.2.1", 2000)},
		{"spaces trimmed", "  192,0,2,1,7,208  ", ok("192.0.2.1", 2000)},
		{"zero address", "0,0,0,0,4,1", ok("0.0.0.0", 1025)},
		{"max", "255,255,255,255,255,255", ok("255.255.255.255", 65535)},

		{"over 255", "192,0,2,300,7,208", result{}},
		{"five numbers", "192,0,2,1,7", result{}},
		{"seven numbers", "192,0,2,1,7,208,1", result{}},
		{"parentheses", "(192,0,2,1,7,208)", result{}},
		{"leading plus", "+192,0,2,1,7,208", result{}},
		{"leading minus", "-192,0,2,1,7,208", result{}},
		{"six digits", "192,0,2,1,7,000208", result{}},
		{"empty field", "192,,2,1,7,208", result{}},
		{"space after comma", "192, 0,2,1,7,208", result{}},
		{"port 0", "192,0,2,1,0,0", result{}},
		{"tab", "192,0,2,1,7,208\t", result{}},
		{"dotted", "192.0.2.1", result{}},
		{"empty", "", result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got result
			var a4 [4]byte
			a4, got.Port, got.OK = parsePORT([]byte(tt.arg))
			if got.OK {
				got.Addr = netip.AddrFrom4(a4)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("parsePORT(%q) mismatch (-want +got):\n%s", tt.arg, diff)
			}
		})
	}
}

// cmpAddrPort compares netip values by ==, which cmp cannot see into.
var cmpAddrPort = cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })

func TestParseEPRT(t *testing.T) {
	type result struct {
		AP netip.AddrPort
		OK bool
	}
	ok := func(s string) result { return result{netip.MustParseAddrPort(s), true} }
	tests := []struct {
		name, arg string
		want      result
	}{
		// RFC 2428 section 2 examples.
		{"rfc2428 ipv4", "|1|132.235.1.2|6275|", ok("132.235.1.2:6275")},
		{"rfc2428 ipv6", "|2|1080::8:800:200C:417A|5282|", ok("[1080::8:800:200c:417a]:5282")},
		{"ipv6", "|2|2001:db8::1|2000|", ok("[2001:db8::1]:2000")},
		{"ipv6 full", "|2|2001:db8:0:0:0:0:0:1|2000|", ok("[2001:db8::1]:2000")},
		{"ipv6 unspecified", "|2|::|2000|", ok("[::]:2000")},
		{"ipv6 trailing ::", "|2|2001:db8::|2000|", ok("[2001:db8::]:2000")},
		{"ipv6 embedded ipv4", "|2|64:ff9b::192.0.2.1|2000|", ok("[64:ff9b::c000:201]:2000")},
		{"ipv6 embedded ipv4 full", "|2|0:0:0:0:0:ffff:192.0.2.1|2000|", ok("[::ffff:192.0.2.1]:2000")},
		{"other delimiter", "!1!192.0.2.1!2000!", ok("192.0.2.1:2000")},
		{"letter delimiter", "x2x2001:db8::1x2000x", ok("[2001:db8::1]:2000")},
		{"spaces trimmed", "  |1|192.0.2.1|2000|  ", ok("192.0.2.1:2000")},
		{"port 65535", "|1|192.0.2.1|65535|", ok("192.0.2.1:65535")},
		{"port 1", "|1|192.0.2.1|1|", ok("192.0.2.1:1")},

		{"mismatched delimiters", "|1!192.0.2.1|2000|", result{}},
		{"mismatched last delimiter", "|1|192.0.2.1|2000!", result{}},
		{"ipv4 with net-prt 2", "|2|192.0.2.1|2000|", result{}},
		{"ipv6 with net-prt 1", "|1|2001:db8::1|2000|", result{}},
		{"mapped ipv6 with net-prt 1", "|1|::ffff:192.0.2.1|2000|", result{}},
		{"net-prt 3", "|3|192.0.2.1|2000|", result{}},
		{"net-prt 12", "|12|192.0.2.1|2000|", result{}},
		{"empty net-prt", "||192.0.2.1|2000|", result{}},
		{"zone", "|2|fe80::1%eth0|2000|", result{}},
		{"port 0", "|1|192.0.2.1|0|", result{}},
		{"port 65536", "|1|192.0.2.1|65536|", result{}},
		{"six digit port", "|1|192.0.2.1|002000|", result{}},
		{"leading plus port", "|1|192.0.2.1|+2000|", result{}},
		{"leading minus port", "|1|192.0.2.1|-2000|", result{}},
		{"empty port", "|1|192.0.2.1||", result{}},
		{"empty address", "|1||2000|", result{}},
		{"ipv4 leading zero", "|1|192.0.2.01|2000|", result{}},
		{"ipv4 over 255", "|1|192.0.2.256|2000|", result{}},
		{"ipv4 three parts", "|1|192.0.2|2000|", result{}},
		{"ipv6 two ::", "|2|2001::db8::1|2000|", result{}},
		{"ipv6 five hex digits", "|2|2001:0db80::1|2000|", result{}},
		{"ipv6 too many groups", "|2|1:2:3:4:5:6:7:8:9|2000|", result{}},
		{"ipv6 :: for nothing", "|2|1:2:3:4:5:6:7:8::|2000|", result{}},
		{"ipv6 brackets", "|2|[2001:db8::1]|2000|", result{}},
		{"extra field", "|1|192.0.2.1|2000|x|", result{}},
		{"trailing text", "|1|192.0.2.1|2000|x", result{}},
		{"no last delimiter", "|1|192.0.2.1|2000", result{}},
		{"space delimiter", " 1 192.0.2.1 2000 ", result{}},
		{"digit delimiter", "0102.0.2.1020000", result{}},
		{"colon delimiter", ":2:2001:db8::1:2000:", result{}},
		{"short", "|2|::|", result{}},
		{"empty", "", result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got result
			got.AP, got.OK = parseEPRT([]byte(tt.arg))
			if diff := cmp.Diff(tt.want, got, cmpAddrPort); diff != "" {
				t.Errorf("parseEPRT(%q) mismatch (-want +got):\n%s", tt.arg, diff)
			}
		})
	}
}

func TestParseLPRT(t *testing.T) {
	type result struct {
		AP netip.AddrPort
		OK bool
	}
	ok := func(s string) result { return result{netip.MustParseAddrPort(s), true} }
	tests := []struct {
		name, arg string
		want      result
	}{
		{"ipv4", "4,4,192,0,2,1,2,7,208", ok("192.0.2.1:2000")},
		{"ipv6", "6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,7,208", ok("[2001:db8::1]:2000")},
		{"spaces trimmed", " 4,4,192,0,2,1,2,7,208 ", ok("192.0.2.1:2000")},

		{"af 4 hal 16", "4,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,7,208", result{}},
		{"af 6 hal 4", "6,4,192,0,2,1,2,7,208", result{}},
		{"af 5", "5,4,192,0,2,1,2,7,208", result{}},
		{"pal 3", "4,4,192,0,2,1,3,0,7,208", result{}},
		{"port 0", "4,4,192,0,2,1,2,0,0", result{}},
		{"over 255", "4,4,192,0,2,256,2,7,208", result{}},
		{"too few", "4,4,192,0,2,1,2,7", result{}},
		{"too many", "4,4,192,0,2,1,2,7,208,1", result{}},
		{"empty field", "4,4,192,,2,1,2,7,208", result{}},
		{"leading plus", "+4,4,192,0,2,1,2,7,208", result{}},
		{"space after comma", "4, 4,192,0,2,1,2,7,208", result{}},
		{"empty", "", result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got result
			got.AP, got.OK = parseLPRT([]byte(tt.arg))
			if diff := cmp.Diff(tt.want, got, cmpAddrPort); diff != "" {
				t.Errorf("parseLPRT(%q) mismatch (-want +got):\n%s", tt.arg, diff)
			}
		})
	}
}

func TestParse228(t *testing.T) {
	type result struct {
		AP netip.AddrPort
		OK bool
	}
	ok := func(s string) result { return result{netip.MustParseAddrPort(s), true} }
	tests := []struct {
		name, line string
		want       result
	}{
		{"ipv6", "228 Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,7,208)", ok("[2001:db8::1]:2000")},
		{"ipv4", "228 Entering Long Passive Mode (4,4,192,0,2,1,2,7,208)", ok("192.0.2.1:2000")},
		{"no parentheses", "228 Entering Long Passive Mode 4,4,192,0,2,1,2,7,208", ok("192.0.2.1:2000")},
		{"trailing period", "228 Entering Long Passive Mode (4,4,192,0,2,1,2,7,208).", ok("192.0.2.1:2000")},

		{"too many", "228 Entering Long Passive Mode (4,4,192,0,2,1,2,7,208,9)", result{}},
		{"too few", "228 Entering Long Passive Mode (4,4,192,0,2,1,2,7)", result{}},
		{"leading minus", "228 Entering Long Passive Mode (-4,4,192,0,2,1,2,7,208)", result{}},
		{"port 0", "228 Entering Long Passive Mode (4,4,192,0,2,1,2,0,0)", result{}},
		{"no digits", "228 Entering Long Passive Mode", result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got result
			got.AP, got.OK = parse228([]byte(tt.line))
			if diff := cmp.Diff(tt.want, got, cmpAddrPort); diff != "" {
				t.Errorf("parse228(%q) mismatch (-want +got):\n%s", tt.line, diff)
			}
		})
	}
}

func TestParseIPText(t *testing.T) {
	// Every case is checked against netip.ParseAddr, the reference.
	tests := []string{
		"192.0.2.1", "0.0.0.0", "255.255.255.255", "1.2.3.4",
		"192.0.2.01", "192.0.2.256", "192.0.2", "192.0.2.1.5", "192..2.1", ".192.0.2.1", "192.0.2.1.",
		"::", "::1", "1::", "2001:db8::1", "2001:DB8::1", "1080::8:800:200C:417A", "1:2:3:4:5:6:7:8",
		"1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9",
		"1:2:3:4:5:6:7", "2001::db8::1", ":::", ":1::", "1:", ":1", "1::2:", "0000:0000::ffff", "00000::1",
		"::ffff:192.0.2.1", "64:ff9b::192.0.2.1", "1:2:3:4:5:6:192.0.2.1", "1:2:3:4:5:6:7:192.0.2.1",
		"1:2:3:4:5::192.0.2.1", "1:2:3:4:5:6::192.0.2.1", "::192.0.2.1", "::1a.2.3.4", "::1234.2.3.4",
		"::192.0.2.01", "::192.0.2", "192.0.2.1::", "1.2.3.4:5", "g::1", "", "1", "abc", "::ffff:1.2.3.4:5",
		"2001:db8::1%eth0", "fe80::1%", "%eth0",
	}
	for _, s := range tests {
		t.Run(s, func(t *testing.T) {
			checkIPText(t, []byte(s))
		})
	}
}

// checkIPText compares parseIP with netip.ParseAddr on b: they must agree
// on validity and value, except that parseIP refuses every zone.
func checkIPText(t *testing.T, b []byte) {
	t.Helper()
	got, gotOK := parseIP(b)
	want, err := netip.ParseAddr(string(b))
	wantOK := err == nil
	if wantOK && want.Zone() != "" {
		wantOK, want = false, netip.Addr{}
	}
	if gotOK != wantOK || got != want {
		t.Errorf("parseIP(%q) = %v, %v; netip.ParseAddr gives %v, %v", b, got, gotOK, want, err)
	}
}

func TestAppend(t *testing.T) {
	ap4 := netip.MustParseAddrPort("192.0.2.1:2000")
	ap6 := netip.MustParseAddrPort("[2001:db8::1]:2000")
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"PORT", appendPORT(nil, ap4), "PORT 192,0,2,1,7,208"},
		{"PORT mapped", appendPORT(nil, netip.MustParseAddrPort("[::ffff:192.0.2.1]:2000")), "PORT 192,0,2,1,7,208"},
		{"PORT ipv6", appendPORT([]byte("x"), ap6), "x"},
		{"PORT appends", appendPORT([]byte("x"), ap4), "xPORT 192,0,2,1,7,208"},
		{"EPRT ipv6", appendEPRT(nil, ap6), "EPRT |2|2001:db8::1|2000|"},
		{"EPRT ipv4", appendEPRT(nil, ap4), "EPRT |1|192.0.2.1|2000|"},
		{"EPRT zone dropped", appendEPRT(nil, netip.AddrPortFrom(netip.MustParseAddr("fe80::1%eth0"), 2000)), "EPRT |2|fe80::1|2000|"},
		{"EPRT mapped", appendEPRT(nil, netip.MustParseAddrPort("[::ffff:192.0.2.1]:2000")), "EPRT |2|::ffff:192.0.2.1|2000|"},
		{"EPRT zero", appendEPRT([]byte("x"), netip.AddrPort{}), "x"},
		{"227 draft", append227(nil, "227", ' ', netip.MustParseAddrPort("100.1.1.10:2000")), "227 Entering Passive Mode (100,1,1,10,7,208)"},
		{"227 multi-line", append227(nil, "227", '-', ap4), "227-Entering Passive Mode (192,0,2,1,7,208)"},
		{"227 ipv6", append227([]byte("x"), "227", ' ', ap6), "x"},
		{"229 rfc2428", append229(nil, ' ', 6446), "229 Entering Extended Passive Mode (|||6446|)"},
		{"229 multi-line", append229(nil, '-', 2000), "229-Entering Extended Passive Mode (|||2000|)"},
		{"228 ipv6", append228(nil, ' ', ap6), "228 Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,7,208)"},
		{"228 ipv4", append228(nil, ' ', ap4), "228 Entering Long Passive Mode (4,4,192,0,2,1,2,7,208)"},
		{"228 zero", append228([]byte("x"), ' ', netip.AddrPort{}), "x"},
		{"LPRT ipv6", appendLPRT(nil, ap6), "LPRT 6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,7,208"},
		{"LPRT ipv4", appendLPRT(nil, ap4), "LPRT 4,4,192,0,2,1,2,7,208"},
		{"uint 0", appendUint(nil, 0), "0"},
		{"uint 65535", appendUint(nil, 65535), "65535"},
		{"uint max", appendUint(nil, ^uint64(0)), "18446744073709551615"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, string(tt.got)); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFTPTextRoundTrip checks that every parser accepts what its formatter
// writes, for a spread of addresses and ports.
func TestFTPTextRoundTrip(t *testing.T) {
	addrs := []string{"192.0.2.1", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::", "::1",
		"2001:db8:1:2:3:4:5:6", "::ffff:192.0.2.1", "64:ff9b::c000:201", "fe80::1"}
	ports := []uint16{1, 255, 256, 2000, 65535}
	for _, a := range addrs {
		for _, p := range ports {
			ap := netip.AddrPortFrom(netip.MustParseAddr(a), p)
			t.Run(ap.String(), func(t *testing.T) {
				checkRoundTrips(t, ap)
			})
		}
	}
}

// checkRoundTrips formats ap with every formatter that can carry it and
// parses the result back.
func checkRoundTrips(t *testing.T, ap netip.AddrPort) {
	t.Helper()
	addr := ap.Addr().WithZone("")
	ap = netip.AddrPortFrom(addr, ap.Port())
	if b := appendEPRT(nil, ap); len(b) > 0 {
		verb, arg, ok := splitCommand(b)
		got, ok2 := parseEPRT(arg)
		if !ok || verb != [4]byte{'E', 'P', 'R', 'T'} || !ok2 || got != ap {
			t.Errorf("EPRT %v: wrote %q, read back %v, %v", ap, b, got, ok2)
		}
	}
	if b := appendLPRT(nil, ap); len(b) > 0 {
		_, arg, _ := splitCommand(b)
		if got, ok := parseLPRT(arg); !ok || got != ap {
			t.Errorf("LPRT %v: wrote %q, read back %v, %v", ap, b, got, ok)
		}
	}
	if b := append228(nil, ' ', ap); len(b) > 0 {
		if got, ok := parse228(b); !ok || got != ap {
			t.Errorf("228 %v: wrote %q, read back %v, %v", ap, b, got, ok)
		}
	}
	b229 := append229(nil, ' ', ap.Port())
	if got, _, _, ok := parse229(b229); !ok || got != ap.Port() {
		t.Errorf("229 %v: wrote %q, read back %v, %v", ap, b229, got, ok)
	}
	if !addr.Unmap().Is4() {
		return
	}
	a4 := addr.Unmap().As4()
	bPORT := appendPORT(nil, ap)
	_, arg, _ := splitCommand(bPORT)
	if gotA, gotP, ok := parsePORT(arg); !ok || gotA != a4 || gotP != ap.Port() {
		t.Errorf("PORT %v: wrote %q, read back %v %v, %v", ap, bPORT, gotA, gotP, ok)
	}
	for _, sep := range []byte{' ', '-'} {
		b := append227(nil, "227", sep, ap)
		gotA, gotP, _, _, ok := parse227(b)
		if !ok || gotA != a4 || gotP != ap.Port() {
			t.Errorf("227 %v: wrote %q, read back %v %v, %v", ap, b, gotA, gotP, ok)
		}
		if code, gotSep, ok := parseReplyCode(b); !ok || code != 227 || gotSep != sep {
			t.Errorf("227 %v: wrote %q, reply code %v %q %v", ap, b, code, gotSep, ok)
		}
	}
}

// Sinks keep the compiler from optimising the measured calls away.
var (
	sinkInt  int
	sinkBool bool
	sinkAP   netip.AddrPort
	sinkA4   [4]byte
	sinkU16  uint16
	sinkB    []byte
	sinkVerb [4]byte
)

func TestFTPTextAllocs(t *testing.T) {
	line227 := []byte("227 Entering Passive Mode (100,1,1,10,7,208)")
	line229 := []byte("229 Entering Extended Passive Mode (|||6446|)")
	line228 := []byte("228 Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,7,208)")
	cmd := []byte("EPRT |2|1080::8:800:200C:417A|5282|")
	eprt4 := []byte("|1|132.235.1.2|6275|")
	eprt6 := []byte("|2|64:ff9b::192.0.2.1|5282|")
	port := []byte("192,0,2,1,7,208")
	lprt := []byte("6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,7,208")
	ip6 := []byte("2001:db8:1:2:3:4:5:6")
	ap4 := netip.MustParseAddrPort("192.0.2.1:2000")
	ap6 := netip.MustParseAddrPort("[2001:db8::1]:2000")
	dst := make([]byte, 0, 256)

	tests := []struct {
		name string
		fn   func()
	}{
		{"parseReplyCode", func() { sinkInt, _, sinkBool = parseReplyCode(line227) }},
		{"splitCommand", func() { sinkVerb, sinkB, sinkBool = splitCommand(cmd) }},
		{"parse227", func() { sinkA4, sinkU16, sinkInt, _, sinkBool = parse227(line227) }},
		{"parse229", func() { sinkU16, sinkInt, _, sinkBool = parse229(line229) }},
		{"parse228", func() { sinkAP, sinkBool = parse228(line228) }},
		{"parsePORT", func() { sinkA4, sinkU16, sinkBool = parsePORT(port) }},
		{"parseEPRT ipv4", func() { sinkAP, sinkBool = parseEPRT(eprt4) }},
		{"parseEPRT ipv6", func() { sinkAP, sinkBool = parseEPRT(eprt6) }},
		{"parseLPRT", func() { sinkAP, sinkBool = parseLPRT(lprt) }},
		{"parseIP", func() { sinkAP = netip.AddrPortFrom(func() netip.Addr { a, _ := parseIP(ip6); return a }(), 1) }},
		{"appendPORT", func() { sinkB = appendPORT(dst[:0], ap4) }},
		{"appendEPRT ipv4", func() { sinkB = appendEPRT(dst[:0], ap4) }},
		{"appendEPRT ipv6", func() { sinkB = appendEPRT(dst[:0], ap6) }},
		{"append227", func() { sinkB = append227(dst[:0], "227", ' ', ap4) }},
		{"append229", func() { sinkB = append229(dst[:0], ' ', 2000) }},
		{"append228", func() { sinkB = append228(dst[:0], ' ', ap6) }},
		{"appendLPRT", func() { sinkB = appendLPRT(dst[:0], ap6) }},
		{"appendUint", func() { sinkB = appendUint(dst[:0], 18446744073709551615) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tt.fn); n != 0 {
				t.Errorf("%s: %v allocations per run, want 0", tt.name, n)
			}
		})
	}
}

func BenchmarkParse227(b *testing.B) {
	line := []byte("227 Entering Passive Mode (100,1,1,10,7,208)")
	b.ReportAllocs()
	for b.Loop() {
		sinkA4, sinkU16, sinkInt, _, sinkBool = parse227(line)
	}
}

func BenchmarkParse229(b *testing.B) {
	line := []byte("229 Entering Extended Passive Mode (|||6446|)")
	b.ReportAllocs()
	for b.Loop() {
		sinkU16, sinkInt, _, sinkBool = parse229(line)
	}
}

func BenchmarkParseEPRT(b *testing.B) {
	for _, tt := range []struct{ name, arg string }{
		{"ipv4", "|1|132.235.1.2|6275|"},
		{"ipv6", "|2|1080::8:800:200C:417A|5282|"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			a := []byte(tt.arg)
			b.ReportAllocs()
			for b.Loop() {
				sinkAP, sinkBool = parseEPRT(a)
			}
		})
	}
}

func BenchmarkAppendEPRT(b *testing.B) {
	for _, tt := range []struct{ name, ap string }{
		{"ipv4", "132.235.1.2:6275"},
		{"ipv6", "[1080::8:800:200c:417a]:5282"},
	} {
		ap := netip.MustParseAddrPort(tt.ap)
		b.Run(tt.name, func(b *testing.B) {
			dst := make([]byte, 0, 64)
			b.ReportAllocs()
			for b.Loop() {
				sinkB = appendEPRT(dst[:0], ap)
			}
		})
	}
}
