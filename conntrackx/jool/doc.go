// Package jool is the Jool side of the ALG: a client of a Jool NAT64
// instance's Generic Netlink API (client.go, messages.go, one file per table:
// bib.go, pool4.go, session.go, global.go) and Mapper, the mangle.Mapper
// that adds static BIB entries for data channels.
//
// It talks to the kernel over netlink in a namespace it is given, never by
// switching a goroutine's namespace. The golden messages in testdata were
// captured from a real Jool 4.1.9.
package jool
