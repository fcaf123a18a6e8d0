//go:build linux && integration

package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ftpalg/ftpalg/internal/testenv"
)

// TestIntegrationRulesCLI runs 'ftpalg rules install|remove' in a network
// namespace of its own, as root and as a root without capabilities.
func TestIntegrationRulesCLI(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft", "setpriv")
	ns := testenv.NewNetNS(t, "ftpalg-cli").Name

	ftpalg := func(prefix []string, args ...string) (code int, stdout, stderr string) {
		t.Helper()
		argv := append([]string{"netns", "exec", ns}, prefix...)
		argv = append(argv, os.Args[0], "-test.run=^TestRulesHelperProcess$", "--")
		cmd := exec.Command("ip", append(argv, args...)...)
		cmd.Env = append(os.Environ(), "FTPALG_RULES_HELPER=1")
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			code = exit.ExitCode()
		case err != nil:
			t.Fatal(err)
		}
		return code, o.String(), e.String()
	}
	ruleset := func() string {
		t.Helper()
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list ruleset: %v: %s", err, out)
		}
		return string(out)
	}

	noCaps := []string{"setpriv", "--bounding-set=-all", "--inh-caps=-all"}
	code, _, stderr := ftpalg(noCaps, "rules", "install", "--translator", "tayga")
	if code != 1 || stderr != "ftpalg rules install: permission denied (needs CAP_NET_ADMIN: run as root)\n" {
		t.Errorf("install without CAP_NET_ADMIN: exit %d, stderr %q", code, stderr)
	}

	code, stdout, stderr := ftpalg(nil, "rules", "install", "--translator", "jool", "--queue-num", "7")
	if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "installed table ip ftpalg") {
		t.Fatalf("install: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	t.Log(strings.TrimSpace(stdout))
	got := ruleset()
	for _, want := range []string{"table ip ftpalg {", "hook prerouting priority raw;", "hook postrouting priority 300;", "tcp sport 21 counter packets 0 bytes 0 queue num 7 bypass"} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}

	code, _, stderr = ftpalg(noCaps, "rules", "remove")
	if code != 1 || stderr != "ftpalg rules remove: permission denied (needs CAP_NET_ADMIN: run as root)\n" {
		t.Errorf("remove without CAP_NET_ADMIN: exit %d, stderr %q", code, stderr)
	}
	if code, stdout, stderr = ftpalg(nil, "rules", "remove"); code != 0 || stdout != "" || stderr != "" {
		t.Errorf("remove: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if got := ruleset(); got != "" {
		t.Errorf("ruleset after remove:\n%s", got)
	}
}
