//go:build linux && integration

package rules

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/test/testenv"
)

// TestIntegrationRulesEstablishedOnly sends a real connection through the
// Tayga rules with Bypass: its handshake is not queued (no SYN reaches the
// queue), conntrack's verdict puts it in the set of established
// connections, and its later packets are queued.
func TestIntegrationRulesEstablishedOnly(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	p := newPair(t)
	cfg := &Config{Translator: Tayga, QueueNum: 6, Bypass: true, NetNS: p.router.FD}
	if err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	r := readQueues(t, p.router, 6, 1)
	p.serve(t, 21)
	const sport = 40101
	if err := p.dialFrom(client4s[0], sport, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	// The client acknowledges the greeting and closes: those packets
	// are queued once the reader has them.
	var mine []seen
	for deadline := time.Now().Add(5 * time.Second); len(mine) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got, errs := r.packets()
		for _, err := range errs {
			t.Fatalf("queue reader: %v", err)
		}
		mine = mine[:0]
		for _, s := range got {
			if s.srcAddr == client4s[0] && s.sport == sport || s.dstAddr == client4s[0] && s.dport == sport {
				mine = append(mine, s)
			}
		}
	}
	if len(mine) == 0 {
		t.Errorf("no packet of the established connection was queued")
	}
	for _, s := range mine {
		if s.syn {
			t.Errorf("a handshake packet was queued: %v", s)
		}
	}
	list := p.router.Run(t, "nft", "list", "set", "ip", "ftpalg", EstablishedSet)
	if want := fmt.Sprintf("%s . %d . %s . 21", client4s[0], sport, router4); !strings.Contains(list, want) {
		t.Errorf("set %s lacks %s:\n%s", EstablishedSet, want, list)
	}
	t.Logf("queued: %v", mine)
}

// TestIntegrationRulesEstablishedPreload installs through a Keeper, as the
// daemon restores its table after "nft flush ruleset": the connections
// EstablishedNow gives are in the set at once.
func TestIntegrationRulesEstablishedPreload(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	ns := newNetNS(t)
	live := Conn{Client: netip.MustParseAddrPort("192.0.2.7:40007"), Server: netip.MustParseAddrPort("203.0.113.10:21")}
	var asked int
	cfg := &Config{Translator: Tayga, Bypass: true, NetNS: ns.FD,
		EstablishedNow: func() []Conn { asked++; return []Conn{live} }}
	k, err := NewKeeper(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := k.Install(); err != nil {
		t.Fatal(err)
	}
	list := ns.Run(t, "nft", "list", "set", "ip", "ftpalg", EstablishedSet)
	if want := "192.0.2.7 . 40007 . 203.0.113.10 . 21"; asked != 1 || !strings.Contains(list, want) {
		t.Errorf("asked %d times; set %s lacks %s:\n%s", asked, EstablishedSet, want, list)
	}
}
