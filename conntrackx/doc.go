// Package conntrackx holds the kernel state beside the translator: the
// conntrack table (flow lookups, such as finding which IPv6 host Tayga gave
// a dynamic-pool address), conntrack expectations (firewall pinholes for
// data connections) and PinholeMapper, the mangle.Mapper decorator that
// creates them. The Jool client and mapper are in conntrackx/jool. It talks
// to the kernel over netlink in a namespace it is given, never by switching
// a goroutine's namespace.
package conntrackx
