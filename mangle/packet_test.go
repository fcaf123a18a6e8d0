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
// checksum) verify: the reference the tests and fuzz invariants check
// the engine's incremental updates against.
func checksumOK(b []byte) bool {
	var p packet
	if p.decode(b) != decodedTCP {
		return false
	}
	b = p.b
	var acc uint64
	if p.v6 {
		acc = sum(0, b[8:40])
	} else {
		if fold(sum(0, b[:p.tcp])) != 0xffff {
			return false
		}
		acc = sum(0, b[12:20])
	}
	acc += uint64(protoTCP) + uint64(len(b)-p.tcp)
	acc = sum(acc, b[p.tcp:])
	return fold(acc) == 0xffff
}

// makeFlowKey builds a FlowKey from the client and server endpoints.
func makeFlowKey(client, server netip.AddrPort) FlowKey {
	k := FlowKey{cport: client.Port(), sport: server.Port(), v6: client.Addr().Is6() && !client.Addr().Is4In6()}
	k.client = client.Addr().As16()
	k.server = server.Addr().As16()
	return k
}
