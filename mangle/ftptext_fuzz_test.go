package mangle

import (
	"bytes"
	"net/netip"
	"testing"
)

// Seeds shared by the fuzz targets: the examples of the RFCs and the seed
// draft, and a few near misses.
var (
	seedEPRT = []string{
		"|1|132.235.1.2|6275|", "|2|1080::8:800:200C:417A|5282|", "|2|2001:db8::1|2000|",
		"|2|64:ff9b::192.0.2.1|2000|", "|2|::|1|", "!1!192.0.2.1!65535!", " |1|192.0.2.1|2000| ",
		"|1|2001:db8::1|2000|", "|2|192.0.2.1|2000|", "|3|192.0.2.1|2000|", "|2|fe80::1%eth0|2000|",
		"|1|192.0.2.1|0|", "|1|192.0.2.1|65536|", "|1!192.0.2.1|2000|",
	}
	seed227 = []string{
		"227 Entering Passive Mode (100,1,1,10,7,208)", "227 =192,0,2,1,4,1",
		"227 Entering Passive Mode 192,0,2,1,4,1", "227 Entering Passive Mode (192,0,2,1,4,1).",
		"227 Entering Passive Mode (0,0,0,0,4,1)", "227 Entering Passive Mode (10,117,132).",
		"227 Entering Passive Mode (192,0,2,256,4,1)", "227 Entering Passive Mode (+192,0,2,1,4,1)",
		"227-Entering Passive Mode (192,0,2,1,4,1)", " 192,0,2,1,4,1",
	}
	seed229 = []string{
		"229 Entering Extended Passive Mode (|||6446|)", "229 Entering Passive Mode (|||3000|)",
		"229 Entering Passive Mode (|||2000|)", "229 (!!!1!)", "229 (|||65536|)", "229 (|||0|)",
		"229 (||!6446|)", "229-Entering Extended Passive Mode (|||6446|)",
	}
	seedPORT = []string{
		"192,0,2,1,7,208", " 192,0,2,1,7,208 ", "255,255,255,255,255,255", "192,0,2,1,0,0",
		"192,0,2,1,7", "192, 0,2,1,7,208", "-192,0,2,1,7,208",
	}
	seedLPRT = []string{
		"4,4,192,0,2,1,2,7,208", "6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,7,208",
		"6,4,192,0,2,1,2,7,208", "4,4,192,0,2,1,2,0,0", "4,4,192,0,2,1,3,0,7,208",
	}
	seedIP = []string{
		"192.0.2.1", "0.0.0.0", "192.0.2.01", "::", "::1", "2001:db8::1", "1080::8:800:200C:417A",
		"1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::ffff:192.0.2.1", "1:2:3:4:5:6:192.0.2.1", "2001::db8::1",
		"fe80::1%eth0", "00000::1", "::1234.2.3.4",
	}
)

func addSeeds(f *testing.F, seeds ...[]string) {
	for _, s := range seeds {
		for _, v := range s {
			f.Add([]byte(v))
		}
	}
}

func FuzzParseEPRT(f *testing.F) {
	addSeeds(f, seedEPRT)
	f.Fuzz(func(t *testing.T, arg []byte) {
		ap, ok := parseEPRT(arg)
		if !ok {
			if ap != (netip.AddrPort{}) {
				t.Fatalf("parseEPRT(%q) failed but returned %v", arg, ap)
			}
			return
		}
		// The address field, read by the reference parser, is the same address.
		trimmed := trimSpaces(arg)
		d := trimmed[0]
		fields := bytes.Split(trimmed, []byte{d})
		if len(fields) != 5 {
			t.Fatalf("parseEPRT(%q) accepted %d fields", arg, len(fields))
		}
		if want, err := netip.ParseAddr(string(fields[2])); err != nil || want != ap.Addr() {
			t.Fatalf("parseEPRT(%q) = %v; netip.ParseAddr(%q) = %v, %v", arg, ap, fields[2], want, err)
		}
		// Formatting and parsing again gives the same endpoint, with the
		// same network protocol: |1| for IPv4, |2| for IPv6.
		out := appendEPRT(nil, ap)
		wantPrefix := "EPRT |2|"
		if string(fields[1]) == "1" {
			wantPrefix = "EPRT |1|"
		}
		if !bytes.HasPrefix(out, []byte(wantPrefix)) {
			t.Fatalf("parseEPRT(%q) = %v, formatted as %q, want prefix %q", arg, ap, out, wantPrefix)
		}
		verb, rest, ok := splitCommand(out)
		if !ok || verb != [4]byte{'E', 'P', 'R', 'T'} {
			t.Fatalf("%q does not split as an EPRT command", out)
		}
		if again, ok := parseEPRT(rest); !ok || again != ap {
			t.Fatalf("parseEPRT(%q) = %v; formatted %q reads back as %v, %v", arg, ap, out, again, ok)
		}
	})
}

func FuzzParse227(f *testing.F) {
	addSeeds(f, seed227)
	f.Fuzz(func(t *testing.T, line []byte) {
		addr, port, start, end, ok := parse227(line)
		if !ok {
			if addr != [4]byte{} || port != 0 || start != 0 || end != 0 {
				t.Fatalf("parse227(%q) failed but returned values", line)
			}
			return
		}
		if port == 0 || start < 0 || start >= end || end > len(line) {
			t.Fatalf("parse227(%q) = %v, %d, [%d,%d)", line, addr, port, start, end)
		}
		// The span is exactly a PORT argument naming the same endpoint.
		if a, p, ok := parsePORT(line[start:end]); !ok || a != addr || p != port {
			t.Fatalf("parse227(%q): span %q reads as %v %d %v", line, line[start:end], a, p, ok)
		}
		// Replacing the span, as the engine does, changes only the endpoint.
		spliced := append([]byte{}, line[:start]...)
		spliced = appendHostPort(spliced, [4]byte{203, 0, 113, 9}, 65535)
		spliced = append(spliced, line[end:]...)
		if a, p, _, _, ok := parse227(spliced); !ok || a != [4]byte{203, 0, 113, 9} || p != 65535 {
			t.Fatalf("parse227(%q) spliced to %q reads as %v %d %v", line, spliced, a, p, ok)
		}
		// The formatter's text reads back the same.
		out := append227(nil, "227", ' ', netip.AddrPortFrom(netip.AddrFrom4(addr), port))
		if a, p, _, _, ok := parse227(out); !ok || a != addr || p != port {
			t.Fatalf("parse227(%q) = %v %d; formatted %q reads back as %v %d %v", line, addr, port, out, a, p, ok)
		}
	})
}

func FuzzParse229(f *testing.F) {
	addSeeds(f, seed229)
	f.Fuzz(func(t *testing.T, line []byte) {
		port, start, end, ok := parse229(line)
		if !ok {
			if port != 0 || start != 0 || end != 0 {
				t.Fatalf("parse229(%q) failed but returned values", line)
			}
			return
		}
		if port == 0 || start < 4 || start >= end || end > len(line) || end-start > 5 {
			t.Fatalf("parse229(%q) = %d, [%d,%d)", line, port, start, end)
		}
		for _, c := range line[start:end] {
			if !isDigit(c) {
				t.Fatalf("parse229(%q): span %q is not all digits", line, line[start:end])
			}
		}
		// Replacing the port's digits, as the engine does, changes only the port.
		for _, p := range []uint16{1, 65535} {
			spliced := append([]byte{}, line[:start]...)
			spliced = appendUint(spliced, uint64(p))
			spliced = append(spliced, line[end:]...)
			if got, _, _, ok := parse229(spliced); !ok || got != p {
				t.Fatalf("parse229(%q) spliced to %q reads as %d %v", line, spliced, got, ok)
			}
		}
		out := append229(nil, ' ', port)
		if got, _, _, ok := parse229(out); !ok || got != port {
			t.Fatalf("parse229(%q) = %d; formatted %q reads back as %d %v", line, port, out, got, ok)
		}
	})
}

func FuzzParsePORT(f *testing.F) {
	addSeeds(f, seedPORT)
	f.Fuzz(func(t *testing.T, arg []byte) {
		addr, port, ok := parsePORT(arg)
		if !ok {
			if addr != [4]byte{} || port != 0 {
				t.Fatalf("parsePORT(%q) failed but returned values", arg)
			}
			return
		}
		if port == 0 {
			t.Fatalf("parsePORT(%q) returned port 0", arg)
		}
		out := appendPORT(nil, netip.AddrPortFrom(netip.AddrFrom4(addr), port))
		verb, rest, ok := splitCommand(out)
		if !ok || verb != [4]byte{'P', 'O', 'R', 'T'} {
			t.Fatalf("%q does not split as a PORT command", out)
		}
		if a, p, ok := parsePORT(rest); !ok || a != addr || p != port {
			t.Fatalf("parsePORT(%q) = %v %d; formatted %q reads back as %v %d %v", arg, addr, port, out, a, p, ok)
		}
	})
}

func FuzzParseLPRT(f *testing.F) {
	addSeeds(f, seedLPRT)
	f.Fuzz(func(t *testing.T, arg []byte) {
		ap, ok := parseLPRT(arg)
		if !ok {
			if ap != (netip.AddrPort{}) {
				t.Fatalf("parseLPRT(%q) failed but returned %v", arg, ap)
			}
			return
		}
		if ap.Port() == 0 || ap.Addr().Zone() != "" {
			t.Fatalf("parseLPRT(%q) = %v", arg, ap)
		}
		out := appendLPRT(nil, ap)
		verb, rest, ok := splitCommand(out)
		if !ok || verb != [4]byte{'L', 'P', 'R', 'T'} {
			t.Fatalf("%q does not split as an LPRT command", out)
		}
		if again, ok := parseLPRT(rest); !ok || again != ap {
			t.Fatalf("parseLPRT(%q) = %v; formatted %q reads back as %v, %v", arg, ap, out, again, ok)
		}
		// The same numbers in a 228 reply read the same.
		reply := append228(nil, ' ', ap)
		if again, ok := parse228(reply); !ok || again != ap {
			t.Fatalf("parseLPRT(%q) = %v; formatted %q reads back as %v, %v", arg, ap, reply, again, ok)
		}
	})
}

// FuzzIPText checks parseIP against netip.ParseAddr: they agree on every
// input on validity and value, except that parseIP refuses zones.
func FuzzIPText(f *testing.F) {
	addSeeds(f, seedIP)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkIPText(t, b)
		if addr, ok := parseIP(b); ok {
			// A valid address written by netip reads back the same.
			if again, ok := parseIP(addr.AppendTo(nil)); !ok || again != addr {
				t.Fatalf("parseIP(%q) = %v; its text reads back as %v, %v", b, addr, again, ok)
			}
		}
	})
}

// FuzzFTPLine runs every parser over one arbitrary line: none may panic,
// and each returns zero values when it fails.
func FuzzFTPLine(f *testing.F) {
	addSeeds(f, seedEPRT, seed227, seed229, seedPORT, seedLPRT, seedIP)
	f.Add([]byte("228 Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,7,208)"))
	f.Add([]byte("EPSV ALL"))
	f.Fuzz(func(t *testing.T, line []byte) {
		if code, sep, ok := parseReplyCode(line); ok != (code != 0) || ok != (sep != 0) || (ok && (code < 100 || code > 599)) {
			t.Fatalf("parseReplyCode(%q) = %d, %q, %v", line, code, sep, ok)
		}
		if verb, arg, ok := splitCommand(line); !ok && (verb != [4]byte{} || arg != nil) {
			t.Fatalf("splitCommand(%q) failed but returned %q, %q", line, verb, arg)
		}
		if ap, ok := parse228(line); ok != ap.IsValid() {
			t.Fatalf("parse228(%q) = %v, %v", line, ap, ok)
		}
		parse227(line)
		parse229(line)
		parsePORT(line)
		parseEPRT(line)
		parseLPRT(line)
		parseIP(line)
	})
}
