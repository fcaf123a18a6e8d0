package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/ftpalg/ftpalg/mangle/tayga"
)

// scopeFlag is a comma-separated list of addresses and prefixes: the
// translator's own addresses (rules.Config.Scope).
type scopeFlag []netip.Prefix

func (s *scopeFlag) String() string {
	t := make([]string, len(*s))
	for i, p := range *s {
		t[i] = p.String()
	}
	return strings.Join(t, ",")
}

func (s *scopeFlag) Set(v string) error {
	var out []netip.Prefix
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("bad address or prefix %q", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	*s = out
	return nil
}

// taygaScope is the set of addresses a Tayga translates from or to: every
// translated packet has one of them as source or destination, on either
// leg. IPv4: its own address, its dynamic pool and the IPv4 side of its
// map entries; IPv6: its own address, its prefix and the IPv6 side of its
// map entries.
func taygaScope(tc *tayga.Config) []netip.Prefix {
	var s []netip.Prefix
	add := func(p netip.Prefix) {
		if p.IsValid() {
			s = append(s, p)
		}
	}
	addr := func(a netip.Addr) {
		if a.IsValid() {
			add(netip.PrefixFrom(a, a.BitLen()))
		}
	}
	addr(tc.IPv4Addr)
	addr(tc.IPv6Addr)
	add(tc.Prefix)
	add(tc.DynamicPool)
	for _, m := range tc.Maps {
		add(m.V4)
		add(m.V6)
	}
	return s
}

// errInstance is wrapped by the error of a second daemon on the same table
// or queue.
var errInstance = errors.New("instance in use")
