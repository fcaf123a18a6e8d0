// Package ftpcap builds synthetic FTP control connections as packets, as an
// FTP ALG sitting inside a NAT64 sees them, and checks what an ALG made of
// them.
//
// A Conv is a script of what each endpoint sends. Because the ALG may change
// the length of what it forwards, each write also declares what the peer
// receives (the expected output of the ALG). The generator then numbers
// every packet the way the real endpoint would: an endpoint's sequence
// numbers count the bytes it sent, its acknowledgements (and SACK blocks)
// count the bytes it received. The packets are therefore exactly what
// arrives at the ALG from both ends, and an ALG that forwards them must
// translate the acknowledgements of one side into the numbering of the
// other.
//
// Packets renders the conversation on either leg of the translator (IPv4 or
// IPv6 addresses of the same connection); Link frames raw IP packets for a
// pcap link type; WritePcap, WritePcapNg and ReadPcap move them through
// files. Check verifies the checksums, TCP byte streams and
// acknowledgements of a capture taken on one wire; CheckALG does the same
// for what an ALG emitted given what it received (on each endpoint's wire:
// the endpoint's own packets and the ALG's packets to it). Both return the
// streams so that tests can assert the FTP text. The command ftpcapcheck
// runs them on capture files.
package ftpcap
