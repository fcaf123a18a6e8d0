//go:build linux && integration

package rules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"

	"github.com/ftpalg/ftpalg/test/testenv"
)

// TestIntegrationKeeperSwitchQueues: SwitchQueues points the queueing rules
// at the new queues and leaves the rest in place: the base chains (their
// handles: a replaced table would have new ones, and its hooks would have
// been unregistered, which drops every queued packet) and the set of
// shifted connections with its elements.
func TestIntegrationKeeperSwitchQueues(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	p := newPair(t)
	c1 := Conn{Client: netip.MustParseAddrPort(client4s[0] + ":40001"), Server: netip.MustParseAddrPort(router4 + ":21")}
	old := &Config{Translator: Tayga, QueueNum: 0, Queues: 2, Bypass: true, NetNS: p.router.FD, Shifted: []Conn{c1}}
	cur := *old
	cur.QueueNum, cur.Shifted = 2, nil

	k, err := NewKeeper(&cur)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := k.SwitchQueues(); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("SwitchQueues without a table: %v, want ErrNotInstalled", err)
	}
	if err := Install(old); err != nil {
		t.Fatal(err)
	}
	handles := func() string {
		text := p.router.Run(t, "nft", "-a", "list", "table", "ip", "ftpalg")
		return strings.Join(regexp.MustCompile(`chain \w+ \{ # handle \d+`).FindAllString(text, -1), "; ")
	}
	before := handles()
	// The divert chain's rules, queue numbers and counters aside: the
	// switch must rebuild the same rules (the established connections'
	// lookups and the unqueued counter included), only on other queues.
	divertText := func() string {
		text := p.router.Run(t, "nft", "list", "chain", "ip", "ftpalg", "divert")
		text = regexp.MustCompile(`packets \d+ bytes \d+`).ReplaceAllString(text, "")
		text = regexp.MustCompile(`queue (flags \w+ )?(num|to) [0-9-]+`).ReplaceAllString(text, "queue")
		return regexp.MustCompile(`xt target "NFQUEUE"`).ReplaceAllString(text, "queue")
	}
	rulesBefore := divertText()
	if got := divertQueues(t, &cur); fmt.Sprint(got) != "[0 0 0]" {
		t.Fatalf("installed rules queue to %v, want [0 0 0]", got)
	}
	if err := k.SwitchQueues(); err != nil {
		t.Fatal(err)
	}
	if got := divertQueues(t, &cur); fmt.Sprint(got) != "[2 2 2]" {
		t.Errorf("after the switch the rules queue to %v, want [2 2 2]", got)
	}
	if after := divertText(); after != rulesBefore {
		t.Errorf("the switch changed the divert rules:\nbefore:\n%s\nafter:\n%s", rulesBefore, after)
	}
	if after := handles(); after != before || before == "" {
		t.Errorf("chains replaced: before %q, after %q", before, after)
	}
	list := p.router.Run(t, "nft", "list", "set", "ip", "ftpalg", "shifted")
	if !strings.Contains(list, fmt.Sprintf("%s . 40001 . %s . 21", client4s[0], router4)) {
		t.Errorf("the set lost its element:\n%s", list)
	}
	if ok, err := k.k.present(); !ok || err != nil {
		t.Errorf("present after the switch: %v, %v", ok, err)
	}
}

// divertQueues lists the first queue of each rule of the divert chain.
func divertQueues(t *testing.T, cfg *Config) []uint16 {
	t.Helper()
	conn, err := dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: "ftpalg"}
	rules, err := conn.GetRules(tbl, &nftables.Chain{Name: divertChain, Table: tbl})
	if err != nil {
		t.Fatal(err)
	}
	var qs []uint16
	for _, r := range rules {
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case *expr.Queue:
				qs = append(qs, e.Num)
			case *expr.Target:
				if b, ok := e.Info.(*xt.Unknown); ok {
					qs = append(qs, binary.NativeEndian.Uint16((*b)[0:]))
				}
			}
		}
	}
	return qs
}
