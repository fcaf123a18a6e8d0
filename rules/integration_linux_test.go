//go:build linux

package rules

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// The integration tests need root, ip(8) and nft(8). Each builds its own
// network namespaces (documentation addresses only) and removes them,
// even on failure.

func needRoot(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	} else {
		for _, tool := range []string{"ip", "nft"} {
			if _, err := exec.LookPath(tool); err != nil {
				why = "needs " + tool + "(8)"
			}
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

var nsSeq atomic.Int32

// netns is a network namespace made for one test.
type netns struct {
	name string
	fd   int
}

func newNetNS(t *testing.T) netns {
	t.Helper()
	name := fmt.Sprintf("ftpalg-rules-%d-%d", os.Getpid(), nsSeq.Add(1))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ns := netns{name: name, fd: int(f.Fd())}
	ns.run(t, "ip", "link", "set", "lo", "up")
	return ns
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (ns netns) run(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, append([]string{"ip", "netns", "exec", ns.name}, args...)...)
}

func (ns netns) ruleset(t *testing.T) string {
	t.Helper()
	return ns.run(t, "nft", "list", "ruleset")
}

// do runs f on a fresh OS thread inside ns. The thread is never unlocked,
// so it exits with the goroutine instead of going back to the scheduler
// inside the test's namespace. Sockets f opens stay in ns and can be used
// from any goroutine.
func (ns netns) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

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
	needRoot(t)
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
			cfg.NetNS = ns.fd
			if err := Install(&cfg); err != nil {
				t.Fatal(err)
			}
			rendered, err := Render(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := newPlan(&cfg)
			table := ns.run(t, "nft", "list", "table", p.family.String(), p.table)
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
	needRoot(t)
	ns := newNetNS(t)
	cfg := Config{Translator: Jool, NetNS: ns.fd}
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
	if err := Remove(&Config{NetNS: ns.fd}); err != nil {
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
	needRoot(t)
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
			got := ns.run(t, "nft", "list", "table", p.family.String(), p.table)
			if diff := cmp.Diff(listing(file), listing(got)); diff != "" {
				t.Errorf("nft list after nft -f %s (-file +nft list):\n%s", g.file, diff)
			}
		})
	}
}

func cmdIn(t *testing.T, ns netns, stdin string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// pair is two namespaces joined by a veth pair: the client at 192.0.2.2
// and the router at 192.0.2.1, where the rules and the servers are.
type pair struct {
	client, router netns
}

const routerAddr = "192.0.2.1"

func newPair(t *testing.T) pair {
	t.Helper()
	p := pair{client: newNetNS(t), router: newNetNS(t)}
	p.router.run(t, "ip", "link", "add", "r0", "type", "veth", "peer", "name", "c0", "netns", p.client.name)
	p.router.run(t, "ip", "addr", "add", routerAddr+"/24", "dev", "r0")
	p.router.run(t, "ip", "link", "set", "r0", "up")
	p.client.run(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "c0")
	p.client.run(t, "ip", "link", "set", "c0", "up")
	return p
}

// serve listens on routerAddr:port inside the router namespace and
// answers every connection with a line, until the test ends.
func (p pair) serve(t *testing.T, port int) {
	t.Helper()
	var ln net.Listener
	err := p.router.do(func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", routerAddr, port))
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

// dial connects from the client namespace to the router's port and reads
// the greeting.
func (p pair) dial(port int, timeout time.Duration) error {
	return p.client.do(func() error {
		c, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", routerAddr, port), timeout)
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
// IPv4 packet of the queues it reads.
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
			NetNS:        ns.fd,
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
			s, ok := parseTCP4(a)
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

func parseTCP4(a nfqueue.Attribute) (seen, bool) {
	var s seen
	if a.Hook != nil {
		s.hook = *a.Hook
	}
	if a.Payload == nil {
		return s, false
	}
	b := *a.Payload
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_TCP {
		return s, false
	}
	ihl := int(b[0]&0x0f) * 4
	if len(b) < ihl+14 {
		return s, false
	}
	s.srcAddr = net.IP(b[12:16]).String()
	s.dstAddr = net.IP(b[16:20]).String()
	tcp := b[ihl:]
	s.sport = uint16(tcp[0])<<8 | uint16(tcp[1])
	s.dport = uint16(tcp[2])<<8 | uint16(tcp[3])
	s.fin, s.syn, s.ack = tcp[13]&0x01 != 0, tcp[13]&0x02 != 0, tcp[13]&0x10 != 0
	return s, true
}

// TestIntegrationRulesQueuesFTPOnly sends real connections through the
// rules: those to port 21 are queued (both directions, each in the chain
// meant for it, all in one queue), those to port 80 are not.
func TestIntegrationRulesQueuesFTPOnly(t *testing.T) {
	needRoot(t)
	tests := []struct {
		name string
		cfg  Config
		// hooks the packets of each direction must be queued in: the
		// client's packets arrive (prerouting); the server's replies
		// are local output, so only the Jool ruleset's postrouting
		// chain sees them.
		toServerHook, toClientHook int // -1: not queued
	}{
		{"tayga", Config{Translator: Tayga, QueueNum: 3}, 0, -1},
		{"jool two queues", Config{Translator: Jool, QueueNum: 5, Queues: 2, Ports: []uint16{21, 2121}}, 0, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPair(t)
			cfg := tt.cfg
			cfg.NetNS = p.router.fd
			if err := Install(&cfg); err != nil {
				t.Fatal(err)
			}
			queues := max(cfg.Queues, 1)
			r := readQueues(t, p.router, cfg.QueueNum, queues)
			for _, port := range []int{21, 80, 2121} {
				p.serve(t, port)
			}
			for _, port := range []int{21, 80, 2121} {
				if err := p.dial(port, 3*time.Second); err != nil {
					t.Fatalf("connect to port %d: %v", port, err)
				}
			}
			// The last ACK and FIN of a connection may still be on
			// their way; they are not needed for the checks.
			time.Sleep(100 * time.Millisecond)
			got, errs := r.packets()
			for _, err := range errs {
				t.Errorf("queue reader: %v", err)
			}
			for _, s := range got {
				t.Log(s)
			}

			queued := map[uint16]bool{} // the configured control ports
			for _, port := range cfg.Ports {
				queued[port] = true
			}
			if len(cfg.Ports) == 0 {
				queued[21] = true
			}
			synToServer, synAckToClient := map[uint16]bool{}, map[uint16]bool{}
			queueOf := map[string]uint16{} // per connection
			for _, s := range got {
				server, client, wantHook := s.dport, s.sport, tt.toServerHook
				if s.sport == 21 || s.sport == 2121 || s.sport == 80 {
					server, client, wantHook = s.sport, s.dport, tt.toClientHook
				}
				if !queued[server] {
					t.Errorf("queued a packet of a connection to port %d: %v", server, s)
					continue
				}
				if int(s.hook) != wantHook {
					t.Errorf("packet queued in hook %d, want %d: %v", s.hook, wantHook, s)
				}
				conn := fmt.Sprintf("%d-%d", server, client)
				if q, ok := queueOf[conn]; ok && q != s.queue {
					t.Errorf("connection %s split over queues %d and %d", conn, q, s.queue)
				}
				queueOf[conn] = s.queue
				if s.syn && !s.ack {
					synToServer[server] = true
				}
				if s.syn && s.ack {
					synAckToClient[server] = true
				}
			}
			for port := range queued {
				if !synToServer[port] {
					t.Errorf("SYN to port %d was not queued", port)
				}
				if tt.toClientHook >= 0 && !synAckToClient[port] {
					t.Errorf("SYN-ACK from port %d was not queued", port)
				}
			}
		})
	}
}

// TestIntegrationRulesBypass runs without any queue reader: with Bypass
// the kernel lets FTP control packets through (fail-open), without it
// drops them (fail-closed). Other traffic passes either way.
func TestIntegrationRulesBypass(t *testing.T) {
	needRoot(t)
	for _, bypass := range []bool{true, false} {
		t.Run(fmt.Sprintf("bypass=%v", bypass), func(t *testing.T) {
			p := newPair(t)
			if err := Install(&Config{Translator: Tayga, QueueNum: 9, Bypass: bypass, NetNS: p.router.fd}); err != nil {
				t.Fatal(err)
			}
			p.serve(t, 21)
			p.serve(t, 80)
			if err := p.dial(80, 3*time.Second); err != nil {
				t.Errorf("port 80: %v", err)
			}
			err := p.dial(21, 500*time.Millisecond)
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
