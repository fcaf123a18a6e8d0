package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestIntegrationHandover replaces the daemon again and again while
// control connections of both kinds (46 and 64) keep transferring, first
// by a takeover (run --takeover: the new daemon starts beside the old one,
// the rules switch to its queues, the old one verdicts what it had queued
// and exits), then, as the control, by SIGTERM and a new start. The
// measure of a lost packet is TCP's: the segments the clients and the
// servers retransmitted (RetransSegs of /proc/net/snmp in their network
// namespaces), and what the old daemons left without a verdict. A takeover
// must lose nothing: 0 retransmissions, 0 broken control connections,
// every transfer verified; the control is reported (it loses the packets
// that arrive while no daemon reads the queue, which TCP resends).
//
// FTPALG_HANDOVER_CONNS and FTPALG_HANDOVER_TRANSFERS change the load (per
// kind of session, default 20 and 40); FTPALG_HANDOVER_MODES the phases
// (default "takeover,sigterm"; "none" replaces no daemon: a baseline).
func TestIntegrationHandover(t *testing.T) {
	l := getLab(t)
	conns, transfers := envInt("FTPALG_HANDOVER_CONNS", 20), envInt("FTPALG_HANDOVER_TRANSFERS", 40)
	if err := l.startServer("vsftpd"); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 16<<10)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(l.dir, "ftproot", "handover.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])

	bin2 := filepath.Join(l.dir, "ftpalg-handover-next")
	build := exec.Command("go", "build", "-o", bin2, "-ldflags", "-X main.version=handover-next", "./cmd/ftpalg")
	build.Dir = l.repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bins := []string{l.bin, bin2}
	defer l.exec(context.Background(), "nat", l.bin, "rules", "remove")

	type phase struct {
		name     string
		replaced int
		retrans  uint64
		left     uint64
		in, out  uint64
		reps     []chaosReport
	}
	var phases []phase
	l.addCounted(t)
	modes := []string{"takeover", "sigterm"}
	if m := os.Getenv("FTPALG_HANDOVER_MODES"); m != "" {
		modes = strings.Split(m, ",")
	}
	for _, mode := range modes {
		state := filepath.Join(l.dir, "state-"+mode)
		logPath := filepath.Join(l.dir, "ftpalg-"+mode+".log")
		d := l.startChaosDaemon(t, l.bin, state, logPath)
		waitRunning(t, logPath, 1)
		started := 1

		// Counted from before the clients start (no packet in flight).
		in0, out0 := l.countedSettled(t)
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		results := l.runChaosClients(ctx, conns, transfers, "handover.bin", sha)
		// As in the chaos test: every connection in the journal first.
		waitJournal(t, state, 2*conns)
		before := l.retransSegs(t)

		var got []chaosResult
		for i := 0; len(got) < 2; i++ {
			select {
			case r := <-results:
				got = append(got, r)
				continue
			case <-time.After(time.Second):
			}
			if len(got) == 2 {
				break
			}
			bin := bins[(i+1)%2]
			switch mode {
			case "none":
				continue
			case "takeover":
				// A new binary started with --takeover, and in turn
				// SIGUSR2: the daemon starts its own binary so.
				if i%2 == 1 {
					d.signal(syscall.SIGUSR2)
					if err := <-d.done; err != nil {
						t.Errorf("old daemon after SIGUSR2: %v", err)
					}
					d = adoptDaemon(t, logPath, started)
					break
				}
				next := l.startChaosDaemon(t, bin, state, logPath, "--takeover")
				if err := <-d.done; err != nil {
					t.Errorf("old daemon after the takeover: %v", err)
				}
				d = next
			case "sigterm":
				d.signal(syscall.SIGTERM)
				if err := <-d.done; err != nil {
					t.Errorf("daemon after SIGTERM: %v", err)
				}
				d = l.startChaosDaemon(t, bin, state, logPath)
			}
			started++
			waitRunning(t, logPath, started)
		}
		cancel()
		after := l.retransSegs(t)
		in, out := l.countedSettled(t)
		in, out = in-in0, out-out0
		d.signal(syscall.SIGTERM)
		if err := <-d.done; err != nil {
			t.Errorf("last daemon after SIGTERM: %v", err)
		}
		p := phase{name: mode, replaced: started - 1, retrans: after - before, in: in, out: out}
		for _, r := range got {
			p.reps = append(p.reps, checkChaos(t, r, conns, transfers))
		}
		b, _ := os.ReadFile(logPath)
		for _, m := range regexp.MustCompile(`old_left_without_verdict=(\d+)`).FindAllSubmatch(b, -1) {
			n, _ := strconv.ParseUint(string(m[1]), 10, 64)
			p.left += n
		}
		if mode == "takeover" {
			if n := bytes.Count(b, []byte("switched_in_place=true")); n != p.replaced {
				t.Errorf("takeover: %d of %d takeovers switched the rules in place; log:\n%s", n, p.replaced, tail(logPath, 30))
			}
		}
		if t.Failed() {
			t.Logf("%s log (last lines):\n%s", mode, tail(logPath, 40))
		}
		phases = append(phases, p)
	}
	for _, p := range phases {
		t.Logf("%s: daemon replaced %d times; control packets into the router %d, out %d: %d lost; %d left without verdict by old daemons; %d segments retransmitted by clients and servers (spurious ones included)",
			p.name, p.replaced, p.in, p.out, int64(p.in)-int64(p.out), p.left, p.retrans)
		switch p.name {
		case "takeover":
			if p.in != p.out || p.left != 0 {
				t.Errorf("takeover lost packets: %d in, %d out, %d left without verdict", p.in, p.out, p.left)
			}
		case "sigterm":
			if p.in == p.out {
				t.Errorf("control: SIGTERM and restart %d times lost no packet: the measure sees nothing (more load: FTPALG_HANDOVER_CONNS)", p.replaced)
			}
		}
	}
	for _, p := range phases {
		if p.name != "none" && p.replaced < 3 {
			t.Errorf("%s: the clients finished after %d replacements: raise FTPALG_HANDOVER_TRANSFERS", p.name, p.replaced)
		}
	}
}

// adoptDaemon follows the daemon an earlier one started on SIGUSR2: the
// pid of the n-th "took over" line of the log. It is not this process's
// child: its exit is seen in /proc.
func adoptDaemon(t *testing.T, logPath string, n int) *chaosDaemon {
	t.Helper()
	re := regexp.MustCompile(`msg="took over from the old daemon" pid=(\d+)`)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		m := re.FindAllSubmatch(b, -1)
		if len(m) < n {
			continue
		}
		pid, _ := strconv.Atoi(string(m[n-1][1]))
		d := &chaosDaemon{pid: pid, done: make(chan error, 1)}
		addCleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
		go func() {
			for {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				if f := strings.Fields(string(b)); err != nil || len(f) > 2 && f[2] == "Z" {
					d.done <- nil
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		return d
	}
	t.Fatalf("no daemon took over after SIGUSR2 within 20 s; log:\n%s", tail(logPath, 20))
	return nil
}

// chaosResult is what one chaos.py process reported.
type chaosResult struct {
	kind string
	out  string
	err  error
}

// chaosReport is chaos.py's JSON line.
type chaosReport struct {
	Conns     int      `json:"conns"`
	OkConns   int      `json:"ok_conns"`
	Transfers int      `json:"transfers"`
	Failures  []string `json:"failures"`
}

// runChaosClients starts test/lab/chaos.py in c4 (46) and c6 (64).
func (l *lab) runChaosClients(ctx context.Context, conns, transfers int, name, sha string) <-chan chaosResult {
	results := make(chan chaosResult, 2)
	for _, c := range []struct{ kind, ns, host string }{{"46", "c4", server46}, {"64", "c6", server64}} {
		go func() {
			cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.ns(c.ns), "python3",
				filepath.Join(l.repo, "test", "lab", "chaos.py"), c.host, strconv.Itoa(conns), strconv.Itoa(transfers), name, sha)
			cmd.WaitDelay = time.Second
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			results <- chaosResult{c.kind, out.String(), err}
		}()
	}
	return results
}

// checkChaos checks one chaos.py report: every connection unbroken, every
// transfer verified.
func checkChaos(t *testing.T, r chaosResult, conns, transfers int) chaosReport {
	t.Helper()
	var rep chaosReport
	line := strings.TrimSpace(r.out)
	if i := strings.LastIndex(line, "\n"); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		t.Errorf("%s clients: %v: %v\n%s", r.kind, r.err, err, r.out)
		return rep
	}
	t.Logf("%s: %d of %d control connections unbroken, %d transfers verified", r.kind, rep.OkConns, rep.Conns, rep.Transfers)
	if r.err != nil || rep.OkConns != conns || rep.Transfers != conns*transfers {
		t.Errorf("%s: %v; %d broken control connections, %d of %d transfers; first failures: %s", r.kind, r.err,
			rep.Conns-rep.OkConns, rep.Transfers, conns*transfers, strings.Join(rep.Failures[:min(5, len(rep.Failures))], "; "))
	}
	return rep
}

// waitJournal polls until the state directory holds n connections.
func waitJournal(t *testing.T, state string, n int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		ents, _ := os.ReadDir(state)
		if len(ents) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d control connections in the state directory after a minute", len(ents), n)
		}
	}
}

// countTable counts the FTP control packets of the queued leg (IPv4) as
// they enter the router (prerouting, before the daemon's rules) and as
// they leave it (postrouting, after everything): in the end, with no
// packet in flight, the difference is what the router dropped. Packets
// into and out of Tayga's tun device count as both.
const countTable = "ftpalg_handover_count"

// addCounted installs the counters in the router's namespace for the rest
// of the test (a table with base chains: removing it would flush the
// queues, so it goes at the end).
func (l *lab) addCounted(t *testing.T) {
	t.Helper()
	script := fmt.Sprintf(`table ip %s {
	chain pre {
		type filter hook prerouting priority -400; policy accept;
		tcp sport 21 counter
		tcp dport 21 counter
	}
	chain post {
		type filter hook postrouting priority 400; policy accept;
		tcp sport 21 counter
		tcp dport 21 counter
	}
}
`, countTable)
	path := filepath.Join(l.dir, "count.nft")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := l.exec(context.Background(), "nat", "nft", "-f", path); err != nil {
		t.Fatalf("nft -f count.nft: %v: %s", err, out)
	}
	addCleanup(func() { l.exec(context.Background(), "nat", "nft", "delete", "table", "ip", countTable) })
}

// counted reads the packets counted in and out.
func (l *lab) counted(t *testing.T) (in, out uint64) {
	t.Helper()
	text, err := l.exec(context.Background(), "nat", "nft", "list", "table", "ip", countTable)
	if err != nil {
		t.Fatalf("nft list table: %v: %s", err, text)
	}
	chain := ""
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "chain" {
			chain = f[1]
		}
		for i := range f {
			if f[i] == "packets" && i+1 < len(f) {
				n, _ := strconv.ParseUint(f[i+1], 10, 64)
				if chain == "pre" {
					in += n
				} else {
					out += n
				}
			}
		}
	}
	return in, out
}

// countedSettled reads the counters once they stopped changing (the last
// packets of the clients' connections have passed or died).
func (l *lab) countedSettled(t *testing.T) (in, out uint64) {
	t.Helper()
	in, out = l.counted(t)
	for same, deadline := 0, time.Now().Add(10*time.Second); same < 10 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		i, o := l.counted(t)
		if i == in && o == out {
			same++
			continue
		}
		in, out, same = i, o, 0
	}
	return in, out
}

// retransSegs sums TCP's RetransSegs over the clients' and the servers'
// network namespaces.
func (l *lab) retransSegs(t *testing.T) uint64 {
	t.Helper()
	var sum uint64
	for _, ns := range []string{"c4", "c6", "s4", "s6"} {
		out, err := l.exec(context.Background(), ns, "cat", "/proc/net/snmp")
		if err != nil {
			t.Fatalf("%s: /proc/net/snmp: %v: %s", ns, err, out)
		}
		n, ok := snmpField(out, "Tcp", "RetransSegs")
		if !ok {
			t.Fatalf("%s: no Tcp RetransSegs in /proc/net/snmp", ns)
		}
		sum += n
	}
	return sum
}

// snmpField reads a counter of /proc/net/snmp: a header line "Proto: names"
// followed by a line "Proto: values".
func snmpField(text, proto, name string) (uint64, bool) {
	var header []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != proto+":" {
			continue
		}
		if header == nil {
			header = f
			continue
		}
		for i, h := range header {
			if h == name && i < len(f) {
				n, err := strconv.ParseUint(f[i], 10, 64)
				return n, err == nil
			}
		}
		return 0, false
	}
	return 0, false
}
