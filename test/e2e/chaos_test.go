package e2e

import (
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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// chaosDaemon is one `ftpalg run` of the chaos test.
type chaosDaemon struct {
	cmd  *exec.Cmd
	pid  int // without cmd: a daemon another one started (handover_test.go)
	done chan error
}

func (d *chaosDaemon) signal(s syscall.Signal) {
	if d.cmd != nil {
		d.cmd.Process.Signal(s)
		return
	}
	syscall.Kill(d.pid, s)
}

// startChaosDaemon runs bin in nat with the test's own state directory
// and no status socket, and waits until its rules are in (the previous
// daemon's table, if kept, is replaced by the new one's: the log line
// "ftpalg running" says the new one is in place).
func (l *lab) startChaosDaemon(t *testing.T, bin, state, logPath string, extra ...string) *chaosDaemon {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("ip", "netns", "exec", l.ns("nat"), bin, "run",
		"--tayga-conf", filepath.Join(l.dir, "tayga.conf"), "--state-dir", state, "--status-socket=", "--log-level", envStr("FTPALG_CHAOS_LOG", "info"))
	cmd.Args = append(cmd.Args, extra...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ftpalg: %v", err)
	}
	d := &chaosDaemon{cmd: cmd, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	addCleanup(func() { cmd.Process.Kill() })
	return d
}

// waitRunning polls the daemon's log for its n-th "ftpalg running" line.
func waitRunning(t *testing.T, logPath string, n int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		if bytes.Count(b, []byte("msg=\"ftpalg running\"")) >= n {
			return
		}
	}
	t.Fatalf("daemon %d not running after 20 s; log:\n%s", n, tail(logPath, 20))
}

// TestIntegrationChaos runs 100 concurrent control connections, half 46
// (IPv4 client, IPv6 server) and half 64, each doing a series of verified
// downloads (passive and active in turn), while the daemon is killed with
// SIGKILL and restarted, stopped with SIGTERM and restarted, and replaced
// by another build, every few seconds: no control connection may break and
// every transfer must be verified (docs/STATE.md).
//
// FTPALG_CHAOS_CONNS and FTPALG_CHAOS_TRANSFERS change the load (per kind
// of session, default 50 and 40).
func TestIntegrationChaos(t *testing.T) {
	l := getLab(t)
	conns, transfers := envInt("FTPALG_CHAOS_CONNS", 50), envInt("FTPALG_CHAOS_TRANSFERS", 40)
	if err := l.startServer("vsftpd"); err != nil {
		t.Fatal(err)
	}
	// A small file: the test is about the control connections.
	data := make([]byte, 16<<10)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(l.dir, "ftproot", "chaos.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])

	// The "newer binary": the same code with another version string.
	bin2 := filepath.Join(l.dir, "ftpalg-next")
	build := exec.Command("go", "build", "-o", bin2, "-ldflags", "-X main.version=chaos-next", "./cmd/ftpalg")
	build.Dir = l.repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bins := []string{l.bin, bin2}

	state := filepath.Join(l.dir, "state")
	logPath := filepath.Join(l.dir, "ftpalg-chaos.log")
	d := l.startChaosDaemon(t, l.bin, state, logPath)
	started := 1
	waitRunning(t, logPath, started)
	defer func() {
		// Whatever the daemon kept, the lab goes: remove its rules.
		l.exec(context.Background(), "nat", l.bin, "rules", "remove")
		if t.Failed() {
			t.Logf("ftpalg log (last lines):\n%s", tail(logPath, 40))
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	type result struct {
		kind string
		out  string
		err  error
	}
	results := make(chan result, 2)
	for _, c := range []struct{ kind, ns, host string }{{"46", "c4", server46}, {"64", "c6", server64}} {
		go func() {
			cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.ns(c.ns), "python3",
				filepath.Join(l.repo, "test", "lab", "chaos.py"), c.host, strconv.Itoa(conns), strconv.Itoa(transfers),
				"chaos.bin", sha)
			cmd.WaitDelay = time.Second
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			results <- result{c.kind, out.String(), err}
		}()
	}

	// Connections opened while no daemon runs are not the daemon's to
	// resume (docs/STATE.md): the chaos starts once every connection is
	// in the state directory.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		ents, _ := os.ReadDir(state)
		if len(ents) >= 2*conns {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d control connections in the state directory after a minute", len(ents), 2*conns)
		}
	}

	// The chaos: every few seconds one of three ways to lose the daemon.
	var got []result
	actions := map[string]int{}
	for i := 0; len(got) < 2; i++ {
		select {
		case r := <-results:
			got = append(got, r)
			continue
		case <-time.After(2 * time.Second):
		}
		if len(got) == 2 {
			break
		}
		switch i % 3 {
		case 0: // crash
			d.cmd.Process.Kill()
			<-d.done
			actions["sigkill"]++
			d = l.startChaosDaemon(t, bins[i%2], state, logPath)
		case 1: // restart
			d.cmd.Process.Signal(syscall.SIGTERM)
			if err := <-d.done; err != nil {
				t.Errorf("daemon after SIGTERM: %v", err)
			}
			actions["sigterm"]++
			d = l.startChaosDaemon(t, bins[i%2], state, logPath)
		case 2: // upgrade: the other binary
			d.cmd.Process.Signal(syscall.SIGTERM)
			if err := <-d.done; err != nil {
				t.Errorf("daemon after SIGTERM: %v", err)
			}
			actions["upgrade"]++
			d = l.startChaosDaemon(t, bins[(i+1)%2], state, logPath)
		}
		started++
		waitRunning(t, logPath, started)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-d.done; err != nil {
		t.Errorf("last daemon after SIGTERM: %v", err)
	}
	t.Logf("daemon lost %v times (%d daemons)", actions, started)

	for _, r := range got {
		var rep struct {
			Conns     int      `json:"conns"`
			OkConns   int      `json:"ok_conns"`
			Transfers int      `json:"transfers"`
			Failures  []string `json:"failures"`
		}
		line := strings.TrimSpace(r.out)
		if i := strings.LastIndex(line, "\n"); i >= 0 {
			line = line[i+1:]
		}
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			t.Errorf("%s clients: %v: %v\n%s", r.kind, r.err, err, r.out)
			continue
		}
		t.Logf("%s: %d of %d control connections unbroken, %d transfers verified", r.kind, rep.OkConns, rep.Conns, rep.Transfers)
		if r.err != nil || rep.OkConns != conns || rep.Transfers != conns*transfers {
			t.Errorf("%s: %v; %d broken control connections, %d of %d transfers; first failures: %s", r.kind, r.err,
				rep.Conns-rep.OkConns, rep.Transfers, conns*transfers, strings.Join(rep.Failures[:min(5, len(rep.Failures))], "; "))
		}
	}
	if actions["sigkill"] == 0 || actions["sigterm"] == 0 || actions["upgrade"] == 0 {
		t.Errorf("the clients finished before every kind of restart happened (%v): raise FTPALG_CHAOS_TRANSFERS", actions)
	}
	b, _ := os.ReadFile(logPath)
	t.Logf("log: %d daemons said they resume shifted connections; %d lines of theirs: %s", started,
		bytes.Count(b, []byte("resuming shifted")), fmt.Sprint(countLines(b, "level=WARN"))+" warnings")
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func countLines(b []byte, sub string) int {
	n := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.Contains(line, []byte(sub)) {
			n++
		}
	}
	return n
}

func envStr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
