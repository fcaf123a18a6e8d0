//go:build linux && integration

package rules

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/test/testenv"
)

// TestIntegrationOriginMark sends real IPv6 SYNs through the origin chain:
// the client namespace (2001:db8::2) stands in for the IPv6 server of a 46
// session, the router's address for the client's address in pool6. A chain
// after the origin chain and before Jool's priority counts the SYNs that
// carry the mark: only the marked pair's must (to any port), and again
// after an "nft flush ruleset" that the Keeper undid.
func TestIntegrationOriginMark(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	p := newPair(t)
	const marked, other = 61005, 61006
	p.serve(t, marked)
	p.serve(t, other)
	cfg := &Config{Translator: Jool, PeerFilter: [2]uint16{61000, 61999}, Bypass: true, NetNS: p.router.FD}
	k, err := NewKeeper(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Install(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		k.Remove()
		k.Close()
	})
	o, err := OpenOriginMarker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k.OnRestore(o.Restore)
	const mark = 46000
	// A second address of the client namespace: a server whose pair has
	// no mark.
	const otherServer = "2001:db8::3"
	p.client.Run(t, "ip", "addr", "add", otherServer+"/64", "dev", "c0", "nodad")
	addCounter := func() {
		t.Helper()
		cmdIn(t, p.router, fmt.Sprintf(`table ip6 count {
	chain pre {
		type filter hook prerouting priority -78; policy accept;
		meta mark %d tcp flags & syn == syn counter
	}
}
`, mark), "nft", "-f", "-")
	}
	count := func() int {
		t.Helper()
		out := p.router.Run(t, "nft", "list", "table", "ip6", "count")
		m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no counter in\n%s", out)
		}
		var n int
		fmt.Sscan(m[1], &n)
		return n
	}
	addCounter()
	server, client := netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr(router6)
	if err := o.Mark(server, client, mark+1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := o.Mark(server, client, mark, 30*time.Second); err != nil { // again: a fresh timeout, the new mark
		t.Fatal(err)
	}
	if n, err := o.Marked(); err != nil || n != 1 {
		t.Fatalf("Marked = %d, %v; want 1", n, err)
	}
	if err := p.dial(otherServer, router6, other, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Errorf("an unmarked pair's SYN carried the mark (%d)", n)
	}
	for _, port := range []int{marked, other} { // any port: active and default mode
		if err := p.dial("2001:db8::2", router6, port, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(); n != 2 {
		t.Errorf("%d marked SYNs, want 2", n)
	}
	if err := p.dial("", router4, marked, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Errorf("IPv4 to the same port: %d marked SYNs, want still 2", n)
	}

	p.router.Run(t, "nft", "flush ruleset")
	if !k.check(func(e KeeperEvent) {
		if e.Err != nil {
			t.Error(e.Err)
		}
	}) || k.Restores() != 1 {
		t.Fatalf("check after flush: restores %d, want 1", k.Restores())
	}
	if n, err := o.Marked(); err != nil || n != 1 {
		t.Fatalf("after the restore: Marked = %d, %v; want 1", n, err)
	}
	addCounter()
	if err := p.dial("2001:db8::2", router6, marked, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Errorf("after the restore: %d marked SYNs, want 1", n)
	}
	if out := p.router.Run(t, "nft", "list", "map", "ip6", "ftpalg", originMap); !strings.Contains(out, "2001:db8::2 . 2001:db8::1 ") {
		t.Errorf("origin map after the restore:\n%s", out)
	}
}

// TestIntegrationOriginMarkerNoMap: without the reserved range there is no
// origin map to open.
func TestIntegrationOriginMarkerNoMap(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	ns := newNetNS(t)
	cfg := &Config{Translator: Jool, NetNS: ns.FD}
	if err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenOriginMarker(cfg); err == nil {
		t.Error("OpenOriginMarker without the origin map: no error")
	}
}
