package mangle

import "net/netip"

// RFC 6052 IPv4-embedded IPv6 addresses, shared by the translators
// (mangle/tayga and conntrackx/jool).

// rfc6052Len reports whether n is a prefix length RFC 6052 section 2.2
// allows.
func rfc6052Len(n int) bool {
	switch n {
	case 32, 40, 48, 56, 64, 96:
		return true
	}
	return false
}

// rfc6052Pos returns the byte offsets of the four IPv4 bytes in an
// RFC 6052 address with a prefix of n bits: they follow the prefix and
// skip byte 8 (bits 64-71, the "u" octet).
func rfc6052Pos(n int) (pos [4]int) {
	i := n / 8
	for k := range pos {
		if i == 8 {
			i++
		}
		pos[k] = i
		i++
	}
	return pos
}

// IsRFC6052Prefix reports whether p is an IPv6 prefix of a length RFC 6052
// section 2.2 allows (32, 40, 48, 56, 64 or 96).
func IsRFC6052Prefix(p netip.Prefix) bool { return p.Addr().Is6() && rfc6052Len(p.Bits()) }

// EmbedRFC6052 returns the IPv4-embedded IPv6 address of v4 in prefix
// (RFC 6052 section 2.2), or false if the prefix length is not one of
// 32, 40, 48, 56, 64, 96 or v4 is not IPv4. It applies no policy (see
// mangle/tayga for Tayga's).
func EmbedRFC6052(prefix netip.Prefix, v4 netip.Addr) (netip.Addr, bool) {
	if !rfc6052Len(prefix.Bits()) || !prefix.Addr().Is6() || !v4.Unmap().Is4() {
		return netip.Addr{}, false
	}
	b := prefix.Masked().Addr().As16()
	for i := prefix.Bits() / 8; i < 16; i++ {
		b[i] = 0
	}
	a4 := v4.Unmap().As4()
	for k, i := range rfc6052Pos(prefix.Bits()) {
		b[i] = a4[k]
	}
	return netip.AddrFrom16(b), true
}

// ExtractRFC6052 returns the IPv4 address embedded in v6 by prefix
// (RFC 6052 section 2.3), or false if v6 is not in prefix, the prefix
// length is not allowed, or the u octet or the suffix is not zero (Tayga
// drops such addresses).
func ExtractRFC6052(prefix netip.Prefix, v6 netip.Addr) (netip.Addr, bool) {
	if !rfc6052Len(prefix.Bits()) || !v6.Is6() || v6.Is4In6() || !prefix.Contains(v6) {
		return netip.Addr{}, false
	}
	b := v6.As16()
	pos := rfc6052Pos(prefix.Bits())
	var a4 [4]byte
	for k, i := range pos {
		a4[k] = b[i]
		b[i] = 0
	}
	for i := max(prefix.Bits()/8, 8); i < 16; i++ {
		if b[i] != 0 {
			return netip.Addr{}, false
		}
	}
	return netip.AddrFrom4(a4), true
}
