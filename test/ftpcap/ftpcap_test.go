package ftpcap

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// plain is a session without rewrites: what an FTP client and server say
// to each other when nothing sits between them.
func plain(cfg Config) *Conv {
	c := New(cfg)
	c.Handshake()
	c.Reply("220 ready\r\n", "")
	c.Command("USER anonymous\r\n", "")
	c.Reply("331 password please\r\n", "")
	c.Send(Write{From: Client, Data: "PASS x\r\nSYST\r\n"}) // pipelined
	c.Reply("230 logged in\r\n215 UNIX Type: L8\r\n", "")
	c.Send(Write{From: Client, Data: "EPSV\r\n", Split: []int{2}})
	c.Reply("229 Entering Extended Passive Mode (|||2000|)\r\n", "")
	c.Command("LIST\r\n", "")
	c.Send(Write{From: Server, Data: "150 here it comes\r\n226-done\r\n226 bye\r\n", Split: []int{19, 28}, Lost: []int{0}})
	c.Retransmit(Client, 0)
	c.Command("QUIT\r\n", "")
	c.Reply("221 bye\r\n", "")
	c.Close(Client)
	return c
}

func TestPlainSessionChecks(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{SACK: true, Timestamps: true},
		{SACK: true, ClientISN: 0xfffffff0, ServerISN: 0xffffffff}, // wrap-around in both directions
	} {
		c := plain(cfg)
		sess := Session46(40000)
		for _, v6 := range []bool{false, true} {
			leg := sess.Leg(v6)
			pkts := c.Packets(leg)
			rep := Check(Raw(pkts))
			if err := rep.Err(); err != nil {
				t.Fatalf("cfg %+v v6=%v: %v", cfg, v6, err)
			}
			sent, recv := c.Sent()
			if diff := cmp.Diff(sent, rep.Stream(leg.Client, leg.Server)); diff != "" {
				t.Errorf("client stream (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(recv, rep.Stream(leg.Server, leg.Client)); diff != "" {
				t.Errorf("server stream (-want +got):\n%s", diff)
			}
			if got := rep.TCP; got != len(pkts) {
				t.Errorf("TCP segments %d, want %d", got, len(pkts))
			}
			for _, f := range rep.Flows {
				if !f.SawSYN || !f.SawFIN {
					t.Errorf("%v: SYN %v FIN %v", f.name(), f.SawSYN, f.SawFIN)
				}
			}
		}
	}
}

// TestCheckALGPassThrough: an ALG that forwards everything unchanged is
// right when no write changes length and wrong otherwise.
func TestCheckALGPassThrough(t *testing.T) {
	leg := Session46(40000).V4
	in := Raw(plain(Config{SACK: true}).Packets(leg))
	rep := CheckALG(in, in)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	sent, _ := plain(Config{}).Sent()
	if got := rep.Stream(leg.Client, leg.Server); got != sent {
		t.Errorf("server received %q, want %q", got, sent)
	}
	if rep.Packets != len(in) || rep.TCP != len(in) {
		t.Errorf("packets %d, TCP %d; want %d", rep.Packets, rep.TCP, len(in))
	}

	c := New(Config{})
	c.Handshake()
	c.Reply("220 hi\r\n", "")
	c.Command("PASV\r\n", "EPSV 2\r\n")
	c.Reply("229 Entering Extended Passive Mode (|||2000|)\r\n", "227 Entering Passive Mode (203,0,113,10,7,208)\r\n")
	in = Raw(c.Packets(leg))
	if CheckALG(in, in).Err() == nil {
		t.Error("a pass-through ALG passes a conversation that needs rewrites")
	}
}

// TestReorderResendKeepAlive: the segments of a reordered write, a
// retransmission spanning segments and a keep-alive make a consistent
// capture; the keep-alive's sequence number is one below the next byte.
func TestReorderResendKeepAlive(t *testing.T) {
	for _, sack := range []bool{false, true} {
		c := New(Config{SACK: sack})
		c.KeepAlive(Client) // before any data, in a capture without handshake
		c.Reply("220 hi\r\n", "")
		c.Send(Write{From: Client, Data: "USER a\r\nPASS b\r\n", Split: []int{3, 8, 12}, Order: []int{1, 0, 3, 2}})
		c.Resend(Client, 3, 12) // "R a\r\nPASS": across three segments
		c.Resend(Client, 0, 8)  // "USER a\r\n": two whole segments, D-SACK
		c.KeepAlive(Server)
		n := c.Len()
		c.Close(Server)
		pkts := c.Packets(Session64(2).V6)
		rep := Check(Raw(pkts))
		if err := rep.Err(); err != nil {
			t.Fatalf("sack=%v: %v", sack, err)
		}
		leg := Session64(2).V6
		if got := rep.Stream(leg.Client, leg.Server); got != "USER a\r\nPASS b\r\n" {
			t.Errorf("client stream %q", got)
		}
		ka := gopacket.NewPacket(pkts[n-2].Data, layers.LayerTypeIPv6, gopacket.Default).Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ka.Seq != 2000008 || len(ka.Payload) != 0 {
			t.Errorf("keep-alive seq %d, %d bytes", ka.Seq, len(ka.Payload))
		}
	}
}

func TestReset(t *testing.T) {
	c := New(Config{})
	c.Handshake()
	c.Reply("220 hi\r\n", "")
	c.Reset(Client)
	pkts := c.Packets(Session46(1).V4)
	last := gopacket.NewPacket(pkts[len(pkts)-1].Data, layers.LayerTypeIPv4, gopacket.Default).Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !last.RST || !last.ACK || last.Seq != 1000001 || last.Ack != 2000009 {
		t.Errorf("RST seq %d ack %d flags RST %v ACK %v", last.Seq, last.Ack, last.RST, last.ACK)
	}
	if err := Check(Raw(pkts)).Err(); err != nil {
		t.Error(err)
	}
}

// TestSACKAndRetransmission looks at the generated options directly.
func TestSACKAndRetransmission(t *testing.T) {
	c := New(Config{SACK: true})
	c.Handshake()
	c.Send(Write{From: Server, Data: "220-a\r\n220 b\r\n", Split: []int{7}, Lost: []int{0}})
	pkts := c.Packets(Session64(50000).V6)
	// SYN, SYN-ACK, ACK, seg0, seg1, dup-ack with SACK, seg0 again, ack.
	if len(pkts) != 8 {
		t.Fatalf("%d packets, want 8", len(pkts))
	}
	var tcp layers.TCP
	p := gopacket.NewPacket(pkts[5].Data, layers.LayerTypeIPv6, gopacket.Default)
	tcp = *p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if tcp.Ack != 2000001 {
		t.Errorf("dup ack %d, want 2000001", tcp.Ack)
	}
	var sack []uint32
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindSACK {
			for i := 0; i < len(o.OptionData); i += 4 {
				sack = append(sack, binary.BigEndian.Uint32(o.OptionData[i:]))
			}
		}
	}
	if diff := cmp.Diff([]uint32{2000008, 2000015}, sack); diff != "" {
		t.Errorf("SACK (-want +got):\n%s", diff)
	}
	if !bytes.Equal(payload(t, pkts[3].Data), payload(t, pkts[6].Data)) {
		t.Error("retransmission differs")
	}
	if err := Check(Raw(pkts)).Err(); err != nil {
		t.Error(err)
	}
}

func payload(t *testing.T, b []byte) []byte {
	t.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeIPv6, gopacket.Default)
	return p.Layer(layers.LayerTypeTCP).LayerPayload()
}

// TestRewriteNumbering: when the script says the peer received something
// else, the peer's acknowledgements count what it received; fed to the
// checker unmodified (as a pass-through ALG would send them), they are
// wrong, and the checker says so.
func TestRewriteNumbering(t *testing.T) {
	c := New(Config{})
	c.Handshake()
	c.Reply("220 hi\r\n", "")
	c.Command("PASV\r\n", "EPSV 2\r\n")
	c.Reply("229 Entering Extended Passive Mode (|||2000|)\r\n", "227 Entering Passive Mode (203,0,113,10,7,208)\r\n")
	c.Command("QUIT\r\n", "")
	toServer, toClient := c.Want()
	if want := "EPSV 2\r\nQUIT\r\n"; toServer != want {
		t.Errorf("server receives %q, want %q", toServer, want)
	}
	if !strings.HasPrefix(toClient, "220 hi\r\n227 ") {
		t.Errorf("client receives %q", toClient)
	}
	rep := Check(Raw(c.Packets(Session46(40000).V4)))
	if len(rep.Problems) == 0 {
		t.Fatal("checker found nothing wrong with untranslated acknowledgements")
	}
	for _, p := range rep.Problems {
		t.Log(p)
	}
}

func TestMapOffset(t *testing.T) {
	for _, tc := range []struct {
		data, want string
		o, got     int
		ok         bool
	}{
		{"PASV\r\n", "PASV\r\n", 3, 3, true},
		{"PASV\r\nNOOP\r\n", "EPSV 2\r\nNOOP\r\n", 6, 8, true},
		{"PASV\r\nNOOP\r\n", "EPSV 2\r\nNOOP\r\n", 0, 0, true},
		{"PASV\r\nNOOP\r\n", "EPSV 2\r\nNOOP\r\n", 12, 14, true},
		{"PASV\r\nNOOP\r\n", "EPSV 2\r\nNOOP\r\n", 2, 0, false},
		{"PASV\r\nNOOP\r\n", "EPSV 2\r\nNOOP\r\n", 8, 10, true}, // inside an unchanged line
		{"EPSV\r\n", "PASV\r\n", 2, 0, false},                   // same length, still a rewritten line
		{"USER a\r\nPASV\r\n", "USER a\r\nEPSV 2\r\n", 8, 8, true},
		{"PASV\r\nNOOP\r\n", "NOOP\r\n", 6, 0, false}, // different line counts
	} {
		got, ok := MapOffset(tc.data, tc.want, tc.o)
		if got != tc.got || ok != tc.ok {
			t.Errorf("MapOffset(%q, %q, %d) = %d, %v; want %d, %v", tc.data, tc.want, tc.o, got, ok, tc.got, tc.ok)
		}
	}
}

// TestCheckFindsProblems damages a good capture in the ways an ALG could
// and expects one kind of problem each.
func TestCheckFindsProblems(t *testing.T) {
	base := func() [][]byte {
		c := New(Config{SACK: true})
		c.Handshake()
		c.Reply("220 hi\r\n", "")
		c.Send(Write{From: Client, Data: "USER a\r\nPASS b\r\n", Split: []int{8}, Lost: []int{0}})
		c.Retransmit(Client, 0)
		c.Close(Client)
		return Raw(c.Packets(Session46(40000).V4))
	}
	// Packet indices in base: 0 SYN, 1 SYN-ACK, 2 ACK, 3 220, 4 ack,
	// 5 USER, 6 PASS, 7 dup-ack+SACK, 8 USER again, 9 ack, 10 USER
	// retransmit, 11 dup-ack with D-SACK, 12 FIN, 13 FIN, 14 ACK.
	if err := Check(base()).Err(); err != nil {
		t.Fatalf("base capture: %v", err)
	}
	tcpOff := 20
	for _, tc := range []struct {
		name   string
		damage func(p [][]byte) [][]byte
		want   string
	}{
		{"ip checksum", func(p [][]byte) [][]byte { p[3][10] ^= 1; return p }, "IPv4 header checksum"},
		{"tcp checksum", func(p [][]byte) [][]byte { p[3][tcpOff+16] ^= 1; return p }, "TCP checksum"},
		{"retransmission differs", func(p [][]byte) [][]byte {
			p[10][len(p[10])-3] = 'X'
			return fix(p)
		}, "retransmitted bytes differ"},
		{"ack beyond", func(p [][]byte) [][]byte { addAck(p[4], 5); return fix(p) }, "beyond what"},
		{"ack inside a segment", func(p [][]byte) [][]byte { addAck(p[4], -2); return fix(p) }, "not at the end of any segment"},
		{"sack inside", func(p [][]byte) [][]byte {
			i := bytes.Index(p[7][tcpOff:], []byte{5, 10})
			b := p[7][tcpOff+i+2:]
			binary.BigEndian.PutUint32(b, binary.BigEndian.Uint32(b)+1)
			return fix(p)
		}, "does not start where"},
		{"hole", func(p [][]byte) [][]byte { return append(p[:5:5], p[6], p[12]) }, "hole"},
		{"data after fin", func(p [][]byte) [][]byte {
			fin := p[12]
			binary.BigEndian.PutUint32(fin[20+4:], binary.BigEndian.Uint32(fin[20+4:])-8)
			return fix(append(p[:6:6], fin, p[6]))
		}, "beyond the FIN"},
		{"truncated", func(p [][]byte) [][]byte { p[3] = p[3][:len(p[3])-1]; return p }, "total length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Check(tc.damage(base()))
			if len(rep.Problems) == 0 {
				t.Fatal("no problem found")
			}
			if !strings.Contains(rep.Err().Error(), tc.want) {
				t.Errorf("problems do not mention %q: %v", tc.want, rep.Err())
			}
		})
	}
}

// addAck changes the acknowledgement number of an IPv4 TCP packet.
func addAck(p []byte, d int32) {
	b := p[20+8:]
	binary.BigEndian.PutUint32(b, uint32(int32(binary.BigEndian.Uint32(b))+d))
}

// fix recomputes the TCP checksums of IPv4 packets after damage, so that
// only the intended problem shows.
func fix(pkts [][]byte) [][]byte {
	for i, p := range pkts {
		pk := gopacket.NewPacket(p, layers.LayerTypeIPv4, gopacket.Default)
		ip := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
		_ = tcp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ip, tcp, gopacket.Payload(tcp.Payload)); err != nil {
			panic(err)
		}
		pkts[i] = append([]byte(nil), buf.Bytes()...)
	}
	return pkts
}

var allLinks = []Link{
	{Type: layers.LinkTypeEthernet},
	{Type: layers.LinkTypeEthernet, VLANs: []uint16{100}},
	{Type: layers.LinkTypeEthernet, VLANs: []uint16{100, 200}},
	{Type: layers.LinkTypeRaw},
	{Type: LinkTypeRaw12},
	{Type: LinkTypeRaw14},
	{Type: layers.LinkTypeLinuxSLL},
	{Type: layers.LinkTypeLinuxSLL2},
	{Type: layers.LinkTypeNull},
	{Type: layers.LinkTypeLoop},
	{Type: layers.LinkTypeIPv4},
	{Type: layers.LinkTypeIPv6},
}

func TestPcapRoundTrip(t *testing.T) {
	c := plain(Config{Timestamps: true})
	sess := Session64(50000)
	for _, l := range allLinks {
		for _, v6 := range []bool{false, true} {
			if (l.Type == layers.LinkTypeIPv4 && v6) || (l.Type == layers.LinkTypeIPv6 && !v6) {
				continue
			}
			pkts := c.Packets(sess.Leg(v6))
			for _, ng := range []bool{false, true} {
				var buf bytes.Buffer
				write := WritePcap
				if ng {
					write = WritePcapNg
				}
				if err := write(&buf, l, pkts); err != nil {
					t.Fatalf("%v v6=%v ng=%v: %v", l, v6, ng, err)
				}
				got, lt, err := ReadPcap(&buf)
				if err != nil {
					t.Fatalf("%v v6=%v ng=%v: read: %v", l, v6, ng, err)
				}
				if lt != l.Type {
					t.Errorf("link type %v, want %v", lt, l.Type)
				}
				if diff := cmp.Diff(Raw(pkts), Raw(got)); diff != "" {
					t.Errorf("%v v6=%v ng=%v: packets (-want +got):\n%s", l, v6, ng, diff)
				}
				if !got[0].Time.Equal(pkts[0].Time) || !got[5].Time.Equal(pkts[5].Time) {
					t.Errorf("%v: times %v, %v; want %v, %v", l, got[0].Time, got[5].Time, pkts[0].Time, pkts[5].Time)
				}
			}
		}
	}
}

func TestFrameErrors(t *testing.T) {
	c := New(Config{})
	c.Handshake()
	p4 := c.Packets(Session46(1).V4)[0]
	p6 := c.Packets(Session46(1).V6)[0]
	if _, err := (Link{Type: layers.LinkTypeIPv6}).Frame(p4); err == nil {
		t.Error("IPv4 packet framed as LINKTYPE_IPV6")
	}
	if _, err := (Link{Type: layers.LinkTypeIPv4}).Frame(p6); err == nil {
		t.Error("IPv6 packet framed as LINKTYPE_IPV4")
	}
	if _, err := (Link{Type: 147}).Frame(p4); err == nil {
		t.Error("link type 147 accepted")
	}
}
