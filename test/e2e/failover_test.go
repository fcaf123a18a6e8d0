package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
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

// TestIntegrationFailover moves the router under shifted control
// connections: two routers (test/lab/failover.sh), each with Tayga (the
// same static maps), a default-drop forward firewall, conntrackd (FTFW on
// a link of their own) and ftpalg replicating its state to the other
// (--state-sync-peer/--state-sync-listen). 46 clients (PASV: 229 -> 227
// changes the length) and 64 clients each open a control connection
// (FTPALG_FAILOVER_CONNS of each) through router A and verify a passive
// and an active download; then A's daemon is killed, A's links go down,
// B commits conntrackd's cache and takes the same addresses. Each control connection must then do passive
// and active downloads through B, verified by content, without breaking,
// and B's daemon must have resumed them from the replicated state
// (docs/STATE.md, "Failover").
//
// FTPALG_FAILOVER_CONNS sets the number of control connections of each
// kind (default 3).
//
// FTPALG_FAILOVER_CONTROL=nosync runs B's daemon without the state sync,
// =noconntrackd switches without committing conntrackd's cache: control
// runs that show what each part is for (the test then fails).
func TestIntegrationFailover(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"tayga", "vsftpd", "python3", "nft", "ip", "conntrack", "conntrackd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run test/deps.sh", tool)
		}
	}
	control := os.Getenv("FTPALG_FAILOVER_CONTROL")
	conns := envInt("FTPALG_FAILOVER_CONNS", 3)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	removeStaleFailoverLabs(repo)
	dir, err := os.MkdirTemp("", "ftpalg-failover-")
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("fof%d", os.Getpid())
	script := filepath.Join(repo, "test", "lab", "failover.sh")
	runScript := func(env []string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, script, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.WaitDelay = time.Second
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("failover.sh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	keep := os.Getenv("FTPALG_E2E_KEEP") != ""
	down := func() {
		exec.Command(script, "down", prefix).Run()
		if keep {
			fmt.Fprintf(os.Stderr, "e2e: failover logs kept in %s\n", dir)
		} else {
			os.RemoveAll(dir)
		}
	}
	addCleanup(down)
	defer func() {
		if t.Failed() {
			for _, f := range []string{"ra/ftpalg.log", "rb/ftpalg.log", "ra/conntrackd.log", "rb/conntrackd.log"} {
				t.Logf("%s (last lines):\n%s", f, tail(filepath.Join(dir, f), 15))
			}
		}
	}()
	bin, err := findBinary(repo, dir)
	if err != nil {
		t.Fatal(err)
	}
	runScript(nil, "up", dir, prefix)
	ns := func(n string) string { return prefix + "-" + n }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	srv := exec.CommandContext(ctx, filepath.Join(repo, "test", "lab", "lab.sh"), "server", "vsftpd", dir, prefix)
	out, err := srv.CombinedOutput()
	cancel()
	if err != nil {
		t.Fatalf("lab.sh server: %v\n%s", err, out)
	}
	sha, err := os.ReadFile(filepath.Join(dir, "data.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "sync.key")
	if err := os.WriteFile(keyFile, []byte("failover-lab-secret-of-both-routers\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The daemons: A active, B standby; each sends its state to the other.
	type router struct {
		name, self, peer string
		cmd              *exec.Cmd
		done             chan error
		log              string
	}
	routers := []*router{{name: "ra", self: "10.255.0.1", peer: "10.255.0.2"}, {name: "rb", self: "10.255.0.2", peer: "10.255.0.1"}}
	for _, r := range routers {
		r.log = filepath.Join(dir, r.name, "ftpalg.log")
		f, err := os.Create(r.log)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"netns", "exec", ns(r.name), bin, "run", "--tayga-conf", filepath.Join(dir, r.name, "tayga.conf"),
			"--state-dir", filepath.Join(dir, r.name, "state"), "--status-socket=", "--log-level", "debug"}
		if !(control == "nosync" && r.name == "rb") {
			args = append(args, "--state-sync-peer", r.peer+":7021", "--state-sync-listen", r.self+":7021", "--state-sync-key", keyFile)
		}
		r.cmd = exec.Command("ip", args...)
		r.cmd.Stdout, r.cmd.Stderr = f, f
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		r.done = make(chan error, 1)
		go func() { r.done <- r.cmd.Wait() }()
		addCleanup(func() { r.cmd.Process.Kill() })
		waitRunning(t, r.log, 1)
	}

	// The clients: one control connection each, two verified downloads
	// (passive, active) through A, then "switch".
	type client struct {
		kind  string
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines chan string
	}
	var clients []*client
	var kinds []struct{ kind, ns, host string }
	for i := range conns {
		kinds = append(kinds, struct{ kind, ns, host string }{fmt.Sprintf("46#%d", i), "c4", server46},
			struct{ kind, ns, host string }{fmt.Sprintf("64#%d", i), "c6", "2001:db8:64::198.51.100.10"})
	}
	for _, c := range kinds {
		cl := &client{kind: c.kind, lines: make(chan string, 8)}
		cl.cmd = exec.Command("ip", "netns", "exec", ns(c.ns), "python3", filepath.Join(repo, "test", "lab", "failover.py"),
			c.host, "data.bin", strings.TrimSpace(string(sha)), "--before", "2", "--after", "4", "--timeout", "60")
		cl.cmd.Stderr = os.Stderr
		if cl.stdin, err = cl.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := cl.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		addCleanup(func() { cl.cmd.Process.Kill() })
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				cl.lines <- sc.Text()
			}
			close(cl.lines)
		}()
		clients = append(clients, cl)
	}
	results := map[string]string{}
	for _, cl := range clients {
		select {
		case line, ok := <-cl.lines:
			if !ok || line != "switch" {
				t.Fatalf("%s client before the switch: %q", cl.kind, line)
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s client: no transfers through A after 2 minutes", cl.kind)
		}
	}

	// Both connections are in A's journal; B must hold the same states
	// before the switch (with the sync).
	stateA, stateB := filepath.Join(dir, "ra", "state"), filepath.Join(dir, "rb", "state")
	if control != "nosync" {
		for deadline := time.Now().Add(20 * time.Second); !sameDir(stateA, stateB, 2*conns); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("B's state is not A's after 20 s: A %v, B %v", dirNames(stateA), dirNames(stateB))
			}
		}
	}

	// B's rules hold them as shifted (fail closed until its daemon has
	// them): the set on B has each connection, both directions.
	if control != "nosync" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		set, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns("rb"), "nft", "list", "ruleset").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("nft list ruleset in B: %v\n%s", err, set)
		}
		for _, name := range dirNames(stateB) {
			c, s, _ := strings.Cut(name, "_")
			ch, cp, _ := strings.Cut(c, ":")
			sh, sp, _ := strings.Cut(s, ":")
			for _, el := range []string{ch + " . " + cp + " . " + sh + " . " + sp, sh + " . " + sp + " . " + ch + " . " + cp} {
				if !strings.Contains(string(set), el) {
					t.Errorf("B's set of shifted connections lacks %s:\n%s", el, set)
				}
			}
		}
	}

	// conntrackd's external cache on B holds both legs of each control
	// connection (the IPv4 one and the IPv6 one of Tayga's translation).
	for _, name := range dirNames(stateA) {
		c, _, _ := strings.Cut(name, "_")
		_, port, _ := strings.Cut(c, ":")
		want := "sport=" + port + " dport=21 "
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ext, _ := exec.CommandContext(ctx, "ip", "netns", "exec", ns("rb"), "conntrackd", "-C",
				filepath.Join(dir, "rb", "conntrackd.conf"), "-e").CombinedOutput()
			cancel()
			if strings.Count(string(ext), want) >= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("conntrackd's external cache on B lacks the control connection from port %s after 20 s:\n%s", port, ext)
			}
		}
	}

	// The switch: A is lost.
	ra, rb := routers[0], routers[1]
	ra.cmd.Process.Kill()
	<-ra.done
	var env []string
	if control == "noconntrackd" {
		env = append(env, "FAILOVER_NO_COMMIT=1")
	}
	runScript(env, "switch", dir, prefix)
	t.Logf("switched to B")
	for _, cl := range clients {
		io.WriteString(cl.stdin, "go\n")
	}
	for _, cl := range clients {
		select {
		case line := <-cl.lines:
			results[cl.kind] = line
		case <-time.After(3 * time.Minute):
			t.Errorf("%s client: no result 3 minutes after the switch", cl.kind)
		}
		cl.stdin.Close()
		cl.cmd.Wait()
	}
	for _, cl := range clients {
		var rep struct {
			Before, After, Port int
			Error               *string
		}
		if err := json.Unmarshal([]byte(results[cl.kind]), &rep); err != nil {
			t.Errorf("%s client: %v: %q", cl.kind, err, results[cl.kind])
			continue
		}
		t.Logf("%s: control connection from port %d: %d downloads verified through A, %d through B, error %v",
			cl.kind, rep.Port, rep.Before, rep.After, deref(rep.Error))
		if rep.Error != nil || rep.Before != 2 || rep.After != 4 {
			t.Errorf("%s: the control connection broke or a transfer failed after the switch: %s", cl.kind, deref(rep.Error))
		}
	}

	// B resumed them from the replicated state.
	rb.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-rb.done:
		if err != nil {
			t.Errorf("B's daemon after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("B's daemon did not stop within 10 s")
	}
	b, _ := os.ReadFile(rb.log)
	m := regexp.MustCompile(`msg="ftpalg stopped".* restored=(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("B's daemon: no counters in its log:\n%s", tail(rb.log, 5))
	}
	if n, _ := strconv.Atoi(string(m[1])); n < 2*conns {
		t.Errorf("B's daemon restored %d connections, want %d", n, 2*conns)
	}
	t.Logf("B: restored=%s; %d rewrites logged", m[1], bytes.Count(b, []byte("msg=rewrite")))
}

// sameDir reports whether directories a and b hold the same files with
// the same states (journalState), at least n of them.
func sameDir(a, b string, n int) bool {
	names := dirNames(a)
	if len(names) < n || len(dirNames(b)) != len(names) {
		return false
	}
	for _, name := range names {
		x, err1 := os.ReadFile(filepath.Join(a, name))
		y, err2 := os.ReadFile(filepath.Join(b, name))
		if err1 != nil || err2 != nil || !bytes.Equal(journalState(x), journalState(y)) || journalState(x) == nil {
			return false
		}
	}
	return true
}

// journalState is the state in a journal file: a 4-byte length, then the
// state (a longer earlier state may follow); nil if it is not whole.
func journalState(b []byte) []byte {
	if len(b) < 4 {
		return nil
	}
	n := int(binary.BigEndian.Uint32(b))
	if n > len(b)-4 {
		return nil
	}
	return b[4 : 4+n]
}

func dirNames(d string) []string {
	ents, _ := os.ReadDir(d)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func deref(s *string) string {
	if s == nil {
		return "none"
	}
	return *s
}

// removeStaleFailoverLabs removes the namespaces of earlier failover runs
// whose test process is gone: fof<pid>-*.
func removeStaleFailoverLabs(repo string) {
	entries, _ := os.ReadDir("/run/netns")
	done := map[string]bool{}
	for _, e := range entries {
		name, _, ok := strings.Cut(e.Name(), "-")
		pid, err := strconv.Atoi(strings.TrimPrefix(name, "fof"))
		if !ok || !strings.HasPrefix(name, "fof") || err != nil || done[name] {
			continue
		}
		done[name] = true
		if syscall.Kill(pid, 0) == nil || pid == os.Getpid() {
			continue
		}
		exec.Command(filepath.Join(repo, "test", "lab", "failover.sh"), "down", name).Run()
		fmt.Fprintf(os.Stderr, "e2e: removed stale failover lab %s\n", name)
	}
}
