//go:build linux && integration

package rules

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/internal/testenv"
)

// TestIntegrationPeerFilter pushes real TCP connections through the peer
// filter: the router (192.0.2.1) stands in for Jool's pool4 address with
// listeners on ports of the reserved range; the client namespace holds
// both the admitted peer (192.0.2.2) and a third party (192.0.2.10).
func TestIntegrationPeerFilter(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	p := newPair(t)
	const mapped, other = 61005, 61006
	p.serve(t, mapped)
	p.serve(t, other)
	cfg := &Config{Translator: Jool, PeerFilter: [2]uint16{61000, 61999}, Bypass: true, NetNS: p.router.FD}
	if err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	g, err := OpenPeerGuard(cfg)
	if err != nil {
		t.Fatal(err)
	}
	peer, third := client4, client4s[0]
	const refused = 700 * time.Millisecond // a dropped SYN: no answer at all
	const patient = 5 * time.Second
	mustFail := func(from string, port int, when string) {
		t.Helper()
		if err := p.dial(from, router4, port, refused); err == nil {
			t.Errorf("%s: %s connected to port %d", when, from, port)
		}
	}
	mustPass := func(from string, port int, when string) {
		t.Helper()
		if err := p.dial(from, router4, port, patient); err != nil {
			t.Errorf("%s: %s to port %d: %v", when, from, port, err)
		}
	}
	m := netip.AddrPortFrom(netip.MustParseAddr(router4), mapped)
	if err := g.Admit(netip.MustParseAddr(peer), m, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// Admitting again is fine (a mapping requested twice).
	if err := g.Admit(netip.MustParseAddr(peer), m, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	mustFail(third, mapped, "before the peer")
	mustPass(third, other, "a port of the range that is no mapping") // no collateral
	mustPass(peer, mapped, "the peer")
	mustFail(third, mapped, "after the peer")
	mustFail(peer, mapped, "the peer's second connection") // narrowed to the first

	// An operator's accept in another table, before and after ours, cannot
	// undo the drop.
	cmdIn(t, p.router, `table inet operator {
	chain early {
		type filter hook prerouting priority -150; policy accept;
		tcp dport 61005 accept
	}
	chain late {
		type filter hook prerouting priority -78; policy accept;
		tcp dport 61005 accept
	}
}
`, "nft", "-f", "-")
	if err := g.Admit(netip.MustParseAddr(peer), m, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	mustFail(third, mapped, "with the operator's accepts")
	mustPass(peer, mapped, "the peer with the operator's accepts")

	// A retransmitted SYN of the admitted connection passes: the client
	// drops the first SYN-ACK, so its kernel sends the SYN again (after
	// about 1 s).
	cmdIn(t, p.client, `table inet lossy {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp sport 61005 tcp flags & (syn|ack) == syn|ack quota 1 bytes drop
	}
}
`, "nft", "-f", "-")
	if err := g.Admit(netip.MustParseAddr(peer), m, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	mustPass(peer, mapped, "the peer whose SYN-ACK was lost")
	if out := p.client.Run(t, "nft", "list", "table", "inet", "lossy"); !strings.Contains(out, "quota 1 bytes used") {
		t.Errorf("the first SYN-ACK was not dropped, no retransmission tested:\n%s", out)
	}

	// An admission expires unused.
	if err := g.Admit(netip.MustParseAddr(peer), m, time.Second); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, patient, "the admission expires after its 1 s timeout", func() bool {
		_, peers, _, err := g.GuardedCount()
		return err == nil && peers == 0
	})
	mustFail(peer, mapped, "after the admission expired")

	// Released: nothing of it is left, and the port is unguarded.
	if err := g.Admit(netip.MustParseAddr(peer), m, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	m2 := netip.AddrPortFrom(netip.MustParseAddr(router4), other)
	if err := g.Admit(netip.MustParseAddr(peer), m2, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := g.Release(m, m2); err != nil { // one call for a round's mappings
		t.Fatal(err)
	}
	if maps, peers, conns, err := g.GuardedCount(); err != nil || maps+peers+conns != 0 {
		t.Errorf("after Release: %d mappings, %d admissions, %d connections (err %v), want none", maps, peers, conns, err)
	}
	mustPass(third, mapped, "after Release")
	// Releasing what is not guarded is no error.
	if err := g.Release(m); err != nil {
		t.Error(err)
	}
}

// TestIntegrationPeerGuardNoFilter: without the filter installed the guard
// cannot be opened, so the daemon maps nothing unguarded.
func TestIntegrationPeerGuardNoFilter(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	ns := newNetNS(t)
	cfg := &Config{Translator: Jool, NetNS: ns.FD}
	if err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPeerGuard(cfg); err == nil {
		t.Error("OpenPeerGuard without the peer filter: no error")
	}
}

// TestIntegrationPeerFilterRestore flushes the whole ruleset (a
// "systemctl reload nftables") while a mapping is guarded: the Keeper puts
// the table back, and the guard's mappings and admissions with it, so a
// third party still cannot use the mapping and the peer still can.
func TestIntegrationPeerFilterRestore(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	p := newPair(t)
	const mapped = 61005
	p.serve(t, mapped)
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
	g, err := OpenPeerGuard(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k.OnRestore(g.Restore)
	m := netip.AddrPortFrom(netip.MustParseAddr(router4), mapped)
	if err := g.Admit(netip.MustParseAddr(client4), m, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	p.router.Run(t, "nft", "flush ruleset")
	if !k.check(func(e KeeperEvent) {
		if e.Err != nil {
			t.Error(e.Err)
		}
	}) || k.Restores() != 1 {
		t.Fatalf("check after flush: restores %d, want 1", k.Restores())
	}
	if maps, peers, _, err := g.GuardedCount(); err != nil || maps != 1 || peers != 1 {
		t.Fatalf("after the restore: %d mappings, %d admissions (err %v), want 1 and 1", maps, peers, err)
	}
	if err := p.dial(client4s[0], router4, mapped, 700*time.Millisecond); err == nil {
		t.Errorf("a third party connected through the mapping after the restore")
	}
	if err := p.dial(client4, router4, mapped, 5*time.Second); err != nil {
		t.Errorf("the peer after the restore: %v", err)
	}
}
