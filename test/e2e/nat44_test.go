package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// server4 is the IPv4 server, dialled directly (routed, not translated).
const server4 = "198.51.100.10"

// nat44Ruleset is an operator's NAT44 for the same box: the IPv4 client's
// network masqueraded towards the IPv4 server's, with the kernel's FTP
// helper attached by a rule of the operator's own, at the usual filter
// priority. With it, nf_nat_ftp rewrites the client's PORT to the masquerade
// address and the server's data connection is expected and NATed back.
const nat44Ruleset = `table ip e2enat44 {
	ct helper ftp-std {
		type "ftp" protocol tcp
		l3proto ip
	}

	chain pre {
		type filter hook prerouting priority filter; policy accept;
		ip saddr 192.0.2.0/24 ip daddr 198.51.100.0/24 tcp dport 21 ct state new counter ct helper set "ftp-std"
	}

	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 192.0.2.0/24 ip daddr 198.51.100.0/24 masquerade
	}
}
`

// TestIntegrationNAT44 runs plain IPv4 FTP through the translator's box,
// NATed (not translated), while ftpalg runs there: the daemon's rules must
// leave it to the kernel's own FTP helper. An active transfer through
// masquerade works only if nf_nat_ftp rewrites the PORT command, which
// needs the operator's helper on the connection; a daemon whose helper rule
// caught every FTP connection (its carrier helper, at a priority before the
// operator's) would take it, and the transfer would fail.
func TestIntegrationNAT44(t *testing.T) {
	l := getLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rules := filepath.Join(l.dir, "nat44.nft")
	if err := os.WriteFile(rules, []byte(nat44Ruleset), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := l.exec(ctx, "nat", "nft", "-f", rules); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	if out, err := l.exec(ctx, "c4", "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1"); err != nil {
		t.Fatalf("route: %v\n%s", err, out)
	}
	removed := false
	remove := func() {
		if !removed {
			removed = true
			l.exec(context.Background(), "nat", "nft", "delete", "table", "ip", "e2enat44")
			l.exec(context.Background(), "c4", "ip", "route", "del", "198.51.100.0/24", "via", "192.0.2.1")
		}
	}
	addCleanup(remove)
	defer remove()

	const srv = "vsftpd"
	if err := l.startServer(srv); err != nil {
		t.Fatal(err)
	}
	d := l.startDaemon(t, "nat44")
	defer l.stopDaemon(t, d)
	user, pass := credentials(srv)
	for _, mode := range []string{"PASV", "PORT"} {
		t.Run(mode, func(t *testing.T) {
			out := filepath.Join(l.dir, "out", "nat44-"+mode+".bin")
			args := []string{"python3", filepath.Join(l.repo, "test", "lab", "ftpclient.py"), server4, mode,
				"--user", user, "--password", pass, "--timeout", "3", "--get", "data.bin", "--out", out}
			text, err := l.exec(ctx, "c4", args...)
			t.Logf("%s: %s\n%s", strings.Join(args, " "), errText(err), quiet(text))
			if err != nil {
				t.Fatalf("NAT44 %s transfer with ftpalg running: %s", mode, firstLine(text, err))
			}
			if got, err := fileSHA256(out); err != nil || got != l.sha {
				t.Fatalf("download: sha256 %s, want %s (%v)", got, l.sha, err)
			}
			os.Remove(out)
		})
	}

	// The connections carried the kernel's FTP helper (conntrack names
	// the helper's type), set by the operator's rule, not ftpalg's
	// carrier (type sane); and ftpalg's rules never saw them.
	ct, err := l.exec(ctx, "nat", "conntrack", "-L", "-p", "tcp", "--orig-dst", server4, "--dport", "21")
	t.Logf("conntrack in nat:\n%s", ct)
	if err != nil || !strings.Contains(ct, "helper=ftp ") {
		t.Errorf("no NAT44 control connection with the kernel's FTP helper in conntrack (%v)", err)
	}
	if strings.Contains(ct, "helper=sane") {
		t.Errorf("a NAT44 control connection got ftpalg's carrier helper")
	}
	op, _ := l.exec(ctx, "nat", "nft", "list", "chain", "ip", "e2enat44", "pre")
	if !strings.Contains(op, "counter packets 2 ") {
		t.Errorf("the operator's helper rule did not count the two control connections:\n%s", op)
	}
	list, _ := l.exec(ctx, "nat", "nft", "list", "table", "ip", "ftpalg")
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, "counter packets") && !strings.Contains(line, "counter packets 0 ") {
			t.Errorf("ftpalg's rule counted NAT44 packets: %s", strings.TrimSpace(line))
		}
	}
}
