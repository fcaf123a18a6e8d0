//go:build linux && integration

package conntrackx

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/ftpalg/ftpalg/mangle/tayga"
	"github.com/ftpalg/ftpalg/test/testenv"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
)

// The child process: the test binary re-executed inside a namespace (by
// "ip netns exec") to listen or dial there, so that no goroutine of the
// test ever switches namespace.
const childEnv = "FTPALG_TAYGA_TEST_CHILD"

// TestTaygaChildProcess is not a test: it is the child process's entry point.
//
//	listen ADDR: accept TCP connections, print each peer's address, hold them
//	dial LOCAL REMOTE [LOCAL REMOTE...]: connect from each LOCAL, print
//	"connected LOCAL", hold the connections
//
// Both run until stdin closes.
func TestTaygaChildProcess(t *testing.T) {
	args := strings.Fields(os.Getenv(childEnv))
	if len(args) == 0 {
		return
	}
	defer os.Exit(0)
	hold := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(hold) }()
	var conns []net.Conn
	switch args[0] {
	case "listen":
		ln, err := net.Listen("tcp", args[1])
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("listening")
		go func() {
			var held []net.Conn
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
				fmt.Println("peer", c.RemoteAddr())
			}
		}()
	case "dial":
		for i := 1; i+1 < len(args); i += 2 {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(args[i])), Timeout: 10 * time.Second}
			c, err := d.Dial("tcp", args[i+1])
			if err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			conns = append(conns, c)
			fmt.Println("connected", args[i])
		}
	}
	<-hold
}

// labNet is c6 -- nat (Tayga) -- s4 (as test/README.md's lab) in namespaces of its own.
type labNet struct {
	t        *testing.T
	nat, c6  string
	s4       string
	dir      string
	procs    []*exec.Cmd
	stdins   []io.Closer
	taygaLog *strings.Builder
}

// needTayga finds the tayga binary, installing Debian's package if it is
// missing and we may (root).
func needTayga(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("tayga"); err == nil {
		return p
	}
	if out, err := exec.Command("apt-get", "install", "-y", "tayga").CombinedOutput(); err != nil {
		t.Logf("apt-get install tayga: %v\n%s", err, out)
	}
	p, err := exec.LookPath("tayga")
	if err != nil {
		testenv.SkipOrFail(t, "tayga not installed and apt-get install tayga failed")
	}
	return p
}

func (l *labNet) run(args ...string) {
	l.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (l *labNet) ip(ns string, args ...string) { l.run(append([]string{"ip", "-n", ns}, args...)...) }

// start runs a command in namespace ns and returns a reader of its stdout.
func (l *labNet) start(ns string, env []string, args ...string) *bufio.Reader {
	l.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.procs = append(l.procs, cmd)
	l.stdins = append(l.stdins, in)
	return bufio.NewReader(out)
}

// expect reads lines until one starts with prefix (or fails on "error").
func expect(t *testing.T, r *bufio.Reader, prefix string) string {
	t.Helper()
	type line struct {
		s   string
		err error
	}
	ch := make(chan line, 1)
	go func() {
		for {
			s, err := r.ReadString('\n')
			if err != nil || strings.HasPrefix(s, prefix) || strings.HasPrefix(s, "error") {
				ch <- line{strings.TrimSpace(s), err}
				return
			}
		}
	}()
	select {
	case l := <-ch:
		if l.err != nil || !strings.HasPrefix(l.s, prefix) {
			t.Fatalf("child: want %q, got %q (%v)", prefix, l.s, l.err)
		}
		return strings.TrimSpace(strings.TrimPrefix(l.s, prefix))
	case <-time.After(20 * time.Second):
		t.Fatalf("child: no %q within 20s", prefix)
	}
	return ""
}

func (l *labNet) cleanup() {
	for _, c := range l.stdins {
		c.Close()
	}
	for _, p := range l.procs {
		if p.Process != nil {
			p.Process.Kill()
			p.Wait()
		}
	}
	for _, ns := range []string{l.nat, l.c6, l.s4} {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

const labTaygaConf = `tun-device nat64
ipv4-addr 203.0.113.1
ipv6-addr 2001:db8:ffff::1
prefix 2001:db8:64::/96
dynamic-pool 203.0.113.0/24
map 192.0.2.99 2001:db8:6::99
`

// newLabNet builds the namespaces, starts Tayga in nat and returns once
// it forwards.
func newLabNet(t *testing.T, taygaBin string) *labNet {
	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	l := &labNet{t: t, nat: "ftpt-nat-" + id, c6: "ftpt-c6-" + id, s4: "ftpt-s4-" + id, dir: t.TempDir()}
	t.Cleanup(l.cleanup)
	for _, ns := range []string{l.nat, l.c6, l.s4} {
		l.run("ip", "netns", "add", ns)
		l.run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
		l.ip(ns, "link", "set", "lo", "up")
	}
	l.run("ip", "netns", "exec", l.nat, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	l.ip(l.nat, "link", "add", "vc6", "type", "veth", "peer", "name", "eth0", "netns", l.c6)
	l.ip(l.nat, "link", "add", "vs4", "type", "veth", "peer", "name", "eth0", "netns", l.s4)
	l.ip(l.nat, "addr", "add", "2001:db8:6::1/64", "dev", "vc6")
	l.ip(l.nat, "addr", "add", "198.51.100.1/24", "dev", "vs4")
	l.ip(l.c6, "addr", "add", "2001:db8:6::2/64", "dev", "eth0")
	l.ip(l.c6, "addr", "add", "2001:db8:6::3/64", "dev", "eth0")
	l.ip(l.c6, "addr", "add", "2001:db8:6:0:abcd:ef01:2345:6789/64", "dev", "eth0")
	l.ip(l.c6, "addr", "add", "2001:db8:6::99/64", "dev", "eth0")
	l.ip(l.s4, "addr", "add", "198.51.100.2/24", "dev", "eth0")
	for _, d := range [][2]string{{l.nat, "vc6"}, {l.nat, "vs4"}, {l.c6, "eth0"}, {l.s4, "eth0"}} {
		l.ip(d[0], "link", "set", d[1], "up")
	}
	l.ip(l.c6, "-6", "route", "add", "2001:db8:64::/96", "via", "2001:db8:6::1")
	l.ip(l.s4, "route", "add", "203.0.113.0/24", "via", "198.51.100.1")
	l.ip(l.s4, "route", "add", "192.0.2.99/32", "via", "198.51.100.1")

	// Conntrack tracks in a namespace only once a rule there uses it.
	l.run("ip", "netns", "exec", l.nat, "nft", "add table inet ftpt; add chain inet ftpt ctchain { type filter hook forward priority 0; policy accept; }; add rule inet ftpt ctchain ct state established,related accept")

	conf := filepath.Join(l.dir, "tayga.conf")
	data := filepath.Join(l.dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(labTaygaConf+"data-dir "+data+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l.run("ip", "netns", "exec", l.nat, taygaBin, "--config", conf, "--mktun")
	l.ip(l.nat, "link", "set", "nat64", "up")
	l.ip(l.nat, "route", "add", "203.0.113.0/24", "dev", "nat64")
	l.ip(l.nat, "route", "add", "192.0.2.99/32", "dev", "nat64")
	l.ip(l.nat, "-6", "route", "add", "2001:db8:64::/96", "dev", "nat64")
	cmd := exec.Command("ip", "netns", "exec", l.nat, taygaBin, "--config", conf, "--nodetach")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l.procs = append(l.procs, cmd)
	return l
}

func nsFD(t *testing.T, ns string) int {
	f, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

func TestIntegrationTaygaConntrack(t *testing.T) {
	testenv.NeedRoot(t, "ip")
	taygaBin := needTayga(t)
	l := newLabNet(t, taygaBin)

	server := netip.MustParseAddrPort("198.51.100.2:21")
	server6 := netip.MustParseAddrPort("[2001:db8:64::198.51.100.2]:21")
	clients := []netip.AddrPort{
		netip.MustParseAddrPort("[2001:db8:6::2]:40021"),
		netip.MustParseAddrPort("[2001:db8:6::3]:40022"),
		netip.MustParseAddrPort("[2001:db8:6:0:abcd:ef01:2345:6789]:40023"),
		netip.MustParseAddrPort("[2001:db8:6::99]:40024"), // statically mapped
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	lst := l.start(l.s4, []string{childEnv + "=listen " + server.String()}, self, "-test.run=^TestTaygaChildProcess$")
	expect(t, lst, "listening")

	cfg, err := tayga.ParseConfig(strings.NewReader(labTaygaConf))
	if err != nil {
		t.Fatal(err)
	}
	predictor := tayga.NewMapper(cfg, nil)

	// A fourth pool client whose hash lands on the first client's address:
	// Tayga must move on to the next free one, as PredictDynamic says.
	fresh := tayga.NewMapper(cfg, nil)
	first := fresh.PredictDynamic(clients[0].Addr())
	var clash netip.Addr
	for n := 0x100; n < 0x10000 && !clash.IsValid(); n++ {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 6, 14: byte(n >> 8), 15: byte(n)})
		if fresh.PredictDynamic(a) == first {
			clash = a
		}
	}
	if !clash.IsValid() {
		t.Fatal("no IPv6 address hashes onto the first client's pool address")
	}
	l.ip(l.c6, "addr", "add", clash.String()+"/64", "dev", "eth0")
	clients = append(clients[:3], netip.AddrPortFrom(clash, 40025), clients[3])
	const nPool = 4

	// One client at a time so that Tayga's assignment order is known.
	peers := map[netip.AddrPort]netip.Addr{}
	for i, c := range clients {
		predicted := predictor.PredictDynamic(c.Addr())
		dial := l.start(l.c6, []string{fmt.Sprintf("%s=dial %s %s", childEnv, c, server6)}, self, "-test.run=^TestTaygaChildProcess$")
		expect(t, dial, "connected")
		peer := netip.MustParseAddrPort(expect(t, lst, "peer"))
		if peer.Port() != c.Port() {
			t.Errorf("client %v arrived from port %d: Tayga should keep ports", c, peer.Port())
		}
		peers[c] = peer.Addr()
		if i < nPool {
			if predicted != peer.Addr() {
				t.Errorf("PredictDynamic(%v) = %v, Tayga assigned %v", c.Addr(), predicted, peer.Addr())
			}
			predictor.Learn(peer.Addr(), c.Addr())
		} else if peer.Addr() != netip.MustParseAddr("192.0.2.99") {
			t.Errorf("statically mapped client %v arrived as %v", c, peer.Addr())
		}
		t.Logf("%v -> %v (predicted %v)", c, peer, predicted)
	}

	fd := nsFD(t, l.nat)
	variants := []struct {
		name string
		cfg  TaygaConntrackConfig
	}{
		{"dump", TaygaConntrackConfig{Prefix: cfg.Prefix, NetNS: fd}},
		{"pool", TaygaConntrackConfig{Prefix: cfg.Prefix, Pool: cfg.DynamicPool, NetNS: fd}},
		{"guess", TaygaConntrackConfig{Prefix: cfg.Prefix, Pool: cfg.DynamicPool, NetNS: fd, Guess: predictor.PredictDynamic}},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			tc, err := DialTaygaConntrack(&v.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer tc.Close()
			for _, c := range clients[:nPool] {
				p4 := peers[c]
				start := time.Now()
				got4, ok := tc.Lookup4(c, server6)
				d4 := time.Since(start)
				if !ok || got4 != p4 {
					t.Errorf("Lookup4(%v, %v) = %v, %v; want %v", c, server6, got4, ok, p4)
				}
				start = time.Now()
				got6, ok := tc.Lookup6(netip.AddrPortFrom(p4, c.Port()), server)
				d6 := time.Since(start)
				if !ok || got6 != c.Addr() {
					t.Errorf("Lookup6(%v:%d, %v) = %v, %v; want %v", p4, c.Port(), server, got6, ok, c.Addr())
				}
				t.Logf("%v: Lookup4 %v, Lookup6 %v", c.Addr(), d4, d6)
			}
			// A connection not in the table yet (as when the ALG sees
			// its SYN on the IPv6 leg before Tayga does): the host's
			// other flows tell its binding.
			c0, p0 := clients[0], peers[clients[0]]
			if a, ok := tc.Lookup4(netip.AddrPortFrom(c0.Addr(), 1), server6); !ok || a != p0 {
				t.Errorf("Lookup4 for a new connection of %v = %v, %v; want %v", c0.Addr(), a, ok, p0)
			}
			if a, ok := tc.Lookup6(netip.AddrPortFrom(p0, 1), netip.MustParseAddrPort("198.51.100.3:21")); !ok || a != c0.Addr() {
				t.Errorf("Lookup6 for a new connection of %v = %v, %v; want %v", p0, a, ok, c0.Addr())
			}
			// A host with no flows at all.
			if a, ok := tc.Lookup4(netip.MustParseAddrPort("[2001:db8:6::7]:40000"), server6); ok {
				t.Errorf("Lookup4 for a host without flows = %v", a)
			}
			if a, ok := tc.Lookup6(netip.MustParseAddrPort("203.0.113.7:40000"), server); ok {
				t.Errorf("Lookup6 for an unused pool address = %v", a)
			}
		})
	}

	// A flood's spoofed SYN left an unassured flow with the same ports to
	// the same server from another IPv6 host: the assured flow still
	// answers (a dump of every flow found two hosts and answered nothing).
	ct, err := conntrack.Dial(&netlink.Config{NetNS: fd})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	c0, p0 := clients[0], peers[clients[0]]
	spoofed := conntrack.NewFlow(6, 0, netip.MustParseAddr("2001:db8:6::77"), server6.Addr(), c0.Port(), server6.Port(), 60, 0)
	if err := ct.Create(spoofed); err != nil {
		t.Fatal(err)
	}
	defer ct.Delete(spoofed)
	for _, v := range variants[:2] {
		tc, err := DialTaygaConntrack(&v.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := tc.Lookup6(netip.AddrPortFrom(p0, c0.Port()), server); !ok || a != c0.Addr() {
			t.Errorf("%s: Lookup6(%v:%d, %v) beside an unassured flow from another host = %v, %v; want %v", v.name, p0, c0.Port(), server, a, ok, c0.Addr())
		}
		tc.Close()
	}

	// The whole path: a mapper backed by conntrack classifies both legs
	// of a pool client it has never seen.
	tc, err := DialTaygaConntrack(&TaygaConntrackConfig{Prefix: cfg.Prefix, Pool: cfg.DynamicPool, NetNS: fd})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	m := tayga.NewMapper(cfg, tc)
	c := clients[2]
	s, ok := m.Classify(netip.AddrPortFrom(peers[c], c.Port()), server)
	if !ok || s.Kind != mangle.Kind64 || s.Client6 != c.Addr() || s.Server6 != server6.Addr() {
		t.Errorf("Classify on the IPv4 leg = %+v, %v", s, ok)
	}
	m2 := tayga.NewMapper(cfg, tc)
	s, ok = m2.Classify(clients[1], server6)
	if !ok || s.Kind != mangle.Kind64 || s.Client4 != peers[clients[1]] || s.Server4 != server.Addr() {
		t.Errorf("Classify on the IPv6 leg = %+v, %v", s, ok)
	}
}
