// Package tayga is the Tayga side of the ALG: the tayga.conf(5) parser
// (with the map-file and dynamic.map Tayga reads), Load that reads them
// the one way the daemon and replay share, and Mapper, a pure
// mangle.Mapper for a Tayga NAT64.
//
// Tayga (https://github.com/apalrd/tayga, Debian's package is 0.9.2) is a
// stateless translator over a TUN device. It maps addresses only and
// never changes ports, so a data channel needs no mapping in the
// translator: the far peer is told the other family's address of the same
// host with the same port.
//
// How Tayga maps an address (addrmap.c, map_ip4_to_ip6/map_ip6_to_ip4):
// the longest matching entry wins among the static "map" lines, the
// dynamic pool's host bindings, the "ipv4-addr"/"ipv6-addr" pair and the
// RFC 6052 "prefix". An IPv4 address inside the dynamic pool with no host
// binding is not translated. An IPv6 address in the prefix whose embedded
// IPv4 address falls in a static map, the pool or Tayga's own address is
// dropped (hairpin).
//
// The well-known prefix 64:ff9b::/96 (RFC 6052 section 3.1): with
// "wkpf-strict" on (the default) Tayga refuses to embed or extract a
// non-global IPv4 address (RFC 1918, RFC 6598, RFC 5737 documentation
// ranges, 198.18.0.0/15) in that prefix, and silently drops such packets.
// Mapper treats those addresses as not translated. Tayga 0.9.2 has no
// "wkpf-strict" directive and always behaves as strict (without
// 100.64.0.0/10 in its list).
package tayga
