//go:build linux && integration

package rules

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/internal/testenv"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// The integration tests need root, ip(8) and nft(8). Each builds its own
// network namespaces (documentation addresses only) and removes them,
// even on failure.

// netns is a network namespace made for one test.
type netns struct{ testenv.NetNS }

func newNetNS(t *testing.T) netns { return netns{testenv.NewNetNS(t, "ftpalg-rules")} }

func (ns netns) ruleset(t *testing.T) string {
	t.Helper()
	return ns.Run(t, "nft", "list", "ruleset")
}

// tables lists the tables of plan p, in the order Render prints them,
// separated by a blank line as Render separates them.
func (ns netns) tables(t *testing.T, p *plan) string {
	t.Helper()
	var s []string
	for _, f := range p.families() {
		s = append(s, ns.Run(t, "nft", "list", "table", f.String(), p.table))
	}
	return strings.Join(s, "\n")
}

// do runs f on a thread inside ns (testenv.Go). Sockets f opens stay in
// ns and can be used from any goroutine.
func (ns netns) do(f func() error) error { return <-testenv.Go(ns.FD, f) }

// unrelated is a table of someone else's that Install and Remove must
// leave alone.
const unrelated = `table inet firewall {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport 22 counter accept
	}
}
table ip ftpalg_other {
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
	}
}
`

func TestIntegrationRulesInstallRemove(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	native, err := NativeQueue()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel has nft_queue: %v (otherwise the xt NFQUEUE target is used)", native)

	for _, g := range goldens {
		t.Run(g.file, func(t *testing.T) {
			ns := newNetNS(t)
			cmdIn(t, ns, unrelated, "nft", "-f", "-")
			before := ns.ruleset(t)

			cfg := g.cfg
			cfg.NetNS = ns.FD
			if err := Install(&cfg); err != nil {
				t.Fatal(err)
			}
			rendered, err := Render(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := newPlan(&cfg)
			table := ns.tables(t, p)
			if diff := cmp.Diff(listing(rendered), listing(table)); diff != "" {
				t.Errorf("installed table differs from Render (-render +nft list):\n%s", diff)
			}
			installed := ns.ruleset(t)
			if !strings.Contains(installed, "table inet firewall {") || !strings.Contains(installed, "table ip ftpalg_other {") {
				t.Errorf("Install removed an unrelated table:\n%s", installed)
			}

			// Installing again replaces the table: same ruleset.
			if err := Install(&cfg); err != nil {
				t.Fatalf("second Install: %v", err)
			}
			if diff := cmp.Diff(listing(installed), listing(ns.ruleset(t))); diff != "" {
				t.Errorf("second Install changed the ruleset (-first +second):\n%s", diff)
			}

			if err := Remove(&cfg); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(before, ns.ruleset(t)); diff != "" {
				t.Errorf("Remove did not restore the ruleset (-before +after):\n%s", diff)
			}
			if err := Remove(&cfg); err != nil {
				t.Errorf("Remove with nothing installed: %v", err)
			}
		})
	}
}

// TestIntegrationRulesSwitchLeg installs on one leg, then on the other: the
// first leg's table must go.
func TestIntegrationRulesSwitchLeg(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	ns := newNetNS(t)
	cfg := Config{Translator: Jool, NetNS: ns.FD}
	if err := Install(&cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Leg = LegIPv6
	if err := Install(&cfg); err != nil {
		t.Fatal(err)
	}
	got := ns.ruleset(t)
	if strings.Contains(got, "table ip ftpalg") || !strings.Contains(got, "table ip6 ftpalg {") {
		t.Errorf("after installing on ipv6, want only table ip6 ftpalg; got:\n%s", got)
	}
	// Remove needs no translator, only the table.
	if err := Remove(&Config{NetNS: ns.FD}); err != nil {
		t.Fatal(err)
	}
	if got := ns.ruleset(t); got != "" {
		t.Errorf("Remove left:\n%s", got)
	}
}

// TestIntegrationRulesNftFile loads the rendered files with nft -f, as an
// operator would, and checks that nft reads them as Render meant. Where
// the kernel lacks nft_queue, the queue statements are cut out first (nft
// would reject them); the rest must still load.
func TestIntegrationRulesNftFile(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	native, err := NativeQueue()
	if err != nil {
		t.Fatal(err)
	}
	queueStmt := regexp.MustCompile(` queue num [0-9-]+( bypass)?`)
	for _, g := range goldens {
		t.Run(g.file, func(t *testing.T) {
			b, err := os.ReadFile(g.file)
			if err != nil {
				t.Fatal(err)
			}
			file := string(b)
			if !native {
				file = queueStmt.ReplaceAllString(file, "")
			}
			ns := newNetNS(t)
			// Twice: the file replaces its own table.
			for range 2 {
				cmdIn(t, ns, file, "nft", "-f", "-")
			}
			p, _ := newPlan(&g.cfg)
			got := ns.tables(t, p)
			if diff := cmp.Diff(listing(file), listing(got)); diff != "" {
				t.Errorf("nft list after nft -f %s (-file +nft list):\n%s", g.file, diff)
			}
		})
	}
}

func cmdIn(t *testing.T, ns netns, stdin string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// pair is two namespaces joined by a veth pair: the client (192.0.2.2,
// 192.0.2.10-25, 2001:db8::2) and the router (192.0.2.1, 2001:db8::1),
// where the rules and the servers are.
type pair struct {
	client, router netns
}

const (
	router4 = "192.0.2.1"
	router6 = "2001:db8::1"
	client4 = "192.0.2.2"
)

// client4s are extra client addresses, to spread connections over queues
// (the queue hash covers addresses, not ports).
var client4s = func() []string {
	var a []string
	for i := 10; i < 26; i++ {
		a = append(a, fmt.Sprintf("192.0.2.%d", i))
	}
	return a
}()

func newPair(t *testing.T) pair {
	t.Helper()
	p := pair{client: newNetNS(t), router: newNetNS(t)}
	p.router.Run(t, "ip", "link", "add", "r0", "type", "veth", "peer", "name", "c0", "netns", p.client.Name)
	p.router.Run(t, "ip", "addr", "add", router4+"/24", "dev", "r0")
	p.router.Run(t, "ip", "addr", "add", router6+"/64", "dev", "r0", "nodad")
	p.router.Run(t, "ip", "link", "set", "r0", "up")
	p.client.Run(t, "ip", "addr", "add", client4+"/24", "dev", "c0")
	for _, a := range client4s {
		p.client.Run(t, "ip", "addr", "add", a+"/24", "dev", "c0")
	}
	p.client.Run(t, "ip", "addr", "add", "2001:db8::2/64", "dev", "c0", "nodad")
	p.client.Run(t, "ip", "link", "set", "c0", "up")
	return p
}

// serve listens on the router's addresses, IPv4 and IPv6, at port inside
// the router namespace and answers every connection with a line, until
// the test ends.
func (p pair) serve(t *testing.T, port int) {
	t.Helper()
	for _, addr := range []string{router4, router6} {
		var ln net.Listener
		err := p.router.do(func() (err error) {
			ln, err = net.Listen("tcp", net.JoinHostPort(addr, fmt.Sprint(port)))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "220 hello\r\n")
				c.Close()
			}
		}()
	}
}

// dial connects from the client namespace, from address from (any if
// empty), to the router's address to at port, and reads the greeting.
func (p pair) dial(from, to string, port int, timeout time.Duration) error {
	return p.client.do(func() error {
		d := net.Dialer{Timeout: timeout}
		if from != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		c, err := d.Dial("tcp", net.JoinHostPort(to, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(string(buf[:n]), "220 ") {
			return fmt.Errorf("greeting %q", buf[:n])
		}
		return nil
	})
}

// seen is a TCP packet an NFQUEUE reader was handed.
type seen struct {
	queue            uint16
	hook             uint8 // 0 prerouting, 4 postrouting
	sport, dport     uint16
	syn, ack, fin    bool
	srcAddr, dstAddr string
}

func (s seen) String() string {
	hooks := map[uint8]string{0: "prerouting", 4: "postrouting"}
	return fmt.Sprintf("queue %d %s %s:%d -> %s:%d syn=%v ack=%v fin=%v",
		s.queue, hooks[s.hook], s.srcAddr, s.sport, s.dstAddr, s.dport, s.syn, s.ack, s.fin)
}

// reader is a minimal NFQUEUE consumer: it records and accepts every
// TCP packet of the queues it reads.
type reader struct {
	mu   sync.Mutex
	got  []seen
	errs []error
}

func readQueues(t *testing.T, ns netns, first, n uint16) *reader {
	t.Helper()
	r := &reader{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for q := first; q < first+n; q++ {
		nf, err := nfqueue.Open(&nfqueue.Config{
			NetNS:        ns.FD,
			NfQueue:      q,
			MaxPacketLen: 128,
			MaxQueueLen:  64,
			Copymode:     nfqueue.NfQnlCopyPacket,
			WriteTimeout: time.Second,
		})
		if err != nil {
			t.Fatalf("open queue %d: %v", q, err)
		}
		t.Cleanup(func() { nf.Close() })
		err = nf.RegisterWithErrorFunc(ctx, func(a nfqueue.Attribute) int {
			if a.PacketID == nil {
				return 0
			}
			s, ok := parseTCP(a)
			s.queue = q
			r.mu.Lock()
			if ok {
				r.got = append(r.got, s)
			}
			r.mu.Unlock()
			if err := nf.SetVerdict(*a.PacketID, nfqueue.NfAccept); err != nil {
				r.fail(err)
			}
			return 0
		}, func(err error) int {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				r.fail(err)
			}
			return 0
		})
		if err != nil {
			t.Fatalf("register queue %d: %v", q, err)
		}
	}
	return r
}

func (r *reader) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *reader) packets() ([]seen, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.got...), append([]error(nil), r.errs...)
}

// parseTCP reads the addresses, ports and flags of an IPv4 packet, or of
// an IPv6 packet without extension headers.
func parseTCP(a nfqueue.Attribute) (seen, bool) {
	var s seen
	if a.Hook != nil {
		s.hook = *a.Hook
	}
	if a.Payload == nil {
		return s, false
	}
	b := *a.Payload
	var tcp []byte
	switch {
	case len(b) >= 20 && b[0]>>4 == 4 && b[9] == unix.IPPROTO_TCP:
		s.srcAddr, s.dstAddr = net.IP(b[12:16]).String(), net.IP(b[16:20]).String()
		tcp = b[int(b[0]&0x0f)*4:]
	case len(b) >= 40 && b[0]>>4 == 6 && b[6] == unix.IPPROTO_TCP:
		s.srcAddr, s.dstAddr = net.IP(b[8:24]).String(), net.IP(b[24:40]).String()
		tcp = b[40:]
	default:
		return s, false
	}
	if len(tcp) < 14 {
		return s, false
	}
	s.sport = uint16(tcp[0])<<8 | uint16(tcp[1])
	s.dport = uint16(tcp[2])<<8 | uint16(tcp[3])
	s.fin, s.syn, s.ack = tcp[13]&0x01 != 0, tcp[13]&0x02 != 0, tcp[13]&0x10 != 0
	return s, true
}

// TestIntegrationRulesQueuesFTPOnly sends real connections through the
// rules: those to a control port on the configured leg are queued (both
// directions, each in the chain meant for it, a connection always in one
// queue), all others are not.
func TestIntegrationRulesQueuesFTPOnly(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	tests := []struct {
		name string
		cfg  Config
		// The hooks the packets of each direction must be queued in:
		// the client's packets arrive (prerouting); the server's
		// replies are the router's own output, so only the Jool
		// ruleset's postrouting chain sees them.
		toServerHook, toClientHook int // -1: not queued
		spread                     bool
	}{
		{name: "tayga", cfg: Config{Translator: Tayga, QueueNum: 3}, toServerHook: 0, toClientHook: -1},
		{name: "tayga ipv6", cfg: Config{Translator: Tayga, Leg: LegIPv6}, toServerHook: 0, toClientHook: -1},
		{name: "jool two queues", cfg: Config{Translator: Jool, QueueNum: 5, Queues: 2, Ports: []uint16{21, 2121}}, toServerHook: 0, toClientHook: 4, spread: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPair(t)
			cfg := tt.cfg
			cfg.NetNS = p.router.FD
			if err := Install(&cfg); err != nil {
				t.Fatal(err)
			}
			r := readQueues(t, p.router, cfg.QueueNum, max(cfg.Queues, 1))
			for _, port := range []int{21, 80, 2121} {
				p.serve(t, port)
			}
			for _, to := range []string{router4, router6} {
				for _, port := range []int{21, 80, 2121} {
					if err := p.dial("", to, port, 3*time.Second); err != nil {
						t.Fatalf("connect to %s port %d: %v", to, port, err)
					}
				}
			}
			if tt.spread {
				for _, from := range client4s {
					if err := p.dial(from, router4, 21, 3*time.Second); err != nil {
						t.Fatalf("connect from %s: %v", from, err)
					}
				}
			}
			// No wait for the last ACKs and FINs: the reader records a
			// packet before its verdict, so every SYN and SYN-ACK the
			// checks need is recorded once the connections are up.
			got, errs := r.packets()
			for _, err := range errs {
				t.Errorf("queue reader: %v", err)
			}

			ports := map[uint16]bool{} // the configured control ports
			for _, port := range cfg.Ports {
				ports[port] = true
			}
			if len(cfg.Ports) == 0 {
				ports[21] = true
			}
			leg := router4
			if cfg.Leg == LegIPv6 {
				leg = router6
			}
			synToServer, synAckToClient := map[uint16]bool{}, map[uint16]bool{}
			queueOf := map[string]uint16{} // per connection
			queuesUsed := map[uint16]bool{}
			for _, s := range got {
				server, client, wantHook := s.dport, s.sport, tt.toServerHook
				serverAddr, clientAddr := s.dstAddr, s.srcAddr
				if s.srcAddr == router4 || s.srcAddr == router6 {
					server, client, wantHook = s.sport, s.dport, tt.toClientHook
					serverAddr, clientAddr = s.srcAddr, s.dstAddr
				}
				if !ports[server] || serverAddr != leg {
					t.Errorf("queued a packet of a connection to %s port %d: %v", serverAddr, server, s)
					continue
				}
				if int(s.hook) != wantHook {
					t.Errorf("packet queued in hook %d, want %d: %v", s.hook, wantHook, s)
				}
				conn := fmt.Sprintf("%s %d %s %d", serverAddr, server, clientAddr, client)
				if q, ok := queueOf[conn]; ok && q != s.queue {
					t.Errorf("connection %s split over queues %d and %d", conn, q, s.queue)
				}
				queueOf[conn] = s.queue
				queuesUsed[s.queue] = true
				if s.syn && !s.ack {
					synToServer[server] = true
				}
				if s.syn && s.ack {
					synAckToClient[server] = true
				}
			}
			for port := range ports {
				if !synToServer[port] {
					t.Errorf("SYN to port %d was not queued", port)
				}
				if tt.toClientHook >= 0 && !synAckToClient[port] {
					t.Errorf("SYN-ACK from port %d was not queued", port)
				}
			}
			// 17 client addresses over 2 queues: all in one would
			// happen by chance once in 65536 runs.
			if tt.spread && len(queuesUsed) != int(cfg.Queues) {
				t.Errorf("%d connections used queues %v, want all %d", len(queueOf), queuesUsed, cfg.Queues)
			}
			t.Logf("%d packets of %d connections queued, in queues %v", len(got), len(queueOf), queuesUsed)
		})
	}
}

// TestIntegrationRulesBypass runs without any queue reader: with Bypass
// the kernel lets FTP control packets through (fail-open), without it
// drops them (fail-closed). Other traffic passes either way.
func TestIntegrationRulesBypass(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	for _, bypass := range []bool{true, false} {
		t.Run(fmt.Sprintf("bypass=%v", bypass), func(t *testing.T) {
			p := newPair(t)
			if err := Install(&Config{Translator: Tayga, QueueNum: 9, Bypass: bypass, NetNS: p.router.FD}); err != nil {
				t.Fatal(err)
			}
			p.serve(t, 21)
			p.serve(t, 80)
			if err := p.dial("", router4, 80, 3*time.Second); err != nil {
				t.Errorf("port 80: %v", err)
			}
			err := p.dial("", router4, 21, 500*time.Millisecond)
			switch {
			case bypass && err != nil:
				t.Errorf("port 21 with bypass and no daemon: %v; want it to pass", err)
			case !bypass && err == nil:
				t.Errorf("port 21 without bypass and no daemon: connected; want the SYN dropped")
			case !bypass:
				t.Logf("port 21 without bypass: %v (as it should)", err)
			}
		})
	}
}

// TestIntegrationReadmeFirewall loads the firewall example of README.md
// ("Pinholes") with nft -f, beside the ruleset with helpers, so the
// example an operator copies stays valid.
func TestIntegrationReadmeFirewall(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var example string
	for _, block := range strings.Split(string(b), "```")[1:] {
		if strings.HasPrefix(strings.TrimSpace(block), "table inet filter {") {
			example = block
		}
	}
	if example == "" {
		t.Fatal(`README.md has no example starting "table inet filter {"`)
	}
	ns := newNetNS(t)
	cmdIn(t, ns, example, "nft", "-f", "-")
	if err := Install(&Config{Translator: Tayga, Helper: true, Scope: exampleTaygaScope, NetNS: ns.FD}); err != nil {
		t.Fatal(err)
	}
	got := ns.ruleset(t)
	for _, want := range []string{"ct state established,related accept", `ct helper set "ftpalg"`, `ct helper set "ftp"`} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
}
