package conntrackx

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

// unhex decodes an annotated hex fixture: everything after "//" on a line
// is a comment, spaces are ignored.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		b.WriteString(strings.Join(strings.Fields(line), ""))
	}
	out, err := hex.DecodeString(b.String())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// active46 is the expectation of a 46 active data connection on the IPv4
// leg: the IPv4 client C4 192.0.2.2 said PORT ...,195,80 (port 50000) on
// its control connection from port 40000 to S4 203.0.113.10:21; the
// server's data connection arrives as 203.0.113.10:* -> 192.0.2.2:50000.
var active46 = Expectation{
	Client: netip.MustParseAddrPort("192.0.2.2:40000"),
	Server: netip.MustParseAddrPort("203.0.113.10:21"),
	From:   netip.MustParseAddr("203.0.113.10"),
	To:     netip.MustParseAddrPort("192.0.2.2:50000"),
}

// Attribute headers are in host byte order (little-endian here), their
// payloads in network byte order; 0x80 in a type's high byte is
// NLA_F_NESTED.
const active46Attrs = `
34 00 01 80                 // CTA_EXPECT_MASTER, 52 bytes
  14 00 01 80               //   CTA_TUPLE_IP
    08 00 01 00 c0 00 02 02 //     CTA_IP_V4_SRC 192.0.2.2
    08 00 02 00 cb 00 71 0a //     CTA_IP_V4_DST 203.0.113.10
  1c 00 02 80               //   CTA_TUPLE_PROTO
    05 00 01 00 06 00 00 00 //     CTA_PROTO_NUM TCP (padded)
    06 00 02 00 9c 40 00 00 //     CTA_PROTO_SRC_PORT 40000
    06 00 03 00 00 15 00 00 //     CTA_PROTO_DST_PORT 21
34 00 02 80                 // CTA_EXPECT_TUPLE
  14 00 01 80
    08 00 01 00 cb 00 71 0a //     src 203.0.113.10
    08 00 02 00 c0 00 02 02 //     dst 192.0.2.2
  1c 00 02 80
    05 00 01 00 06 00 00 00
    06 00 02 00 00 00 00 00 //     src port 0
    06 00 03 00 c3 50 00 00 //     dst port 50000
34 00 03 80                 // CTA_EXPECT_MASK
  14 00 01 80
    08 00 01 00 ff ff ff ff //     source address: exact
    08 00 02 00 ff ff ff ff //     (destination: not used by the kernel)
  1c 00 02 80
    05 00 01 00 06 00 00 00
    06 00 02 00 00 00 00 00 //     source port: any
    06 00 03 00 ff ff 00 00 //     (destination: not used by the kernel)
`

func TestExpectMessageIPv4(t *testing.T) {
	for _, tt := range []struct {
		name    string
		create  bool
		timeout time.Duration
		flags   netlink.HeaderFlags
		tail    string
	}{
		{name: "create", create: true, flags: netlink.Request | netlink.Acknowledge | netlink.Create},
		{
			name: "update timeout", timeout: 59500 * time.Millisecond, flags: netlink.Request | netlink.Acknowledge,
			tail: "08 00 04 00 00 00 00 3c // CTA_EXPECT_TIMEOUT 60 s (rounded up)",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := expectMessage(active46, tt.create, tt.timeout)
			if err != nil {
				t.Fatal(err)
			}
			// NFNL_SUBSYS_CTNETLINK_EXP (2) << 8 | IPCTNL_MSG_EXP_NEW (0).
			if m.Header.Type != 0x0200 {
				t.Errorf("type %#x, want 0x0200", m.Header.Type)
			}
			if m.Header.Flags != tt.flags {
				t.Errorf("flags %v, want %v", m.Header.Flags, tt.flags)
			}
			want := unhex(t, "02 00 00 00 // nfgenmsg: AF_INET, NFNETLINK_V0, res_id 0\n"+active46Attrs+tt.tail)
			if diff := cmp.Diff(hex.Dump(want), hex.Dump(m.Data)); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExpectMessageIPv6(t *testing.T) {
	// A 64 active data connection on the IPv6 leg: C6 2001:db8:6::2
	// said EPRT |2|2001:db8:6::2|50000| to Pref::S4 2001:db8:64::cb00:710a.
	e := Expectation{
		Client: netip.MustParseAddrPort("[2001:db8:6::2]:40000"),
		Server: netip.MustParseAddrPort("[2001:db8:64::cb00:710a]:21"),
		From:   netip.MustParseAddr("2001:db8:64::cb00:710a"),
		To:     netip.MustParseAddrPort("[2001:db8:6::2]:50000"),
	}
	m, err := expectMessage(e, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, `
0a 00 00 00                 // nfgenmsg: AF_INET6
4c 00 01 80                 // CTA_EXPECT_MASTER, 76 bytes
  2c 00 01 80               //   CTA_TUPLE_IP, 44 bytes
    14 00 03 00 20010db8000600000000000000000002 // CTA_IP_V6_SRC
    14 00 04 00 20010db80064000000000000cb00710a // CTA_IP_V6_DST
`)
	// The rest follows the IPv4 layout; check the start (family, the
	// IPv6 attribute types and sizes) and the total length.
	if !strings.HasPrefix(hex.EncodeToString(m.Data), hex.EncodeToString(want)) {
		t.Errorf("message starts\n%x\nwant\n%x", m.Data[:len(want)], want)
	}
	// nfgenmsg 4 + 3 tuples of 4 + (4 + 2*20) + 28.
	if got, want := len(m.Data), 4+3*(4+44+28); got != want {
		t.Errorf("length %d, want %d", got, want)
	}
	// A 4in6-mapped IPv4 address is IPv4.
	mapped := active46
	mapped.From = netip.AddrFrom16(active46.From.As16())
	m4, err := expectMessage(mapped, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	m46, _ := expectMessage(active46, true, 0)
	if diff := cmp.Diff(m46.Data, m4.Data); diff != "" {
		t.Errorf("a mapped address changed the message:\n%s", diff)
	}
}

func TestLiberalMessage(t *testing.T) {
	m, err := liberalMessage(active46.Client, active46.Server)
	if err != nil {
		t.Fatal(err)
	}
	// NFNL_SUBSYS_CTNETLINK (1) << 8 | IPCTNL_MSG_CT_NEW (0), an update:
	// no NLM_F_CREATE.
	if m.Header.Type != 0x0100 || m.Header.Flags != netlink.Request|netlink.Acknowledge {
		t.Errorf("type %#x flags %v", m.Header.Type, m.Header.Flags)
	}
	want := unhex(t, `
02 00 00 00                 // nfgenmsg: AF_INET
34 00 01 80                 // CTA_TUPLE_ORIG
  14 00 01 80
    08 00 01 00 c0 00 02 02 //     192.0.2.2
    08 00 02 00 cb 00 71 0a //     203.0.113.10
  1c 00 02 80
    05 00 01 00 06 00 00 00
    06 00 02 00 9c 40 00 00 //     40000
    06 00 03 00 00 15 00 00 //     21
18 00 04 80                 // CTA_PROTOINFO
  14 00 01 80               //   CTA_PROTOINFO_TCP
    06 00 04 00 08 08 00 00 //     FLAGS_ORIGINAL: BE_LIBERAL, mask BE_LIBERAL
    06 00 05 00 08 08 00 00 //     FLAGS_REPLY: the same
`)
	if diff := cmp.Diff(hex.Dump(want), hex.Dump(m.Data)); diff != "" {
		t.Errorf("message (-want +got):\n%s", diff)
	}
	if _, err := liberalMessage(active46.Client, netip.MustParseAddrPort("[2001:db8::1]:21")); err == nil {
		t.Error("mixed families accepted")
	}
}

func TestExpectMessageErrors(t *testing.T) {
	mixed := active46
	mixed.From = netip.MustParseAddr("2001:db8::1")
	missing := active46
	missing.Client = netip.AddrPort{}
	port0 := active46
	port0.To = netip.AddrPortFrom(port0.To.Addr(), 0)
	for name, e := range map[string]Expectation{"both families": mixed, "address missing": missing, "port 0": port0} {
		if _, err := expectMessage(e, true, 0); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v", name, err)
		}
	}
}

// fakeCtnetlink records the requests and answers each with errno (0: an
// acknowledgement).
type fakeCtnetlink struct {
	reqs  []netlink.Message
	errno []int // per request; missing means 0
}

func (f *fakeCtnetlink) dial() *netlink.Conn {
	return nltest.Dial(func(req []netlink.Message) ([]netlink.Message, error) {
		if len(req) == 0 {
			return nil, nil
		}
		errno := 0
		if n := len(f.reqs); n < len(f.errno) {
			errno = f.errno[n]
		}
		f.reqs = append(f.reqs, req...)
		return nltest.Error(errno, req)
	})
}

func TestExpecterCreate(t *testing.T) {
	t.Run("kernel timeout", func(t *testing.T) {
		f := &fakeCtnetlink{}
		x := newExpecter(f.dial(), &ExpecterConfig{})
		if err := x.Create(active46); err != nil {
			t.Fatal(err)
		}
		if len(f.reqs) != 1 || f.reqs[0].Header.Flags&netlink.Create == 0 {
			t.Fatalf("requests %+v, want one create", f.reqs)
		}
	})
	t.Run("own timeout", func(t *testing.T) {
		f := &fakeCtnetlink{}
		x := newExpecter(f.dial(), &ExpecterConfig{Timeout: time.Minute})
		if err := x.Create(active46); err != nil {
			t.Fatal(err)
		}
		if len(f.reqs) != 2 || f.reqs[0].Header.Flags&netlink.Create == 0 || f.reqs[1].Header.Flags&(netlink.Create|netlink.Excl) != 0 {
			t.Fatalf("requests %+v, want a create and an update", f.reqs)
		}
		if !strings.HasSuffix(hex.EncodeToString(f.reqs[1].Data), "080004000000003c") {
			t.Errorf("update lacks CTA_EXPECT_TIMEOUT 60: %x", f.reqs[1].Data)
		}
	})
	t.Run("no master", func(t *testing.T) {
		f := &fakeCtnetlink{errno: []int{int(unix.ENOENT)}}
		x := newExpecter(f.dial(), &ExpecterConfig{Timeout: time.Minute})
		err := x.Create(active46)
		if !errors.Is(err, unix.ENOENT) {
			t.Fatalf("error %v, want ENOENT", err)
		}
		if !strings.Contains(err.Error(), "192.0.2.2:40000 -> 203.0.113.10:21") {
			t.Errorf("error %q does not name the control connection", err)
		}
		if len(f.reqs) != 1 {
			t.Errorf("%d requests after a failed create, want 1", len(f.reqs))
		}
	})
	t.Run("invalid", func(t *testing.T) {
		f := &fakeCtnetlink{}
		x := newExpecter(f.dial(), nil)
		if err := x.Create(Expectation{}); err == nil {
			t.Fatal("empty expectation accepted")
		}
		if len(f.reqs) != 0 {
			t.Errorf("sent %d requests for an invalid expectation", len(f.reqs))
		}
	})
}
