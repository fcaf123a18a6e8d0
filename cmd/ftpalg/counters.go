package main

import (
	"github.com/ftpalg/ftpalg/cmd/ftpalg/internal/nfq"
)

// counter is one per-queue number of the daemon, named once for every
// place that shows it: the rows of 'ftpalg status', its --explain, and
// the metric (ftpalg_<key>_total for counters, ftpalg_<key> for gauges).
type counter struct {
	key     string // metric name part: "nfqueue_packets"
	label   string // status row: "packets queued"
	help    string // what it counts: the metric's HELP text
	explain string // what it means when it grows and what to do; "" for ordinary activity
	gauge   bool
	get     func(q queueStatus) (uint64, bool) // false: not known for this queue
}

func (c counter) metric() string {
	if c.gauge {
		return "ftpalg_" + c.key
	}
	return "ftpalg_" + c.key + "_total"
}

func nfqField(f func(s *nfq.Stats) uint64) func(queueStatus) (uint64, bool) {
	return func(q queueStatus) (uint64, bool) { return f(&q.NFQ), true }
}

func kernelField32(f func(k *nfq.KernelStats) uint32) func(queueStatus) (uint64, bool) {
	return func(q queueStatus) (uint64, bool) {
		if q.Kernel == nil {
			return 0, false
		}
		return uint64(f(q.Kernel)), true
	}
}

// queueCounters are the rows of 'ftpalg status', in order.
var queueCounters = []counter{
	{key: "flows", label: "control connections followed", gauge: true,
		help: "FTP control connections the engine of the queue follows now.",
		get:  func(q queueStatus) (uint64, bool) { return uint64(q.Flows), true }},

	// The packet loop (internal/nfq).
	{key: "nfqueue_packets", label: "packets queued",
		help: "Packets the kernel handed to the daemon through the queue.",
		get:  nfqField(func(s *nfq.Stats) uint64 { return s.Packets })},
	{key: "nfqueue_verdicts", label: "verdicts",
		help: "Verdicts (accept, with or without a changed packet) sent back to the kernel.",
		get:  nfqField(func(s *nfq.Stats) uint64 { return s.Verdicts })},
	{key: "nfqueue_modified", label: "packets changed",
		help: "Verdicts that replaced the packet with a rewritten one.",
		get:  nfqField(func(s *nfq.Stats) uint64 { return s.Modified })},
	{key: "nfqueue_reads", label: "socket reads",
		help: "Reads from the queue's netlink socket that returned packets (one read may return several).",
		get:  nfqField(func(s *nfq.Stats) uint64 { return s.Reads })},
	{key: "nfqueue_writes", label: "verdict batches written",
		help: "Writes of verdict batches to the queue's netlink socket.",
		get:  nfqField(func(s *nfq.Stats) uint64 { return s.Writes })},
	{key: "nfqueue_enobufs", label: "receive buffer overruns",
		help:    "Reads that failed with ENOBUFS: the kernel dropped queue messages because the daemon's socket buffer was full.",
		explain: "The daemon could not keep up with a burst; the packets of those messages were lost to it (dropped, or passed unchanged with fail-open). Use more queues (--queues) or give the daemon more CPU.",
		get:     nfqField(func(s *nfq.Stats) uint64 { return s.ENOBUFS })},
	{key: "nfqueue_oversize", label: "rewrites too long to send",
		help:    "Rewritten packets longer than a verdict may carry; the original packet was accepted instead.",
		explain: "A rewrite grew a packet past the verdict size; the line went through untranslated. Report it with the log line.",
		get:     nfqField(func(s *nfq.Stats) uint64 { return s.Oversize })},
	{key: "nfqueue_truncated", label: "packets cut short",
		help:    "Packets the kernel handed over incomplete (copy range or read buffer); accepted unchanged.",
		explain: "Packets larger than the daemon reads (jumbo frames, GRO): they pass untranslated. Check the MTU and offloads of the translator's interfaces.",
		get:     nfqField(func(s *nfq.Stats) uint64 { return s.Truncated })},
	{key: "nfqueue_bad_messages", label: "undecodable queue messages",
		help:    "Netlink messages from the queue that did not decode.",
		explain: "Should stay 0: a kernel the daemon does not understand. Report it with the kernel version.",
		get:     nfqField(func(s *nfq.Stats) uint64 { return s.BadMessages })},
	{key: "nfqueue_verdict_errors", label: "verdicts refused",
		help:    "Errors the kernel returned for verdicts.",
		explain: "The kernel refused verdicts (a packet id it no longer knows, a bad rewritten packet); those packets were dropped. Look at the daemon's log.",
		get:     nfqField(func(s *nfq.Stats) uint64 { return s.VerdictErrors })},
	{key: "nfqueue_write_errors", label: "verdict writes failed",
		help:    "Writes of verdicts to the netlink socket that failed.",
		explain: "The verdicts of those packets were lost and the kernel dropped the packets. Look at the daemon's log.",
		get:     nfqField(func(s *nfq.Stats) uint64 { return s.WriteErrors })},
	{key: "nfqueue_read_errors", label: "socket read errors",
		help:    "Reads from the queue's netlink socket that failed with another error than ENOBUFS.",
		explain: "Look at the daemon's log.",
		get:     nfqField(func(s *nfq.Stats) uint64 { return s.ReadErrors })},

	// The kernel's side of the queue (/proc/net/netfilter/nfnetlink_queue).
	{key: "kernel_waiting", label: "packets awaiting a verdict", gauge: true,
		help: "Packets of the queue waiting in the kernel for the daemon's verdict.",
		get:  kernelField32(func(k *nfq.KernelStats) uint32 { return k.Waiting })},
	{key: "kernel_queue_drops", label: "dropped: queue full",
		help:    "Packets the kernel dropped, or accepted unchanged with fail-open, because the queue was full.",
		explain: "The daemon fell behind: use more queues (--queues) or give it more CPU.",
		get:     kernelField32(func(k *nfq.KernelStats) uint32 { return k.QueueDrops })},
	{key: "kernel_socket_drops", label: "dropped: socket full",
		help:    "Packets the kernel could not put into the daemon's socket.",
		explain: "As receive buffer overruns: the daemon fell behind a burst.",
		get:     kernelField32(func(k *nfq.KernelStats) uint32 { return k.SocketDrops })},

	// The engine (mangle.Stats).
	{key: "engine_packets", label: "packets through the engine",
		help: "Packets the engine processed.",
		get:  func(q queueStatus) (uint64, bool) { return q.Engine.Packets, true }},
	{key: "engine_untranslated", label: "packets not translated",
		help: "Packets of connections the translator does not translate (passed unchanged).",
		get:  func(q queueStatus) (uint64, bool) { return q.Engine.Untranslated, true }},
	{key: "engine_modified", label: "packets rewritten",
		help: "Packets the engine changed (a rewritten line, or shifted sequence numbers).",
		get:  func(q queueStatus) (uint64, bool) { return q.Engine.Modified, true }},
	{key: "engine_rewrites", label: "lines rewritten",
		help: "FTP commands and replies rewritten (PORT, EPRT, PASV, EPSV, ...).",
		get:  func(q queueStatus) (uint64, bool) { return q.Engine.Rewrites, true }},
	{key: "engine_local_replies", label: "commands answered by the ALG",
		help: "Commands the ALG answered itself (through a NOOP sent on to the server).",
		get:  func(q queueStatus) (uint64, bool) { return q.Engine.LocalReplies, true }},
	{key: "engine_flows", label: "control connections seen",
		help: "Control connections the engine started to follow.",
		get:  func(q queueStatus) (uint64, bool) { return q.Engine.Flows, true }},
	{key: "engine_transparent", label: "sessions encrypted (AUTH)",
		help:    "Control connections the engine stopped reading after AUTH (TLS): their data channels cannot be translated.",
		explain: "FTPS through a NAT64 needs the client to use EPSV/EPRT; the ALG cannot read encrypted commands.",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.Transparent, true }},
	{key: "engine_held", label: "segments held",
		help: "Segments held back because they ended inside a command or reply.",
		get:  func(q queueStatus) (uint64, bool) { return q.Engine.Held, true }},
	{key: "engine_held_timeout", label: "held segments timed out",
		help:    "Held segments released unchanged after --hold-timeout because the rest of their line never came.",
		explain: "A line split over segments whose rest came too late: it went through untranslated. Raise --hold-timeout if it happens on slow links.",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.HeldTimeout, true }},
	{key: "engine_held_overflow", label: "held segments over the bound",
		help:    "Held segments released unchanged because too many were held for one connection.",
		explain: "A peer sends lines in many tiny segments: those lines went through untranslated.",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.HeldOverflow, true }},
	{key: "engine_retransmits", label: "retransmissions",
		help: "Segments carrying data already seen (rewritten again the same way).",
		get:  func(q queueStatus) (uint64, bool) { return q.Engine.Retransmits, true }},
	{key: "engine_out_of_order", label: "out-of-order segments",
		help: "Segments beyond a hole in the stream (passed, read once the hole is filled).",
		get:  func(q queueStatus) (uint64, bool) { return q.Engine.OutOfOrder, true }},
	{key: "engine_bad_syntax", label: "lines that did not parse",
		help:    "Commands or replies that should have been translated but did not parse (passed unchanged).",
		explain: "A client or server speaks a dialect the ALG does not know: run with --log-level debug and report the line.",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.BadSyntax, true }},
	{key: "engine_bounce", label: "third-party PORT/EPRT",
		help:    "PORT, EPRT or LPRT naming a host other than the client (passed untranslated; FTP bounce).",
		explain: "A client asked for a data connection to another host: refused by design (RFC 2577).",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.Bounce, true }},
	{key: "engine_map_failed", label: "data-channel mappings refused",
		help:    "Data-channel mappings the translator refused (Jool BIB entries, Tayga bindings).",
		explain: "Those transfers fail. Jool: is --jool-ports inside pool4 and large enough? Look at the daemon's log.",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.MapFailed, true }},
	{key: "engine_addr_mismatch", label: "227 for another address",
		help:    "227 replies naming an address other than the server's.",
		explain: "A server behind NAT announces its outside address. With --strict such replies get 425.",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.AddrMismatch, true }},
	{key: "engine_desync", label: "replies without a command",
		help:    "Replies that could not be matched to a command.",
		explain: "The engine lost track of a connection (it started before the daemon, or packets were lost): its transfers may fail until it reconnects.",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.Desync, true }},
	{key: "engine_regions_full", label: "rewrites skipped: history full",
		help:    "Rewrites skipped because the connection's sequence history was full.",
		explain: "A connection with very many length-changing rewrites: later ones went through untranslated.",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.RegionsFull, true }},
	{key: "engine_overlong", label: "overlong lines",
		help: "Lines longer than 1024 bytes (passed unparsed).",
		get:  func(q queueStatus) (uint64, bool) { return q.Engine.Overlong, true }},
	{key: "engine_not_tcp", label: "packets not TCP",
		help:    "Queued packets that were not IPv4 or IPv6 TCP (passed).",
		explain: "Should stay 0: the rules queue TCP only. Another ruleset queues to the same queue number?",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.NotTCP, true }},
	{key: "engine_malformed", label: "malformed packets",
		help: "Packets whose headers did not decode (passed).",
		get:  func(q queueStatus) (uint64, bool) { return q.Engine.Malformed, true }},
	{key: "engine_flows_evicted", label: "connections evicted",
		help:    "Established control connections without state of their own (nothing rewritten, held or awaited) dropped from a full flow table; their next packet follows them again.",
		explain: "More concurrent control connections than --max-flows: nothing is lost yet, but the table is full.",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.FlowsEvicted, true }},
	{key: "engine_half_open_evicted", label: "half-open connections evicted",
		help:    "Connections that had sent no payload yet (a SYN, a bare ACK) dropped from a full table, oldest first: --max-flows of them are kept apart from the established ones.",
		explain: "A flood of SYNs or more connection attempts than --max-flows; real sessions with state are never evicted.",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.HalfOpenEvicted, true }},
	{key: "engine_flows_refused", label: "packets of refused connections",
		help:    "Packets of new connections passed unchanged because the flow table was full of connections with state (shifted numbers, held packets, a reply to translate), none of which is evicted.",
		explain: "More concurrent FTP sessions than --max-flows: new ones go untranslated; raise --max-flows or add queues.",
		get:     func(q queueStatus) (uint64, bool) { return q.Engine.FlowsRefused, true }},
}

// daemonMetric is a number of the whole daemon, not per queue.
type daemonMetric struct {
	name, help string
}

// daemonMetrics are the daemon-wide metrics besides the per-queue ones, for
// the documentation.
var daemonMetrics = []daemonMetric{
	{"ftpalg_build_info", "Always 1; the labels name the build: version, commit, Go version."},
	{"ftpalg_info", "Always 1; the labels name the configuration: translator, leg, table."},
	{"ftpalg_start_time_seconds", "When the daemon started, in seconds since the epoch."},
	{"ftpalg_rules_installed", "1 while the daemon's nftables table is in place, 0 while it is gone (and being restored) or with --no-rules."},
	{"ftpalg_rules_restored_total", "Times the daemon found its table removed or changed (nft flush ruleset, systemctl reload nftables) and loaded it again."},
	{"ftpalg_pinholes_created_total", "Conntrack expectations (firewall pinholes) created for data connections (Tayga)."},
	{"ftpalg_pinholes_failed_total", "Pinhole requests the kernel refused (expectation or liberal window tracking)."},
	{"ftpalg_pinholes_refused_total", "Pinhole requests that named no end of their control connection (not sent to the kernel)."},
}
