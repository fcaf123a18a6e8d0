package mangle

import "net/netip"

// Helpers over packet that only the tests need.

func (p *packet) dstAddr() netip.Addr {
	if p.v6 {
		return netip.AddrFrom16(p.dst)
	}
	return netip.AddrFrom4([4]byte(p.dst[12:16]))
}

// checksumOK reports whether the packet's TCP checksum (and IPv4 header
// checksum) verify, computed from scratch (packet.checksumOK): the
// reference the tests and fuzz invariants check the engine's incremental
// updates against.
func checksumOK(b []byte) bool {
	var p packet
	return p.decode(b) == decodedTCP && p.checksumOK()
}
