package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/test/testenv"
	"golang.org/x/sys/unix"
)

// Flood: spoofed SYNs and garbage segments to port 21, far more flows than
// the daemon's table holds, beside real sessions. Every real transfer must
// work, the daemon's memory must stay bounded, and the flood must have gone
// through the daemon's rules without being queued to it: the rules queue
// only control connections conntrack saw established (rules/README.md), so
// the flood's packets pass the queue rules and are counted by the divert
// chain's last rule, and the kernel's queue never overflows.
//
// The lab's translator is Tayga, one userspace thread behind a TUN device:
// on the 2-core machine it translates about 30,000 packets/s, and a 50,000
// packets/s flood to the server it maps overflows its device queue (about
// half of all packets dropped, real sessions' included, whether or not an
// ALG runs). So that the test measures the ALG and not Tayga, nat drops
// the flood's spoofed sources on their way into Tayga's device (netdev
// egress): after the daemon's chains and conntrack saw every packet and
// conntrack confirmed its entry (the table fills as it would), before
// Tayga reads them. The flood then never reaches the server, so its
// answers (SYN-ACKs, resets) are not part of it. FTPALG_FLOOD_UNSHIELDED=1
// leaves the shield out.

const (
	// floodRate is the packets per second the flood aims at
	// (FTPALG_FLOOD_RATE overrides it).
	floodRate     = 50_000
	floodMaxFlows = 2048 // the daemon's --max-flows during the flood
	// floodWarmup is the packets sent before the real sessions start.
	floodWarmup = 300_000
	// floodMaxHWM bounds the daemon's peak resident memory (VmHWM): the
	// flow table's bound times the size of a flow, plus the runtime.
	floodMaxHWM = 100 << 20
)

// floodCells are the real sessions run under the flood: each needs the
// ALG (they fail without it, see cells).
var floodCells = []cell{
	{kind: k46, client: "ftplib", mode: "PASV"},
	{kind: k46, client: "ftplib", mode: "PORT"},
	{kind: k46, client: "curl", mode: "PASV"},
	{kind: k46, client: "lftp", mode: "PORT"},
	{kind: k64, client: "ftplib", mode: "EPRT 2"},
	{kind: k64, client: "ftplib", mode: "LPSV"},
}

// flooder sends spoofed IPv4 TCP segments to server46 port 21 from c4.
type flooder struct {
	sent atomic.Uint64
	syns atomic.Uint64
}

// floodShield is the firewall that keeps the flood from Tayga: the
// flood's spoofed sources (floodPacket), dropped in the forward hook.
const floodShield = `table netdev ftpalg_floodshield {
	chain egress {
		type filter hook egress device "nat64" priority filter; policy accept;
		ip saddr 192.0.2.10-192.0.2.209 counter drop
	}
}
`

// floodPacket builds one spoofed segment: from 192.0.2.10-209 (c4's subnet,
// so nothing leaves the lab and nat's reverse-path check passes), a random
// port; a SYN, or an ACK carrying 1-200 random bytes at a random sequence
// number.
func floodPacket(b []byte, r *rand.Rand, syn bool) []byte {
	n := 0
	if !syn {
		n = 1 + r.IntN(200)
	}
	b = b[:20+20+n]
	clear(b[:40])
	b[0], b[8], b[9] = 0x45, 64, unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], uint16(r.Uint32()))
	copy(b[12:], []byte{192, 0, 2, byte(10 + r.IntN(200))})
	copy(b[16:], []byte{203, 0, 113, 10})
	binary.BigEndian.PutUint16(b[10:], inetChecksum(0, b[:20]))
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], uint16(1024+r.IntN(64000)))
	binary.BigEndian.PutUint16(t[2:], 21)
	binary.BigEndian.PutUint32(t[4:], r.Uint32())
	t[12] = 5 << 4
	if syn {
		t[13] = 0x02
	} else {
		binary.BigEndian.PutUint32(t[8:], r.Uint32())
		t[13] = 0x18 // ACK PSH
		for i := 20; i < len(t); i++ {
			t[i] = byte(r.Uint32())
		}
	}
	binary.BigEndian.PutUint16(t[14:], 65535)
	// The pseudo-header: addresses, protocol, TCP length.
	var ph [12]byte
	copy(ph[:8], b[12:20])
	ph[9] = unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(ph[10:], uint16(len(t)))
	binary.BigEndian.PutUint16(t[16:], inetChecksum(inetSum(0, ph[:]), t))
	return b
}

// inetSum adds b to a one's-complement accumulator (RFC 1071).
func inetSum(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func inetChecksum(s uint32, b []byte) uint16 {
	s = inetSum(s, b)
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// run floods until ctx ends, at about rate packets per second, half SYNs
// and half garbage segments, from a raw socket in the namespace open as fd.
func (f *flooder) run(ctx context.Context, fd, rate int) error {
	return <-testenv.Go(fd, func() error {
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(s)
		to := &unix.SockaddrInet4{Addr: [4]byte{203, 0, 113, 10}}
		r := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 1500)
		start := time.Now()
		for ctx.Err() == nil {
			due := uint64(time.Since(start).Seconds() * float64(rate))
			if f.sent.Load() >= due {
				time.Sleep(200 * time.Microsecond)
				continue
			}
			for f.sent.Load() < due {
				syn := r.IntN(2) == 0
				pkt := floodPacket(buf, r, syn)
				// A full device queue is part of a flood: the packet is
				// lost, the next one is tried.
				if err := unix.Sendto(s, pkt, 0, to); err != nil && err != unix.ENOBUFS && err != unix.EAGAIN {
					return fmt.Errorf("sendto: %w", err)
				}
				f.sent.Add(1)
				if syn {
					f.syns.Add(1)
				}
			}
		}
		return nil
	})
}

// vmHWM reads a process's peak resident memory in bytes.
func vmHWM(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// logCounter reads a counter from the daemon's "ftpalg stopped" line.
func logCounter(log, name string) (uint64, bool) {
	m := regexp.MustCompile(`\b` + name + `=(\d+)`).FindStringSubmatch(log)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	return n, err == nil
}

// TestIntegrationFlood runs real sessions through the daemon while c4
// floods port 21 with spoofed SYNs and garbage segments at 50k packets/s.
// It runs only with FTPALG_FLOOD=1 (make flood): it loads the machine.
func TestIntegrationFlood(t *testing.T) {
	needRoot(t)
	if os.Getenv("FTPALG_FLOOD") != "1" {
		t.Skip("flood test: make flood (or set FTPALG_FLOOD=1)")
	}
	l := getLab(t)
	const srv = "vsftpd"
	err := l.startServer(srv)
	if err != nil {
		t.Fatal(err)
	}
	want := floodRate
	if v := os.Getenv("FTPALG_FLOOD_RATE"); v != "" {
		if want, err = strconv.Atoi(v); err != nil || want <= 0 {
			t.Fatalf("FTPALG_FLOOD_RATE=%q: want a positive number", v)
		}
	}
	d := l.startDaemon(t, "flood", append([]string{"--max-flows", strconv.Itoa(floodMaxFlows), "--status-socket=", "--log-level", "info"}, strings.Fields(os.Getenv("FTPALG_FLOOD_FLAGS"))...)...)
	if hwm, err := vmHWM(d.cmd.Process.Pid); err == nil {
		t.Logf("daemon peak RSS (VmHWM) before the flood: %.1f MiB", float64(hwm)/(1<<20))
	}
	shielded := os.Getenv("FTPALG_FLOOD_UNSHIELDED") != "1"
	if shielded {
		cmd := exec.Command("ip", "netns", "exec", l.ns("nat"), "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(floodShield)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("flood shield: %v: %s", err, out)
		}
		defer l.exec(context.Background(), "nat", "nft", "delete", "table", "netdev", "ftpalg_floodshield")
	}
	nsFD, err := unix.Open("/run/netns/"+l.ns("c4"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nsFD)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var fl flooder
	floodErr := make(chan error, 1)
	start := time.Now()
	go func() { floodErr <- fl.run(ctx, nsFD, want) }()
	// Let the flood fill conntrack's table (nf_conntrack_max is 262144
	// here) before the real sessions start: their connections then get
	// in by early drop of the flood's unassured entries.
	for fl.sent.Load() < floodWarmup && time.Since(start) < 30*time.Second {
		time.Sleep(10 * time.Millisecond)
	}

	for _, c := range floodCells {
		t.Run(c.name(), func(t *testing.T) {
			if r := l.runCell(t, srv, c, "flood"); !r.ok {
				t.Errorf("under the flood: %s", r.detail)
			}
		})
	}
	stop()
	if err := <-floodErr; err != nil {
		t.Fatalf("flood: %v", err)
	}
	took := time.Since(start)
	hwm, hwmErr := vmHWM(d.cmd.Process.Pid)
	ctx0 := context.Background()
	// The kernel's side of the queue (fields of
	// /proc/net/netfilter/nfnetlink_queue: queue, portid, waiting, copy
	// mode, copy range, queue dropped, user dropped, last id, 1).
	queueOut, queueErr := l.exec(ctx0, "nat", "cat", "/proc/net/netfilter/nfnetlink_queue")
	divertOut, divertErr := l.exec(ctx0, "nat", "nft", "list", "chain", "ip", "ftpalg", "divert")
	for _, c := range [][]string{
		{"ip", "-s", "link", "show", "nat64"},
		{"conntrack", "-S"},
		{"conntrack", "-C"},
		{"nft", "list", "table", "netdev", "ftpalg_floodshield"},
	} {
		out, err := l.exec(ctx0, "nat", c...)
		t.Logf("%s (%v):\n%s", strings.Join(c, " "), err, strings.TrimSpace(out))
	}
	l.stopDaemon(t, d)

	sent := fl.sent.Load()
	rate := float64(sent) / took.Seconds()
	t.Logf("flood: %d packets (%d SYNs) in %v: %.0f packets/s", sent, fl.syns.Load(), took.Round(time.Millisecond), rate)
	if rate < 0.9*float64(want) {
		t.Errorf("flood reached %.0f packets/s, want %d", rate, want)
	}
	if hwmErr != nil {
		t.Errorf("daemon memory: %v", hwmErr)
	} else {
		t.Logf("daemon peak RSS (VmHWM): %.1f MiB with --max-flows %d", float64(hwm)/(1<<20), floodMaxFlows)
		if hwm > floodMaxHWM {
			t.Errorf("daemon peak RSS %d bytes, bound %d", hwm, floodMaxHWM)
		}
	}

	// The flood passed the queue rules: the divert chain's last rule
	// counts the clients' packets left unqueued. What was queued is the
	// real sessions' few hundred packets.
	if divertErr != nil {
		t.Fatalf("nft list chain divert: %v: %s", divertErr, divertOut)
	}
	var queued, passed uint64
	for _, line := range strings.Split(divertOut, "\n") {
		m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n, _ := strconv.ParseUint(m[1], 10, 64)
		if strings.Contains(line, " queue ") {
			queued += n
		} else {
			passed += n
		}
	}
	t.Logf("divert chain: %d packets queued, %d of the clients' packets passed unqueued", queued, passed)
	if passed < sent*9/10 {
		t.Errorf("%d packets passed the queue rules unqueued, want most of the %d sent: the flood did not reach the rules", passed, sent)
	}
	if queued > sent/100 {
		t.Errorf("%d packets queued to the daemon, want at most 1%% of the %d sent", queued, sent)
	}
	// The kernel's queue never overflowed.
	if queueErr != nil {
		t.Errorf("nfnetlink_queue: %v", queueErr)
	}
	t.Logf("nfnetlink_queue:\n%s", strings.TrimSpace(queueOut))
	for _, line := range strings.Split(strings.TrimSpace(queueOut), "\n") {
		if f := strings.Fields(line); len(f) >= 7 && (f[5] != "0" || f[6] != "0") {
			t.Errorf("queue %s dropped packets (queue dropped %s, user dropped %s)", f[0], f[5], f[6])
		}
	}
	last := tail(d.log, 3)
	packets, ok := logCounter(last, "packets")
	if !ok {
		t.Fatalf("no packets counter in the daemon's last lines: %s", last)
	}
	t.Logf("daemon: %d packets, %s", packets, strings.TrimSpace(last))
	if packets > sent/100 {
		t.Errorf("the daemon handled %d packets, want at most 1%% of the %d the flood sent", packets, sent)
	}
}
