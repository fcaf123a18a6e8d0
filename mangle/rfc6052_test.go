package mangle

import (
	"net/netip"
	"testing"
)

// The example of RFC 6052 section 2.4: 192.0.2.33 in every prefix length.
var (
	ad  = netip.MustParseAddr
	pfx = netip.MustParsePrefix
)

func TestRFC6052Vectors(t *testing.T) {
	tests := []struct {
		prefix, v6 string
	}{
		{"2001:db8::/32", "2001:db8:c000:221::"},
		{"2001:db8:100::/40", "2001:db8:1c0:2:21::"},
		{"2001:db8:122::/48", "2001:db8:122:c000:2:2100::"},
		{"2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"},
		{"2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"},
		{"2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"},
		{"64:ff9b::/96", "64:ff9b::192.0.2.33"},
	}
	v4 := ad("192.0.2.33")
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			p := pfx(tt.prefix)
			got, ok := EmbedRFC6052(p, v4)
			if !ok || got != ad(tt.v6) {
				t.Errorf("EmbedRFC6052(%v, %v) = %v, %v; want %v", p, v4, got, ok, tt.v6)
			}
			back, ok := ExtractRFC6052(p, ad(tt.v6))
			if !ok || back != v4 {
				t.Errorf("ExtractRFC6052(%v, %v) = %v, %v; want %v", p, tt.v6, back, ok, v4)
			}
		})
	}
}

func TestRFC6052Invalid(t *testing.T) {
	tests := []struct {
		name, prefix, v6 string
	}{
		{"u octet set /32", "2001:db8::/32", "2001:db8:c000:221:100::"},
		{"u octet set /64", "2001:db8:122:344::/64", "2001:db8:122:344:1c0:2:2100:0"},
		{"suffix set /40", "2001:db8:100::/40", "2001:db8:1c0:2:21::1"},
		{"suffix set /56", "2001:db8:122:300::/56", "2001:db8:122:3c0:0:221:0:1"},
		{"outside prefix", "2001:db8:122:344::/96", "2001:db8:122:345::192.0.2.33"},
		{"length not allowed", "2001:db8:122:344::/80", "2001:db8:122:344::192.0.2.33"},
		{"IPv4-mapped", "2001:db8::/32", "::ffff:192.0.2.33"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, ok := ExtractRFC6052(pfx(tt.prefix), ad(tt.v6)); ok {
				t.Errorf("ExtractRFC6052(%s, %s) = %v, want failure", tt.prefix, tt.v6, got)
			}
		})
	}
	if got, ok := EmbedRFC6052(pfx("2001:db8::/80"), ad("192.0.2.33")); ok {
		t.Errorf("EmbedRFC6052 with /80 = %v, want failure", got)
	}
	if got, ok := EmbedRFC6052(pfx("2001:db8::/96"), ad("2001:db8::1")); ok {
		t.Errorf("EmbedRFC6052 of an IPv6 address = %v, want failure", got)
	}
}
