package rules

import "net/netip"

// The shipped rulesets (tayga.nft and tayga-queue.nft, jool.nft and
// jool-queue.nft) are rendered from these Configs: what 'ftpalg run' installs
// with its defaults (fail-open; Tayga with the conntrack helpers), for a
// translator with the example addresses below (documentation ranges). An
// operator edits the elements of set "translated" to the translator's own
// addresses, or prints the real thing with 'ftpalg rules print'.
var (
	ShippedTayga = Config{Translator: Tayga, Bypass: true, Helper: true, Scope: exampleTaygaScope}
	ShippedJool  = Config{Translator: Jool, Bypass: true, Scope: exampleJoolScope}
)

// exampleTaygaScope is the scope of a Tayga with "ipv4-addr 192.168.255.1",
// "ipv6-addr 2001:db8:ffff::1", "prefix 2001:db8:64::/96",
// "dynamic-pool 192.168.255.0/24" and "map 203.0.113.10 2001:db8:1::10".
var exampleTaygaScope = []netip.Prefix{
	netip.MustParsePrefix("192.168.255.0/24"),
	netip.MustParsePrefix("203.0.113.10/32"),
	netip.MustParsePrefix("2001:db8:64::/96"),
	netip.MustParsePrefix("2001:db8:ffff::1/128"),
	netip.MustParsePrefix("2001:db8:1::10/128"),
}

// exampleJoolScope is the scope of a Jool with pool4 192.0.2.1 and pool6
// 2001:db8:64::/96.
var exampleJoolScope = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.1/32"),
	netip.MustParsePrefix("2001:db8:64::/96"),
}
