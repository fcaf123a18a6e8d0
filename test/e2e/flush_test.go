package e2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestIntegrationFlush flushes nat's whole ruleset while ftpalg runs there,
// as "systemctl reload nftables" does with Debian's /etc/nftables.conf:
// the daemon's table must be back within a second, and FTP through the
// translator must still be translated (a 46 PASV transfer, which fails
// without the ALG).
func TestIntegrationFlush(t *testing.T) {
	l := getLab(t)
	const srv = "vsftpd"
	if err := l.startServer(srv); err != nil {
		t.Fatal(err)
	}
	d := l.startDaemon(t, "flush")
	defer l.stopDaemon(t, d)
	c := cell{kind: k46, client: "ftplib", mode: "PASV", without: mustFail}
	if r := l.runCell(t, srv, c, "before-flush"); !r.ok {
		t.Fatalf("before the flush: %s", r.detail)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := l.exec(ctx, "nat", "nft", "flush", "ruleset"); err != nil {
		t.Fatalf("nft flush ruleset: %v\n%s", err, out)
	}
	flushed := time.Now()
	for {
		out, _ := l.exec(ctx, "nat", "nft", "list", "table", "ip", "ftpalg")
		if strings.Contains(out, "queue") || strings.Contains(out, "NFQUEUE") {
			break
		}
		// The bound is the requirement (back within a second), not a
		// guess at the machine's speed.
		if time.Since(flushed) > time.Second {
			t.Fatalf("ftpalg's table not back within a second of nft flush ruleset:\n%s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("table back within %v of nft flush ruleset", time.Since(flushed))
	if r := l.runCell(t, srv, c, "after-flush"); !r.ok {
		t.Errorf("after the flush, with the table restored: %s", r.detail)
	}
	if log := tail(d.log, 50); !strings.Contains(log, "restored") {
		t.Errorf("the restore is not in the daemon's log:\n%s", log)
	}
}
