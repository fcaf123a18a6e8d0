package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIntegrationDemo runs test/demo.sh (what `make demo` shows a newcomer)
// so that it cannot rot: without ftpalg every transfer fails, with it every
// one works, and it leaves no namespace behind.
func TestIntegrationDemo(t *testing.T) {
	l := getLab(t) // for the binary; the demo builds a lab of its own
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(l.repo, "test", "demo.sh"))
	cmd.Env = append(os.Environ(), "FTPALG_BIN="+l.bin)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("test/demo.sh:\n%s", out)
	if err != nil {
		t.Fatalf("test/demo.sh: %v", err)
	}
	for _, want := range []string{
		"227 Entering Passive Mode (0,0,0,0,", // vsftpd's answer to PASV on IPv6
		"without ftpalg: 0 of 4 transfers passed",
		"with ftpalg:    4 of 4 transfers passed",
		"its rules are gone",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// "ready (namespaces demo123-{c4,c6,nat,s4,s6})"
	_, after, _ := strings.Cut(string(out), "(namespaces ")
	prefix, _, ok := strings.Cut(after, "{")
	if !ok || prefix == "" {
		t.Fatal("demo output does not name its namespaces")
	}
	ns, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(ns), "\n") {
		if strings.HasPrefix(line, prefix) {
			t.Errorf("namespace left behind: %s", line)
		}
	}
}
