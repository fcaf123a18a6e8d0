//go:build linux && integration

package rules

import (
	"github.com/ftpalg/ftpalg/internal/testenv"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestIntegrationRulesShippedFiles loads the shipped files as an operator's
// /etc/nftables.conf would: the tables file must load on every kernel, this
// one included; the queue file where the kernel has nft_queue. What nft
// then lists is Render's ruleset (without the queue rules where they could
// not be loaded).
func TestIntegrationRulesShippedFiles(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	native, err := NativeQueue()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range shipped {
		t.Run(g.tables, func(t *testing.T) {
			tables, err := os.ReadFile(g.tables)
			if err != nil {
				t.Fatal(err)
			}
			queue, err := os.ReadFile(g.queue)
			if err != nil {
				t.Fatal(err)
			}
			ns := newNetNS(t)
			want := string(tables)
			// Twice: the files replace their own table.
			for range 2 {
				cmdIn(t, ns, string(tables), "nft", "-f", "-")
				if native {
					cmdIn(t, ns, string(queue), "nft", "-f", "-")
					want = withQueueRules(string(tables), string(queue))
				}
			}
			p, _ := newPlan(&g.cfg)
			if diff := cmp.Diff(listing(want), listing(ns.tables(t, p))); diff != "" {
				t.Errorf("nft list after nft -f %s (-files +nft list):\n%s", g.tables, diff)
			}
		})
	}
}

// TestIntegrationRulesScope sends FTP control connections from an address
// in the scope (translated traffic) and from one outside it (plain FTP
// through the box): only the first is queued, and only it gets the
// helper.
func TestIntegrationRulesScope(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	p := newPair(t)
	inScope := client4s[0]
	cfg := Config{
		Translator: Tayga, QueueNum: 6, Helper: true, NetNS: p.router.FD,
		Scope: []netip.Prefix{netip.MustParsePrefix(inScope + "/32"), netip.MustParsePrefix("2001:db8:64::/96")},
	}
	if err := Install(&cfg); err != nil {
		t.Fatal(err)
	}
	r := readQueues(t, p.router, cfg.QueueNum, 1)
	p.serve(t, 21)
	for _, from := range []string{inScope, client4} {
		if err := p.dial(from, router4, 21, 3*time.Second); err != nil {
			t.Fatalf("connect from %s: %v", from, err)
		}
	}
	got, errs := r.packets()
	for _, err := range errs {
		t.Errorf("queue reader: %v", err)
	}
	var syn bool
	for _, s := range got {
		if s.srcAddr != inScope && s.dstAddr != inScope {
			t.Errorf("queued a packet of plain FTP: %v", s)
		}
		syn = syn || s.syn && !s.ack
	}
	if !syn {
		t.Errorf("the SYN from %s (in scope) was not queued; queued: %v", inScope, got)
	}
	// The helper rule counted the one new connection in scope, not the
	// other.
	list := p.router.Run(t, "nft", "list", "chain", "ip", DefaultTable, helperChain)
	if !counters.MatchString(list) {
		t.Fatalf("no counters in:\n%s", list)
	}
	for _, want := range []string{
		"ip saddr @translated tcp dport 21 ct state new counter packets 1 ",
		"ip daddr @translated tcp dport 21 ct state new counter packets 0 ",
	} {
		if !strings.Contains(list, want) {
			t.Errorf("helper chain: want %q in:\n%s", want, list)
		}
	}
}
