package mangle

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The seed draft's vector (draft-tsou-behave-ftp46-00 sections 4 and 5):
// the server is 100.1.1.10 on the IPv4 side; its 229 carries port 3000 and
// the ALG allocates port 2000.
func TestDraftVector(t *testing.T) {
	for _, leg := range []struct {
		name string
		v6   bool
	}{{"ipv4-leg", false}, {"ipv6-leg", true}} {
		t.Run(leg.name+"/PASV", func(t *testing.T) {
			s := newSim(t, sess46, leg.v6)
			s.m.ports[3000] = 2000
			s.handshake()
			s.send(ToClient, "220 ready\r\n")
			s.send(ToServer, "PASV\r\n")
			s.send(ToClient, "229 Entering Passive Mode (|||3000|)\r\n")
			if diff := cmp.Diff(lines("EPSV 2"), s.got(ToServer)); diff != "" {
				t.Errorf("server got (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(lines("220 ready", "227 Entering Passive Mode (100,1,1,10,7,208)"), s.got(ToClient)); diff != "" {
				t.Errorf("client got (-want +got):\n%s", diff)
			}
			want := []DataRequest{{Session: sess46, Mode: Passive46, Target: netip.AddrPortFrom(sess46.Server6, 3000),
				Client: s.ends[ToServer].addr, Server: s.ends[ToClient].addr}}
			if diff := cmp.Diff(want, s.m.calls, cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{})); diff != "" {
				t.Errorf("mapper calls (-want +got):\n%s", diff)
			}
			s.done()
		})
		t.Run(leg.name+"/EPSV1", func(t *testing.T) {
			s := newSim(t, sess46, leg.v6)
			s.m.ports[3000] = 2000
			s.handshake()
			s.send(ToClient, "220 ready\r\n")
			s.send(ToServer, "EPSV 1\r\n")
			s.send(ToClient, "229 Entering Passive Mode (|||3000|)\r\n")
			if diff := cmp.Diff(lines("EPSV 2"), s.got(ToServer)); diff != "" {
				t.Errorf("server got (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(lines("220 ready", "229 Entering Passive Mode (|||2000|)"), s.got(ToClient)); diff != "" {
				t.Errorf("client got (-want +got):\n%s", diff)
			}
			s.done()
		})
	}
}

type exchange struct {
	cmd, reply       string // as sent by the client and by the server
	wantCmd, wantRep string // as received by the server and by the client
}

// The rows of docs/PROTOCOL.md (P46-n, P64-n), a case or more each.
func TestProtocolTable(t *testing.T) {
	ok227 := "227 Entering Passive Mode (198,51,100,10,7,208)"
	tests := []struct {
		name string
		sess Session
		ex   []exchange
		cfg  func(*Config, *fakeMapper)
	}{
		{"46/PASV", sess46, []exchange{{"PASV", "229 Entering Extended Passive Mode (|||2000|)", "EPSV 2", "227 Entering Passive Mode (100,1,1,10,7,208)"}}, nil},
		{"46/pasv-lowercase", sess46, []exchange{{"pasv", "229 Entering Extended Passive Mode (|||2000|)", "EPSV 2", "227 Entering Passive Mode (100,1,1,10,7,208)"}}, nil},
		{"46/EPSV1", sess46, []exchange{{"EPSV 1", "229 Entering Extended Passive Mode (|||2000|)", "EPSV 2", "229 Entering Extended Passive Mode (|||2000|)"}}, nil},
		{"46/EPSV-port-kept", sess46, []exchange{{"EPSV", "229 Entering Extended Passive Mode (|||2000|)", "EPSV", "229 Entering Extended Passive Mode (|||2000|)"}}, nil},
		{"46/EPSV-port-rewritten", sess46, []exchange{{"EPSV", "229 Entering Extended Passive Mode (|||2000|)", "EPSV", "229 Entering Extended Passive Mode (|||40000|)"}},
			func(c *Config, m *fakeMapper) { m.ports[2000] = 40000 }},
		{"46/PORT", sess46, []exchange{{"PORT 192,0,2,10,7,208", "200 PORT command successful", "EPRT |2|2001:db8:64::c000:20a|2000|", "200 PORT command successful"}}, nil},
		{"46/EPRT1", sess46, []exchange{{"EPRT |1|192.0.2.10|2000|", "200 EPRT command successful", "EPRT |2|2001:db8:64::c000:20a|2000|", "200 EPRT command successful"}}, nil},
		{"46/PORT-bounce", sess46, []exchange{{"PORT 203,0,113,99,7,208", "500 Illegal PORT command", "PORT 203,0,113,99,7,208", "500 Illegal PORT command"}}, nil},
		{"46/EPRT-bounce", sess46, []exchange{{"EPRT |1|203.0.113.99|2000|", "500 x", "EPRT |1|203.0.113.99|2000|", "500 x"}}, nil},
		{"46/EPSV-refused", sess46, []exchange{{"PASV", "500 no", "EPSV 2", "500 no"}}, nil},
		{"46/mapping-fails", sess46, []exchange{{"PASV", "229 Entering Extended Passive Mode (|||2000|)", "EPSV 2", "425 Can't open data connection (ALG: no mapping)"}},
			func(c *Config, m *fakeMapper) { m.fail = true }},
		{"46/bad-229-PB-11", sess46, []exchange{{"PASV", "229 Entering Extended Passive Mode (|||0|)", "EPSV 2", "425 Can't open data connection (ALG: reply not understood)"}}, nil},
		{"64/bad-227-PB-11", sess64, []exchange{{"EPSV", "227 Entering Passive Mode (10,117,132).", "PASV", "425 Can't open data connection (ALG: reply not understood)"}}, nil},

		{"64/EPSV", sess64, []exchange{{"EPSV", ok227, "PASV", "229 Entering Extended Passive Mode (|||2000|)"}}, nil},
		{"64/EPSV2", sess64, []exchange{{"EPSV 2", ok227, "PASV", "229 Entering Extended Passive Mode (|||2000|)"}}, nil},
		{"64/EPSV-other-address", sess64, []exchange{{"EPSV", "227 Entering Passive Mode (10,0,0,1,7,208).", "PASV", "229 Entering Extended Passive Mode (|||2000|)"}}, nil},
		{"64/EPSV-other-address-strict", sess64, []exchange{{"EPSV", "227 Entering Passive Mode (10,0,0,1,7,208).", "PASV", "425 Can't open data connection (ALG: server announced another address)"}},
			func(c *Config, m *fakeMapper) { c.Strict = true }},
		{"64/EPSV1", sess64, []exchange{{"EPSV 1", "200 NOOP ok.", "NOOP", "522 Network protocol not supported, use (2)"}}, nil},
		// RFC 6384 section 6: any number but 2 is answered 522 by the ALG.
		{"64/EPSV3-P64-2", sess64, []exchange{{"EPSV 3", "200 NOOP ok.", "NOOP", "522 Network protocol not supported, use (2)"}}, nil},
		{"64/EPSV-02-is-2-P64-1", sess64, []exchange{{"EPSV 02", ok227, "PASV", "229 Entering Extended Passive Mode (|||2000|)"}}, nil},
		// RFC 6384 section 6: EPSV ALL is answered 504 and changes nothing.
		{"64/EPSV-ALL-P64-3", sess64, []exchange{
			{"EPSV ALL", "200 NOOP ok.", "NOOP", "504 Command not implemented for that parameter"},
			{"PASV", ok227, "PASV", ok227},
			{"EPRT |2|2001:db8:2::20|2000|", "200 PORT command successful", "PORT 192,168,255,20,7,208", "200 PORT command successful"},
			{"PORT 192,168,255,20,7,208", "200 ok", "PORT 192,168,255,20,7,208", "200 ok"},
			{"EPSV", ok227, "PASV", "229 Entering Extended Passive Mode (|||2000|)"},
		}, nil},
		{"64/EPRT2", sess64, []exchange{{"EPRT |2|2001:db8:2::20|2000|", "200 PORT command successful", "PORT 192,168,255,20,7,208", "200 PORT command successful"}}, nil},
		{"64/EPRT2-mapped-port", sess64, []exchange{{"EPRT |2|2001:db8:2::20|2000|", "200 ok", "PORT 192,168,255,20,9,196", "200 ok"}},
			func(c *Config, m *fakeMapper) { m.ports[2000] = 2500 }},
		{"64/EPRT-bounce", sess64, []exchange{{"EPRT |2|2001:db8:2::99|2000|", "500 x", "EPRT |2|2001:db8:2::99|2000|", "500 x"}}, nil},
		{"64/EPRT1-unchanged", sess64, []exchange{{"EPRT |1|192.168.255.20|2000|", "200 x", "EPRT |1|192.168.255.20|2000|", "200 x"}}, nil},
		{"64/ALGS", sess64, []exchange{
			{"ALGS STATUS64", "200 NOOP ok.", "NOOP", "216 EPSVEPRT translation of EPSV and EPRT is enabled"},
			{"ALGS DISABLE64", "200 NOOP ok.", "NOOP", "216 NONE translation is disabled"},
			{"EPSV", "229 Entering Extended Passive Mode (|||2000|)", "EPSV", "229 Entering Extended Passive Mode (|||2000|)"},
			{"ALGS STATUS64", "200 NOOP ok.", "NOOP", "216 NONE translation is disabled"},
			{"ALGS ENABLE64", "200 NOOP ok.", "NOOP", "216 EPSVEPRT translation of EPSV and EPRT is enabled"},
			{"EPSV", ok227, "PASV", "229 Entering Extended Passive Mode (|||2000|)"},
			{"ALGS FOO", "200 NOOP ok.", "NOOP", "504 Command not implemented for that parameter"},
			{"ALGS", "200 NOOP ok.", "NOOP", "504 Command not implemented for that parameter"},
		}, nil},
		// RFC 6384 section 11: the token is true for the session.
		{"64/ALGS-token-EPSV-P64-6", sess64, []exchange{
			{"ALGS STATUS64", "200 NOOP ok.", "NOOP", "216 EPSV translation of EPSV is enabled, EPRT is not translated"},
			{"EPRT |2|2001:db8:2::20|2000|", "200 x", "EPRT |2|2001:db8:2::20|2000|", "200 x"},
			{"ALGS DISABLE64", "200 NOOP ok.", "NOOP", "216 NONE translation is disabled"},
			{"ALGS ENABLE64", "200 NOOP ok.", "NOOP", "216 EPSV translation of EPSV is enabled, EPRT is not translated"},
		}, func(c *Config, m *fakeMapper) { m.noActive64 = true }},
		{"64/ALGS-token-unknown-client6-P64-6", sessDyn64, []exchange{
			{"ALGS STATUS64", "200 NOOP ok.", "NOOP", "216 EPSV translation of EPSV is enabled, EPRT is not translated"},
		}, nil},
		// RFC 6384 section 7: an EPRT the ALG cannot check passes unchanged.
		{"64/EPRT-unknown-client6-P64-5", sessDyn64, []exchange{
			{"EPRT |2|2001:db8:2::77|2000|", "200 x", "EPRT |2|2001:db8:2::77|2000|", "200 x"},
		}, nil},
		// RFC 6384 section 12: a substituted NOOP answered with anything but 2xx.
		{"64/NOOP-530-P64-9", sess64, []exchange{
			{"ALGS STATUS64", "530 Please login with USER and PASS.", "NOOP", "421 Service not available, closing control connection (ALG: the server refused NOOP)"},
			{"USER anonymous", "221 Goodbye.", "QUIT", "221 Goodbye."},
		}, nil},
		{"64/NOOP-421-P64-9", sess64, []exchange{
			{"EPSV 1", "421 Timeout.", "NOOP", "421 Service not available, closing control connection (ALG: the server refused NOOP)"},
		}, nil},
		{"64/NOOP-multiline-500-P64-9", sess64, []exchange{
			{"EPSV ALL", "500-Not\r\n more\r\n500 understood", "NOOP", "421-Service not available, closing control connection (ALG: the server refused NOOP)\r\n more\r\n421 understood"},
		}, nil},
		{"64/NOOP-multiline-200-P64-3", sess64, []exchange{
			{"EPSV ALL", "200-NOOP\r\n ok\r\n200 done", "NOOP", "504-Command not implemented for that parameter\r\n ok\r\n504 done"},
		}, nil},
		// Section 5: nothing is translated from AUTH on until its reply.
		{"64/AUTH-pipelined-PB-1", sess64, []exchange{
			{"EPSV 2\r\nAUTH TLS\r\nEPSV 2", ok227 + "\r\n234 Proceed", "PASV\r\nAUTH TLS\r\nEPSV 2", "229 Entering Extended Passive Mode (|||2000|)\r\n234 Proceed"},
		}, nil},
		{"46/AUTH-pipelined-refused-PB-1", sess46, []exchange{
			{"AUTH TLS\r\nPASV", "534 no\r\n227 Entering Passive Mode (100,1,1,10,7,208)", "AUTH TLS\r\nPASV", "534 no\r\n227 Entering Passive Mode (100,1,1,10,7,208)"},
			{"PASV", "229 Entering Extended Passive Mode (|||2000|)", "EPSV 2", "227 Entering Passive Mode (100,1,1,10,7,208)"},
		}, nil},
		// The address on a continuation line of a multi-line reply.
		{"64/multiline-address-continuation-PB-4", sess64, []exchange{
			{"EPSV", "227-Entering Passive Mode\r\n (198,51,100,10,4,3)\r\n227 OK", "PASV", "229-Entering Passive Mode\r\n (|||1027|)\r\n229 OK"},
		}, nil},
		{"46/multiline-address-continuation-PB-4", sess46, []exchange{
			{"PASV", "229-Entering Extended Passive Mode\r\n (|||1027|)\r\n229 OK", "EPSV 2", "227-Entering Extended Passive Mode\r\n (100,1,1,10,4,3)\r\n227 OK"},
		}, nil},
		{"64/multiline-address-code-line-PB-4", sess64, []exchange{
			{"EPSV", "227-Hello\r\n227-Entering Passive Mode (198,51,100,10,4,3)\r\n227 OK", "PASV", "229-Hello\r\n229-Entering Extended Passive Mode (|||1027|)\r\n229 OK"},
		}, nil},
		// Unusable untranslated and unparsable: 425.
		{"64/bad-227-spaces-PB-11", sess64, []exchange{{"EPSV", "227 Entering Passive Mode (198, 51, 100, 7, 4, 7)", "PASV", "425 Can't open data connection (ALG: reply not understood)"}}, nil},
		{"46/bad-229-70000-PB-11", sess46, []exchange{{"PASV", "229 Entering Extended Passive Mode (|||70000|)", "EPSV 2", "425 Can't open data connection (ALG: reply not understood)"}}, nil},
		{"46/EPSV-bad-229-kept-PB-11", sess46, []exchange{{"EPSV", "229 Entering Extended Passive Mode (|||0|)", "EPSV", "229 Entering Extended Passive Mode (|||0|)"}}, nil},
		{"64/LPSV", sess64, []exchange{{"LPSV", ok227, "PASV", "228 Entering Long Passive Mode (6,16,32,1,13,184,0,100,0,0,0,0,0,0,198,51,100,10,2,7,208)"}}, nil},
		{"64/LPRT", sess64, []exchange{{"LPRT 6,16,32,1,13,184,0,2,0,0,0,0,0,0,0,0,0,32,2,7,208", "200 ok", "PORT 192,168,255,20,7,208", "200 ok"}}, nil},
		{"64/PASV-unchanged", sess64, []exchange{{"PASV", ok227, "PASV", ok227}}, nil},
		{"64/PORT-unchanged", sess64, []exchange{{"PORT 192,168,255,20,7,208", "200 ok", "PORT 192,168,255,20,7,208", "200 ok"}}, nil},

		{"46/AUTH-ok-transparent", sess46, []exchange{
			{"AUTH TLS", "234 Proceed", "AUTH TLS", "234 Proceed"},
			{"PASV", "229 Entering Extended Passive Mode (|||2000|)", "PASV", "229 Entering Extended Passive Mode (|||2000|)"},
		}, nil},
		{"64/AUTH-refused", sess64, []exchange{
			{"AUTH TLS", "534 no", "AUTH TLS", "534 no"},
			{"EPSV", ok227, "PASV", "229 Entering Extended Passive Mode (|||2000|)"},
		}, nil},
		{"64/REIN-resets", sess64, []exchange{
			{"ALGS DISABLE64", "200 ok", "NOOP", "216 NONE translation is disabled"},
			{"REIN", "220 again", "REIN", "220 again"},
			{"EPSV", ok227, "PASV", "229 Entering Extended Passive Mode (|||2000|)"},
		}, nil},
	}
	for _, tt := range tests {
		for _, v6 := range []bool{false, true} {
			leg := "ipv4-leg"
			if v6 {
				leg = "ipv6-leg"
			}
			t.Run(tt.name+"/"+leg, func(t *testing.T) {
				m := &fakeMapper{sess: tt.sess, ok: true, ports: map[uint16]uint16{}}
				cfg := &Config{}
				if tt.cfg != nil {
					tt.cfg(cfg, m)
				}
				s := newSimMapper(t, m, v6, cfg)
				s.handshake()
				s.send(ToClient, "220 ready\r\n")
				wantS, wantC := "", "220 ready\r\n"
				for _, x := range tt.ex {
					s.send(ToServer, x.cmd+"\r\n")
					s.send(ToClient, x.reply+"\r\n")
					wantS += x.wantCmd + "\r\n"
					wantC += x.wantRep + "\r\n"
				}
				if diff := cmp.Diff(wantS, s.got(ToServer)); diff != "" {
					t.Errorf("server got (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(wantC, s.got(ToClient)); diff != "" {
					t.Errorf("client got (-want +got):\n%s", diff)
				}
				s.done()
			})
		}
	}
}

var _ = time.Second

type watchingMapper struct {
	fakeMapper
	changed []FlowKey
}

func (m *watchingMapper) LengthChanged(client, server netip.AddrPort) {
	m.changed = append(m.changed, FlowKeyOf(client, server))
}

// A Mapper that watches lengths hears of a flow once, at its first
// length-changing rewrite, local replies included.
func TestLengthWatcher(t *testing.T) {
	m := &watchingMapper{fakeMapper: fakeMapper{sess: sess64, ok: true, ports: map[uint16]uint16{}}}
	s := newSimMapper(t, &m.fakeMapper, false, &Config{})
	s.e = New(&Config{Mapper: m})
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "EPSV\r\n") // same length: PASV
	s.send(ToClient, "227 Entering Passive Mode (198,51,100,10,7,208)\r\n")
	if len(m.changed) != 1 {
		t.Fatalf("after the 227 -> 229 rewrite: %d calls, want 1", len(m.changed))
	}
	s.send(ToServer, "ALGS STATUS64\r\n")
	s.send(ToClient, "200 ok\r\n")
	if len(m.changed) != 1 || m.changed[0] != flowKeyOf(s) {
		t.Errorf("calls %v, want one for %v", m.changed, flowKeyOf(s))
	}
	s.done()
}

// A length change before the server spoke (a Telnet negotiation in a
// flood's garbage) tells the watcher nothing: each would cost the daemon a
// conntrack update.
func TestLengthWatcherNotBeforeServer(t *testing.T) {
	m := &watchingMapper{fakeMapper: fakeMapper{sess: sess64, ok: true, ports: map[uint16]uint16{}}}
	s := newSimMapper(t, &m.fakeMapper, false, &Config{})
	s.e = New(&Config{Mapper: m})
	s.handshake()
	s.send(ToServer, "\xff\xfb\x18garbage\r\n")
	if len(m.changed) != 0 {
		t.Errorf("%d calls before the server spoke, want 0", len(m.changed))
	}
}

// DataRequest.Long is set for RFC 1639's LPSV and LPRT only: the kernel's
// FTP helper does not parse them, so a pinhole Mapper opens the other leg.
func TestDataRequestLong(t *testing.T) {
	tests := []struct {
		cmd, reply string
		mode       DataMode
		long       bool
	}{
		{"LPSV", "227 Entering Passive Mode (198,51,100,10,7,208)", Passive64, true},
		{"EPSV", "227 Entering Passive Mode (198,51,100,10,7,208)", Passive64, false},
		{"LPRT 6,16,32,1,13,184,0,2,0,0,0,0,0,0,0,0,0,32,2,7,208", "200 ok", Active64, true},
		{"EPRT |2|2001:db8:2::20|2000|", "200 ok", Active64, false},
	}
	for _, tt := range tests {
		for _, v6 := range []bool{false, true} {
			s := newSim(t, sess64, v6)
			s.handshake()
			s.send(ToClient, "220 ready\r\n")
			s.send(ToServer, tt.cmd+"\r\n")
			s.send(ToClient, tt.reply+"\r\n")
			if len(s.m.calls) != 1 {
				t.Fatalf("%s (IPv6 leg %v): %d mapper calls, want 1", tt.cmd, v6, len(s.m.calls))
			}
			if c := s.m.calls[0]; c.Mode != tt.mode || c.Long != tt.long {
				t.Errorf("%s (IPv6 leg %v): mode %v, long %v; want %v, %v", tt.cmd, v6, c.Mode, c.Long, tt.mode, tt.long)
			}
			s.done()
		}
	}
}
