// Package e2e holds the end-to-end tests of ftpalg: a real Tayga NAT64 in
// network namespaces, real FTP servers (vsftpd, proftpd, pure-ftpd) and
// real clients (curl, lftp, python's ftplib), each transfer run once without
// the ALG and once with `ftpalg run` in the translator's namespace.
//
// The tests need root and the packages that test/deps.sh installs. They run
// only when FTPALG_E2E=1 (test/e2e.sh sets it), so that a plain
// `go test ./...` does not build the lab. When not root they skip, or fail
// when CI is set.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/test/testenv"
)

// Addresses of the lab, as test/lab/lab.sh builds it.
const (
	server46 = "203.0.113.10"               // the IPv6 server as the IPv4 client dials it
	server64 = "2001:db8:64::198.51.100.10" // the IPv4 server as the IPv6 client dials it
	client4  = "192.0.2.2"                  // the IPv4 client
	prefix4  = "2001:db8:64::192.0.2.2"     // the IPv4 client as the IPv6 server sees it
)

// lab is the one lab of this test binary.
type lab struct {
	repo   string // the repository's root
	dir    string // scratch folder: configs, served tree, logs, downloads
	prefix string // namespace name prefix
	bin    string // the ftpalg binary
	sha    string // sha256 of the served file
	// client4seen is the IPv4 address the IPv4 server sees for the IPv6
	// client (from Tayga's dynamic pool), found once the lab is up.
	client4seen string
}

var (
	theLab     *lab
	labErr     error
	labOnce    sync.Once
	cleanupMu  sync.Mutex
	cleanupFns []func()
)

func TestMain(m *testing.M) {
	// On SIGINT/SIGTERM, tear the lab down before dying.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "e2e: %v: cleaning up\n", s)
		runCleanup()
		os.Exit(1)
	}()
	code := m.Run()
	runCleanup()
	os.Exit(code)
}

func addCleanup(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanupFns = append(cleanupFns, f)
}

func runCleanup() {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	for i := len(cleanupFns) - 1; i >= 0; i-- {
		cleanupFns[i]()
	}
	cleanupFns = nil
}

// needRoot skips or fails a test that cannot run here.
func needRoot(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t)
	if os.Getenv("FTPALG_E2E") != "1" {
		t.Skip("end-to-end test: run test/e2e.sh (or set FTPALG_E2E=1)")
	}
}

// getLab builds the lab on first use; it is removed when the binary exits.
func getLab(t *testing.T) *lab {
	t.Helper()
	needRoot(t)
	labOnce.Do(func() { theLab, labErr = newLab() })
	if labErr != nil {
		t.Fatalf("lab: %v", labErr)
	}
	return theLab
}

func newLab() (*lab, error) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		return nil, err
	}
	for _, tool := range []string{"tayga", "vsftpd", "curl", "lftp", "python3", "nft", "ip", "ss", "conntrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found: run test/deps.sh", tool)
		}
	}
	removeStaleLabs(repo)
	dir, err := os.MkdirTemp("", "ftpalg-e2e-")
	if err != nil {
		return nil, err
	}
	l := &lab{repo: repo, dir: dir, prefix: fmt.Sprintf("fae%d", os.Getpid())}
	keep := os.Getenv("FTPALG_E2E_KEEP") != ""
	addCleanup(func() {
		if err := l.script(context.Background(), "down", l.prefix); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: lab down: %v\n", err)
		}
		if keep {
			fmt.Fprintf(os.Stderr, "e2e: logs kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	})

	if l.bin, err = findBinary(repo, dir); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if err := l.script(ctx, "up", dir, l.prefix); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "data.sha256"))
	if err != nil {
		return nil, err
	}
	l.sha = strings.TrimSpace(string(b))
	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "e2e: lab %s up in %v (files in %s)\n", l.prefix, time.Since(start).Round(time.Millisecond), dir)
	return l, nil
}

// removeStaleLabs removes the namespaces of earlier runs whose test process
// is gone (killed before it could clean up): fae<pid>-* with no such pid.
func removeStaleLabs(repo string) {
	entries, _ := os.ReadDir("/run/netns")
	done := map[string]bool{}
	for _, e := range entries {
		name, _, ok := strings.Cut(e.Name(), "-")
		pid, err := strconv.Atoi(strings.TrimPrefix(name, "fae"))
		if !ok || !strings.HasPrefix(name, "fae") || err != nil || done[name] {
			continue
		}
		done[name] = true
		if syscall.Kill(pid, 0) == nil || pid == os.Getpid() {
			continue // still running (or a pid reused by a live process)
		}
		cmd := exec.Command(filepath.Join(repo, "test", "lab", "lab.sh"), "down", name)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: removing stale lab %s: %v\n%s", name, err, out)
		} else {
			fmt.Fprintf(os.Stderr, "e2e: removed stale lab %s\n", name)
		}
	}
}

// findBinary returns $FTPALG_BIN (relative to the repository's root), or
// builds ./cmd/ftpalg into dir.
func findBinary(repo, dir string) (string, error) {
	if b := os.Getenv("FTPALG_BIN"); b != "" {
		if !filepath.IsAbs(b) { // relative to the repository, not to test/e2e
			b = filepath.Join(repo, b)
		}
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("FTPALG_BIN: %w", err)
		}
		return b, nil
	}
	bin := filepath.Join(dir, "ftpalg")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ftpalg")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ftpalg: %v\n%s", err, out)
	}
	return bin, nil
}

func (l *lab) ns(name string) string { return l.prefix + "-" + name }

// script runs test/lab/lab.sh.
func (l *lab) script(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(l.repo, "test", "lab", "lab.sh"), args...)
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lab.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// exec runs a command inside namespace ns and returns its combined output.
func (l *lab) exec(ctx context.Context, ns string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ns(ns)}, args...)...)
	cmd.WaitDelay = time.Second
	cmd.Stdin = nil
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// startServer starts one FTP server in s6 and s4, stopping any other.
func (l *lab) startServer(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.script(ctx, "stop-servers", l.prefix); err != nil {
		return err
	}
	return l.script(ctx, "server", name, l.dir, l.prefix)
}

// findClient4Seen learns which pool address Tayga gave the IPv6 client: it
// holds a control connection open from c6 and asks s4 who its peer is.
func (l *lab) findClient4Seen() error {
	if l.client4seen != "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hold := exec.CommandContext(ctx, "ip", "netns", "exec", l.ns("c6"), "python3", "-c",
		`import socket,time; s=socket.create_connection(("`+server64+`",21),3); time.sleep(3)`)
	hold.WaitDelay = time.Second
	if err := hold.Start(); err != nil {
		return err
	}
	defer func() { hold.Process.Kill(); hold.Wait() }()
	for ctx.Err() == nil {
		out, _ := l.exec(ctx, "s4", "ss", "-Htn", "state", "established", "( sport = :21 )")
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 4 {
				peer := f[len(f)-1]
				if i := strings.LastIndex(peer, ":"); i > 0 {
					l.client4seen = peer[:i]
					return nil
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no control connection from c6 seen in s4")
}

// daemon is a running `ftpalg run` in the nat namespace.
type daemon struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

// startDaemon runs `ftpalg run --tayga-conf FILE` (plus extra flags) in nat
// and waits until it has diverted port 21 (its queue rule appears) or 5 s
// have passed.
func (l *lab) startDaemon(t *testing.T, name string, extra ...string) *daemon {
	t.Helper()
	logPath := filepath.Join(l.dir, "ftpalg-"+name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	args := append([]string{"netns", "exec", l.ns("nat"), l.bin, "run",
		"--tayga-conf", filepath.Join(l.dir, "tayga.conf"), "--log-level", "debug",
		"--state-dir", filepath.Join(l.dir, "state-"+name)}, extra...)
	cmd := exec.Command("ip", args...)
	cmd.Stdout = f
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ftpalg: %v", err)
	}
	d := &daemon{cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	addCleanup(func() { d.stop() })
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-d.done:
			d.done <- err
			t.Errorf("ftpalg run exited early: %v; log:\n%s", err, tail(logPath, 20))
			return d
		default:
		}
		out, _ := l.exec(context.Background(), "nat", "nft", "list", "ruleset")
		if strings.Contains(out, "NFQUEUE") || strings.Contains(out, "queue") {
			return d
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("ftpalg run: no queue rule in nat after 5 s; going on")
	return d
}

// stop sends SIGTERM and waits up to 5 s (then SIGKILL). It reports how
// the daemon ended; calling it again is harmless.
func (d *daemon) stop() error {
	if d == nil || d.cmd.Process == nil {
		return nil
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		err := <-d.done
		d.done <- err
		return fmt.Errorf("did not exit within 5 s of SIGTERM: %v", err)
	}
}

// stopDaemon stops the daemon, checks that it exited cleanly and removed
// its rules from nat, and logs its last line (its counters).
func (l *lab) stopDaemon(t *testing.T, d *daemon) {
	t.Helper()
	if err := d.stop(); err != nil {
		t.Errorf("ftpalg run: %v", err)
	}
	t.Logf("ftpalg: %s", tail(d.log, 1))
	out, err := l.exec(context.Background(), "nat", "nft", "list", "ruleset")
	if err != nil {
		t.Errorf("nft list ruleset: %v\n%s", err, out)
	} else if strings.Contains(out, "queue") {
		t.Errorf("ftpalg's queue rules are still in nat after it stopped:\n%s", out)
	}
	if t.Failed() {
		t.Logf("ftpalg log (last lines):\n%s", tail(d.log, 30))
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
