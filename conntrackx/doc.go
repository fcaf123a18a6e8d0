// Package conntrackx holds the kernel state beside the translator: the
// conntrack table (flow lookups, such as finding which IPv6 host Tayga gave
// a dynamic-pool address), Jool's Generic Netlink API (static BIB entries
// for data channels), and the mangle.Mapper backends built on them. It
// talks to the kernel over netlink in a namespace it is given, never by
// switching a goroutine's namespace.
package conntrackx
