//go:build linux && integration

package conntrackx

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/internal/testenv"
	"github.com/ftpalg/ftpalg/rules"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// fwLab is c4 -- nat (Tayga, a default-drop forward firewall) -- s6, the
// 46 direction of the test lab (test/README.md), in namespaces of its own.
type fwLab struct {
	t           *testing.T
	c4, nat, s6 string
	fd          map[string]int // namespace file descriptors
}

// Addresses of the lab. S4 is Tayga's static map of the server S6; the
// client is seen on the IPv6 side as Pref::C4.
var (
	labC4     = netip.MustParseAddr("192.0.2.2")
	labS4     = netip.MustParseAddr("203.0.113.10")
	labS6     = netip.MustParseAddr("2001:db8:6::10")
	labPrefC4 = netip.MustParseAddr("2001:db8:64::c000:202")
)

const fwLabTaygaConf = `tun-device nat64
ipv4-addr 198.51.100.1
ipv6-addr 2001:db8:ffff::1
prefix 2001:db8:64::/96
dynamic-pool 198.51.100.0/24
map 203.0.113.10 2001:db8:6::10
`

// firewall is the operator's own: new control connections (port 21, and
// the test's 2121 and 2122) and established or related traffic pass,
// everything else is dropped.
const firewall = `table inet fw {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		tcp dport { 21, 2121, 2122 } ct state new accept
		counter
	}
}
`

func (l *fwLab) run(args ...string) string {
	l.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (l *fwLab) ip(ns string, args ...string) { l.run(append([]string{"ip", "-n", ns}, args...)...) }

func newFwLab(t *testing.T, tayga string) *fwLab {
	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	l := &fwLab{t: t, c4: "ftpx-c4-" + id, nat: "ftpx-nat-" + id, s6: "ftpx-s6-" + id, fd: map[string]int{}}
	var procs []*exec.Cmd
	t.Cleanup(func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
		for _, ns := range []string{l.c4, l.nat, l.s6} {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	for _, ns := range []string{l.c4, l.nat, l.s6} {
		l.run("ip", "netns", "add", ns)
		l.run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
		l.ip(ns, "link", "set", "lo", "up")
		l.fd[ns] = nsFD(t, ns)
	}
	l.run("ip", "netns", "exec", l.nat, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	l.ip(l.nat, "link", "add", "vc4", "type", "veth", "peer", "name", "eth0", "netns", l.c4)
	l.ip(l.nat, "link", "add", "vs6", "type", "veth", "peer", "name", "eth0", "netns", l.s6)
	l.ip(l.nat, "addr", "add", "192.0.2.1/24", "dev", "vc4")
	l.ip(l.nat, "addr", "add", "2001:db8:6::1/64", "dev", "vs6")
	l.ip(l.c4, "addr", "add", labC4.String()+"/24", "dev", "eth0")
	l.ip(l.s6, "addr", "add", labS6.String()+"/64", "dev", "eth0")
	for _, d := range [][2]string{{l.nat, "vc4"}, {l.nat, "vs6"}, {l.c4, "eth0"}, {l.s6, "eth0"}} {
		l.ip(d[0], "link", "set", d[1], "up")
	}
	l.ip(l.c4, "route", "add", "203.0.113.0/24", "via", "192.0.2.1")
	l.ip(l.s6, "-6", "route", "add", "2001:db8:64::/96", "via", "2001:db8:6::1")

	dir := t.TempDir()
	conf := filepath.Join(dir, "tayga.conf")
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(fwLabTaygaConf+"data-dir "+data+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l.run("ip", "netns", "exec", l.nat, tayga, "--config", conf, "--mktun")
	l.ip(l.nat, "link", "set", "nat64", "up")
	l.ip(l.nat, "route", "add", labS4.String()+"/32", "dev", "nat64")
	l.ip(l.nat, "route", "add", "198.51.100.0/24", "dev", "nat64")
	l.ip(l.nat, "-6", "route", "add", "2001:db8:64::/96", "dev", "nat64")
	cmd := exec.Command("ip", "netns", "exec", l.nat, tayga, "--config", conf, "--nodetach")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	procs = append(procs, cmd)
	return l
}

func (l *fwLab) listen(t *testing.T, ns string, ap netip.AddrPort) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := <-testenv.Go(l.fd[ns], func() (err error) {
		ln, err = net.Listen("tcp", ap.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func (l *fwLab) dial(ns string, from netip.Addr, to netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := <-testenv.Go(l.fd[ns], func() (err error) {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: from.AsSlice()}}
		c, err = d.Dial("tcp", to.String())
		return err
	})
	return c, err
}

// accept waits up to timeout for a connection on ln.
func accept(ln net.Listener, timeout time.Duration) (net.Conn, error) {
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(timeout))
	return ln.Accept()
}

// ftpPair is a control connection of the lab, without any FTP server: the
// test writes the lines each end sends, one segment each, in lockstep.
type ftpPair struct {
	t              *testing.T
	client, server net.Conn
	cr, sr         *bufio.Reader
}

// line writes line (with CRLF) on from and reads it at the other end.
func (p *ftpPair) line(from net.Conn, to *bufio.Reader, toConn net.Conn, line string) {
	p.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	from.SetDeadline(deadline)
	toConn.SetDeadline(deadline)
	if _, err := io.WriteString(from, line+"\r\n"); err != nil {
		p.t.Fatalf("send %q: %v", line, err)
	}
	got, err := to.ReadString('\n')
	if err != nil || got != line+"\r\n" {
		p.t.Fatalf("sent %q, the other end read %q (%v)", line, got, err)
	}
}

// exchange sends a command and its reply.
func (p *ftpPair) exchange(cmd, reply string) {
	p.t.Helper()
	p.line(p.client, p.sr, p.server, cmd)
	p.line(p.server, p.cr, p.client, reply)
}

// control opens a control connection from C4 to S4:port, which Tayga
// delivers to S6:port, and exchanges the greeting and a first command:
// the kernel's FTP helper skips the first segment of each direction.
func (l *fwLab) control(t *testing.T, port uint16) *ftpPair {
	t.Helper()
	ln := l.listen(t, l.s6, netip.AddrPortFrom(labS6, port))
	var c net.Conn
	var err error
	// Tayga may take a moment to come up.
	for start := time.Now(); time.Since(start) < 10*time.Second; {
		if c, err = l.dial(l.c4, labC4, netip.AddrPortFrom(labS4, port), 2*time.Second); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("control connection to %v:%d: %v", labS4, port, err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := accept(ln, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	p := &ftpPair{t: t, client: c, server: s, cr: bufio.NewReader(c), sr: bufio.NewReader(s)}
	p.line(s, p.cr, c, "220 ready")
	p.exchange("USER anonymous", "331 password")
	return p
}

// expectations lists the kernel's expectations as "src -> dst:port".
func expectations(t *testing.T, ct *conntrack.Conn) []string {
	t.Helper()
	exps, err := ct.DumpExpect()
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, e := range exps {
		s = append(s, fmt.Sprintf("%s -> %s timeout %d", e.Tuple.IP.SourceAddress,
			netip.AddrPortFrom(e.Tuple.IP.DestinationAddress, e.Tuple.Proto.DestinationPort), e.Timeout))
	}
	return s
}

// hasExpectation reports whether want ("src -> dst:port") is among the
// expectations.
func hasExpectation(exps []string, want string) bool {
	for _, e := range exps {
		if strings.HasPrefix(e, want+" ") {
			return true
		}
	}
	return false
}

// transfer checks that a data connection carries bytes both ways.
func transfer(t *testing.T, a, b net.Conn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	if _, err := io.WriteString(a, "data\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "data\n" {
		t.Fatalf("data connection: read %q, %v", buf, err)
	}
}

// ftp4 attaches the kernel's FTP helper to IPv4 control connections to
// port 2121, to show what it does on the leg the daemon rewrites.
const ftp4 = `table ip ftpx_ftp4 {
	ct helper ftp {
		type "ftp" protocol tcp
		l3proto ip
	}
	chain helper {
		type filter hook prerouting priority mangle; policy accept;
		tcp dport 2121 ct state new ct helper set "ftp"
	}
}
`

// TestIntegrationExpectTayga runs FTP-like control connections through
// Tayga, ftpalg's rules with helpers (rules.Config.Helper) and a
// default-drop forward firewall, and checks which data connections pass:
// on the IPv6 leg, those the kernel's FTP helper expects; on the IPv4 leg
// (the one the daemon rewrites), those the Expecter opened.
//
// No ftpalg daemon runs: the rules queue with bypass, so control packets
// pass unchanged; the test sends the text the IPv6 leg would carry, and
// creates the IPv4 leg's expectations as the daemon would.
func TestIntegrationExpectTayga(t *testing.T) {
	testenv.NeedRoot(t, "ip")
	tayga := needTayga(t)
	if _, err := exec.LookPath("nft"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("needs nft(8)")
		}
		t.Skip("needs nft(8)")
	}
	l := newFwLab(t, tayga)
	natFD := l.fd[l.nat]
	// The scope 'ftpalg run' finds in the lab's tayga.conf.
	var scope []netip.Prefix
	for _, p := range []string{"198.51.100.0/24", "203.0.113.10/32", "2001:db8:6::10/128", "2001:db8:64::/96", "2001:db8:ffff::1/128"} {
		scope = append(scope, netip.MustParsePrefix(p))
	}
	if err := rules.Install(&rules.Config{Translator: rules.Tayga, Helper: true, Bypass: true, Scope: scope, NetNS: natFD}); err != nil {
		t.Fatal(err)
	}
	for _, script := range []string{firewall, ftp4} {
		cmd := exec.Command("ip", "netns", "exec", l.nat, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft -f: %v\n%s\n%s", err, out, script)
		}
	}
	ct, err := conntrack.Dial(&netlink.Config{NetNS: natFD})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	x, err := DialExpecter(&ExpecterConfig{NetNS: natFD, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()

	p := l.control(t, 21)
	ctl := netip.MustParseAddrPort(p.client.LocalAddr().String())
	t.Logf("control connection %v -> %v:21 (IPv6 leg %v -> %v)", ctl, labS4, labPrefC4, labS6)
	pinhole := func(from netip.Addr, to netip.AddrPort) Expectation {
		return Expectation{Client: ctl, Server: netip.AddrPortFrom(labS4, 21), From: from, To: to}
	}
	checkExpectation := func(t *testing.T, want string) {
		t.Helper()
		exps := expectations(t, ct)
		if !hasExpectation(exps, want) {
			t.Fatalf("no expectation %s; have %q", want, exps)
		}
		for _, s := range exps {
			if strings.HasPrefix(s, want+" ") && !strings.HasSuffix(s, " timeout 60") && !strings.HasSuffix(s, " timeout 59") {
				t.Errorf("expectation %s, want a timeout of 60 s", s)
			}
		}
	}
	eprt := func(port int) string { return fmt.Sprintf("EPRT |2|%v|%d|", labPrefC4, port) }

	t.Run("passive 46", func(t *testing.T) {
		p.exchange("EPSV", "229 Entering Extended Passive Mode (|||50001|)")
		exps := expectations(t, ct)
		if want := fmt.Sprintf("%v -> [%v]:50001", labPrefC4, labS6); !hasExpectation(exps, want) {
			t.Errorf("the IPv6 leg's FTP helper did not expect %s; have %q", want, exps)
		}
		if bad := fmt.Sprintf("%v -> %v:50001", labC4, labS4); hasExpectation(exps, bad) {
			t.Errorf("the IPv4 leg's carrier helper expected %s: it should never act", bad)
		}
		e := pinhole(labC4, netip.AddrPortFrom(labS4, 50001))
		if err := x.Create(e); err != nil {
			t.Fatalf("Create(%v): %v", e, err)
		}
		checkExpectation(t, fmt.Sprintf("%v -> %v:50001", labC4, labS4))
		ln := l.listen(t, l.s6, netip.AddrPortFrom(labS6, 50001))
		c, err := l.dial(l.c4, labC4, netip.AddrPortFrom(labS4, 50001), 3*time.Second)
		if err != nil {
			t.Fatalf("passive data connection: %v", err)
		}
		defer c.Close()
		s, err := accept(ln, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		transfer(t, c, s)
	})

	t.Run("active 46 without the pinhole", func(t *testing.T) {
		p.exchange(eprt(50003), "200 EPRT command successful")
		exps := expectations(t, ct)
		if want := fmt.Sprintf("%v -> [%v]:50003", labS6, labPrefC4); !hasExpectation(exps, want) {
			t.Errorf("no IPv6 expectation %s; have %q", want, exps)
		}
		ln := l.listen(t, l.c4, netip.AddrPortFrom(labC4, 50003))
		c, err := l.dial(l.s6, labS6, netip.AddrPortFrom(labPrefC4, 50003), 2*time.Second)
		if err == nil {
			c.Close()
			t.Fatal("the data connection passed the firewall without an IPv4 expectation")
		}
		if s, err := accept(ln, 100*time.Millisecond); err == nil {
			s.Close()
			t.Fatal("the client accepted a data connection the server could not make")
		}
		t.Logf("without the pinhole: %v", err)
	})

	t.Run("active 46 with the pinhole", func(t *testing.T) {
		// The daemon creates the expectation while the rewritten EPRT
		// waits in the queue.
		e := pinhole(labS4, netip.AddrPortFrom(labC4, 50004))
		if err := x.Create(e); err != nil {
			t.Fatalf("Create(%v): %v", e, err)
		}
		// Again: an identical expectation is refreshed, not an error.
		if err := x.Create(e); err != nil {
			t.Fatalf("second Create(%v): %v", e, err)
		}
		checkExpectation(t, fmt.Sprintf("%v -> %v:50004", labS4, labC4))
		p.exchange(eprt(50004), "200 EPRT command successful")
		ln := l.listen(t, l.c4, netip.AddrPortFrom(labC4, 50004))
		c, err := l.dial(l.s6, labS6, netip.AddrPortFrom(labPrefC4, 50004), 3*time.Second)
		if err != nil {
			t.Fatalf("active data connection with the pinhole: %v", err)
		}
		defer c.Close()
		s, err := accept(ln, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		transfer(t, c, s)
		flows, err := ct.Dump(nil)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, f := range flows {
			if f.TupleOrig.IP.DestinationAddress == labC4 && f.TupleOrig.Proto.DestinationPort == 50004 {
				found = true
				if !f.Status.Expected() {
					t.Errorf("data connection %v is not marked expected (status %v)", f.TupleOrig, f.Status)
				}
				t.Logf("IPv4 data connection %v: status %v, helper %q", f.TupleOrig, f.Status, f.Helper.Name)
			}
		}
		if !found {
			t.Error("data connection not in conntrack")
		}
	})

	t.Run("liberal", func(t *testing.T) {
		if err := x.Liberal(ctl, netip.AddrPortFrom(labS4, 21)); err != nil {
			t.Fatal(err)
		}
		flows, err := ct.Dump(nil)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, f := range flows {
			if f.TupleOrig.IP.SourceAddress == labC4 && f.TupleOrig.Proto.SourcePort == ctl.Port() && f.TupleOrig.Proto.DestinationPort == 21 {
				found = true
				// IP_CT_TCP_FLAG_BE_LIBERAL; ti-mo/conntrack reads struct
				// nf_ct_tcp_flags (flags, mask) as one big-endian uint16.
				const liberal = 0x08
				if tcp := f.ProtoInfo.TCP; tcp == nil || tcp.OriginalFlags>>8&liberal == 0 || tcp.ReplyFlags>>8&liberal == 0 {
					t.Errorf("control connection %v not liberal: %+v", f.TupleOrig, f.ProtoInfo.TCP)
				}
			}
		}
		if !found {
			t.Error("control connection not in conntrack")
		}
		if err := x.Liberal(netip.AddrPortFrom(labC4, 1), netip.AddrPortFrom(labS4, 21)); !errors.Is(err, unix.ENOENT) {
			t.Errorf("Liberal for a connection not in conntrack: %v, want ENOENT", err)
		}
	})

	t.Run("the kernel's FTP helper drops EPRT |2| on IPv4", func(t *testing.T) {
		// Why the rewritten leg gets a carrier helper: the ALG turns a
		// 46 client's PORT into EPRT |2|Pref::C4|p| on the IPv4 leg.
		// nf_conntrack_ftp matches "EPRT", fails to parse a family-2
		// address on an IPv4 connection and drops the segment, and
		// every retransmission of it.
		q := l.control(t, 2121)
		q.client.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(q.client, eprt(50009)+"\r\n"); err != nil {
			t.Fatal(err)
		}
		q.server.SetDeadline(time.Now().Add(1500 * time.Millisecond))
		if got, err := q.sr.ReadString('\n'); err == nil {
			t.Errorf("the server read %q: the kernel's FTP helper no longer drops EPRT |2| on IPv4", got)
		}
	})

	t.Run("errors", func(t *testing.T) {
		// A control connection without a helper: nothing attaches one
		// to port 2122.
		other := l.control(t, 2122)
		e := Expectation{
			Client: netip.MustParseAddrPort(other.client.LocalAddr().String()),
			Server: netip.AddrPortFrom(labS4, 2122),
			From:   labS4,
			To:     netip.AddrPortFrom(labC4, 50005),
		}
		if err := x.Create(e); !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("Create for a master without helper: %v, want EOPNOTSUPP", err)
		}
		e.Client = netip.AddrPortFrom(labC4, 1)
		if err := x.Create(e); !errors.Is(err, unix.ENOENT) {
			t.Errorf("Create for a connection not in conntrack: %v, want ENOENT", err)
		}
	})
}
