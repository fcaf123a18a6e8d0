package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The third party: an IPv4 host with its own link to the router, routed
// like the IPv4 client.
const third4 = "192.0.2.66"

// tpResult is the result line of test/lab/thirdparty.py.
type tpResult struct {
	ok        bool
	announced int
	probes    int
	through   int
	line      string
}

var tpLine = regexp.MustCompile(`(?m)^result (46|64) (pass|fail) announced=(\d+) probes=(\d+) through=(\d+) .*$`)

// addThirdParty builds namespace x4 (third4) linked to nat and removes it
// when the test ends.
func (l *lab) addThirdParty(t *testing.T) {
	t.Helper()
	x4 := l.ns("x4")
	steps := [][]string{
		{"ip", "netns", "add", x4},
		{"ip", "-n", x4, "link", "set", "lo", "up"},
		{"ip", "-n", l.ns("nat"), "link", "add", "x4", "type", "veth", "peer", "name", "eth0", "netns", x4},
		{"ip", "-n", x4, "addr", "add", third4 + "/32", "dev", "eth0"},
		{"ip", "-n", x4, "link", "set", "eth0", "up"},
		{"ip", "-n", l.ns("nat"), "link", "set", "x4", "up"},
		{"ip", "-n", x4, "route", "add", "192.0.2.1/32", "dev", "eth0"},
		{"ip", "-n", x4, "route", "add", "default", "via", "192.0.2.1"},
		{"ip", "-n", l.ns("nat"), "route", "add", third4 + "/32", "dev", "x4"},
	}
	del := func() { exec.Command("ip", "netns", "del", x4).Run() }
	addCleanup(del)
	t.Cleanup(del)
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(s, " "), err, out)
		}
	}
}

// thirdPartyCell runs one transfer with test/lab/thirdparty.py: 46 passive
// (PASV from c4) or 64 active (EPRT |2| from c6), while x4 tries the data
// port before, during and after it.
func (l *lab) thirdPartyCell(t *testing.T, server, kind string) tpResult {
	t.Helper()
	user, pass := credentials(server)
	args := []string{filepath.Join(l.repo, "test/lab/thirdparty.py"), "transfer", kind}
	ns := "c4"
	if kind == "46" {
		// Tayga keeps ports: the data port is the server's passive port,
		// on its static map address.
		args = append(args, server46, "--pool4", server46)
	} else {
		ns = "c6"
		args = append(args, server64, "--pool4", l.client4seen, "--announced", "eprt",
			"--c6", "2001:db8:2::2", "--server6", "2001:db8:64::c633:640a")
	}
	args = append(args, "--third-ns", l.ns("x4"), "--user", user, "--password", pass,
		"--file", "data.bin", "--sha256", l.sha)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := l.exec(ctx, ns, append([]string{"python3"}, args...)...)
	logPath := filepath.Join(l.dir, fmt.Sprintf("thirdparty-%s-%s.log", server, kind))
	os.WriteFile(logPath, []byte(out), 0o644)
	m := tpLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s %s: no result (%v):\n%s", server, kind, err, out)
	}
	r := tpResult{ok: m[2] == "pass", line: m[0]}
	r.announced, _ = strconv.Atoi(m[3])
	r.probes, _ = strconv.Atoi(m[4])
	r.through, _ = strconv.Atoi(m[5])
	t.Logf("%s %s: %s", server, kind, strings.TrimPrefix(m[0], "result "))
	return r
}

// TestIntegrationThirdPartyTayga: Tayga's data connections pass the
// firewall only as conntrack expectations the ALG (and the kernel's FTP
// helper) create, scoped to the control connection's peer. A third IPv4
// host tries each announced data port before, during and after the real
// transfer (46 passive, 64 active, each server): it never gets through, and
// every transfer delivers the file. Then, with the firewall removed, the
// same third party does get through: a stateless translator is transparent,
// and only a stateful firewall scopes its data ports (README.md).
func TestIntegrationThirdPartyTayga(t *testing.T) {
	l := getLab(t)
	l.addThirdParty(t)
	rules := filepath.Join(l.dir, "firewall.nft")
	if err := os.WriteFile(rules, []byte(firewallRuleset), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := l.exec(context.Background(), "nat", "nft", "-f", rules); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	fwOn := true
	removeFW := func() {
		if fwOn {
			fwOn = false
			l.exec(context.Background(), "nat", "nft", "delete", "table", "inet", "e2efw")
		}
	}
	addCleanup(removeFW)
	defer removeFW()

	d := l.startDaemon(t, "thirdparty")
	probes, through := 0, 0
	for _, srv := range servers {
		t.Run(srv, func(t *testing.T) {
			if err := l.startServer(srv); err != nil {
				t.Fatal(err)
			}
			if err := l.findClient4Seen(); err != nil {
				t.Fatal(err)
			}
			for _, kind := range []string{"46", "64"} {
				r := l.thirdPartyCell(t, srv, kind)
				probes += r.probes
				through += r.through
				if !r.ok {
					t.Errorf("%s %s: %s", srv, kind, r.line)
				}
			}
		})
	}
	t.Logf("behind the firewall: the third party tried %d times, got through %d times", probes, through)

	// Without the firewall: what a Tayga box exposes anyway.
	removeFW()
	if err := l.startServer("vsftpd"); err != nil {
		t.Fatal(err)
	}
	open := 0
	for _, kind := range []string{"46", "64"} {
		r := l.thirdPartyCell(t, "vsftpd", kind)
		open += r.through
	}
	if open == 0 {
		t.Error("without a firewall the third party got through nowhere: the probes may be blind")
	}
	t.Logf("without a firewall: the third party got through %d times (a stateless translator is transparent)", open)
	l.stopDaemon(t, d)
}
