package mangle

import (
	"net/netip"
	"time"
)

// Config configures an Engine. The zero value of every field but Mapper
// means its default.
type Config struct {
	// Mapper translates addresses and sets up data channels. Required.
	Mapper Mapper
	// Strict answers a 64 session's 227 that names an address other than
	// the server's own with 425 instead of translating it (with a counter).
	Strict bool
	// MaxFlows bounds the flow table (default 131072: about 100 MB of
	// idle established flows), and apart from it the half-open records
	// (halfopen.go: a connection opened by a client's SYN, until its first
	// payload; about 100 bytes each, so about 13 MB more at the default).
	// A new record past its bound evicts the oldest record. A new flow
	// past the bound (a record's first payload, or a connection met
	// without its SYN) evicts the oldest half-open flow (no payload yet),
	// else a flow whose state its next packet rebuilds; a flow that
	// carries state its session needs (shifted sequence numbers, held
	// packets, a reply to translate) is never evicted: the new flow is
	// refused instead (its packets pass unchanged, counted in
	// Stats.FlowsRefused).
	MaxFlows int
	// MaxHeld bounds the packets held per flow while a command or reply is
	// incomplete (default 4); past it they are released unmodified.
	MaxHeld int
	// ServerPorts are the FTP control ports (default 21): a packet to one
	// is from a client, a packet from one is from a server.
	ServerPorts []uint16
	// TrustChecksums parses segments whatever their TCP checksum says. By
	// default a segment whose checksum is wrong is never parsed and leaves
	// as wrong as it came (docs/PROTOCOL.md PB-12); NFQUEUE hands over
	// complete checksums, so only a capture taken on a host with checksum
	// offload (replay) needs this.
	TrustChecksums bool
	// IdleTimeout forgets a flow that saw no packet for this long
	// (default 2h, roughly conntrack's established timeout).
	IdleTimeout time.Duration
	// State, if set, keeps the state of flows that need it outside the
	// engine, for an engine started later to resume them (state.go).
	State StateStore
}

// Emit is one packet the caller must send on, in order.
type Emit struct {
	// Tag is the caller's tag for the packet (its NFQUEUE packet id).
	Tag uint64
	// Packet is the packet to send: the original bytes when Modified is
	// false, otherwise a rewritten copy owned by the engine, valid until
	// the next call into the engine.
	Packet []byte
	// Modified says the packet differs from what the caller passed in.
	Modified bool
	// Extra says the packet is an additional one for the same Tag, sent
	// right after the packet of the verdict: a rewritten segment grown
	// past what the path allows is split (RFC 6384 section 5). A caller
	// that cannot send packets of its own may leave it out: the receiver
	// then acknowledges only the first part, the sender retransmits, and
	// the engine sends only the part still missing.
	Extra bool
	// Drop says the caller must drop the packet (Packet is nil): a
	// repeat of bytes the engine holds, or a segment it cannot send
	// before the line it belongs to is complete. TCP resends it.
	Drop bool
}

// Rewrite records one line the engine changed, for logs and transcripts.
type Rewrite struct {
	Flow   FlowKey
	Kind   Kind
	Dir    Dir
	Before []byte // the original line without its line ending
	After  []byte // what was sent instead, without its line ending
}

// Result is what one call into the engine produced. Reuse one Result
// across calls: the engine appends into its slices after truncating them.
type Result struct {
	// Emits lists the packets to send now, in order: the input packet
	// (unless Held) and any held packets this call released.
	Emits []Emit
	// Held says the input packet was taken by the engine: the caller must
	// keep its verdict pending; a later call releases it by Tag.
	Held bool
	// Rewrites lists the lines rewritten by this call.
	Rewrites []Rewrite
	// Alerts lists the errors this call met, for the caller to log.
	Alerts []Alert
}

// Alert is an error on one connection that an operator should see (the
// engine itself never logs).
type Alert struct {
	Flow FlowKey
	Kind Kind
	Text string // a constant, such as AlertNoopRefused
}

func (r *Result) reset() {
	r.Emits = r.Emits[:0]
	r.Held = false
	r.Rewrites = r.Rewrites[:0]
	r.Alerts = r.Alerts[:0]
}

// Stats are the engine's counters. All only grow.
type Stats struct {
	Packets       uint64 // packets processed
	NotTCP        uint64 // packets that were not IPv4/IPv6 TCP (passed)
	Malformed     uint64 // packets whose headers did not decode (passed)
	BadChecksum   uint64 // packets whose TCP checksum was wrong on arrival (passed unparsed, still wrong)
	Untranslated  uint64 // packets of connections the Mapper does not translate
	Modified      uint64 // packets sent with changes
	Split         uint64 // extra packets made by splitting a rewritten segment larger than the path allows
	Rewrites      uint64 // lines rewritten
	LocalReplies  uint64 // commands answered by the ALG through NOOP substitution
	BadSyntax     uint64 // commands or replies that should have been translated but did not parse (passed)
	Bounce        uint64 // PORT/EPRT/LPRT naming a third party (passed untranslated)
	Unverified    uint64 // 64 EPRT/LPRT passed untranslated: the client's IPv6 address is unknown or the Mapper cannot map it
	Unparsed425   uint64 // 227/229 replies the client could not use and the ALG could not parse, answered 425
	NoopRefused   uint64 // substituted NOOPs answered with other than 2xx: client told 421, connection torn down
	MapFailed     uint64 // data-channel mappings the Mapper refused
	AddrMismatch  uint64 // 227 replies naming an address other than the server's
	Held          uint64 // packets held
	HeldTimeout   uint64 // held packets released unmodified by Expire or Flush
	HeldOverflow  uint64 // held packets released unmodified because the bound was hit
	HeldDropped   uint64 // segments of a reply being translated dropped rather than sent half translated (TCP resends them)
	Retransmits   uint64 // segments carrying data already seen
	OutOfOrder    uint64 // segments beyond a hole
	RegionsFull   uint64 // rewrites skipped because the per-direction history was full
	Overlong      uint64 // lines longer than 1024 bytes (passed unparsed)
	TelnetRefused uint64 // Telnet option negotiations removed from the stream (and refused where they asked)
	TelnetRelayed uint64 // Telnet option negotiations or refusals that could not be handled so (relayed, or refusal dropped)
	Desync        uint64 // replies that could not be matched to commands
	Transparent   uint64 // sessions that became transparent after AUTH
	Flows         uint64 // flows created
	FlowsEvicted  uint64 // established flows without state of their own dropped from a full table
	Restored      uint64 // flows resumed from a StateStore
	RestoreFailed uint64 // saved states that did not decode (the flow starts afresh)
	// HalfOpenEvicted counts half-open connections (no payload yet)
	// dropped from a full table: records and flows.
	HalfOpenEvicted uint64
	// FlowsRefused counts packets of new flows not followed because the
	// table was full of flows that matter (passed unchanged).
	FlowsRefused uint64
}

// FlowKey names a control connection on one leg, oriented client to
// server. It is comparable and fixed-size, so it makes a cheap map key.
type FlowKey struct {
	client, server [16]byte
	cport, sport   uint16
	v6             bool
}

func (k FlowKey) addr(b [16]byte) netip.Addr {
	a := netip.AddrFrom16(b)
	if !k.v6 {
		return a.Unmap()
	}
	return a
}

// Client is the client end of the connection.
func (k FlowKey) Client() netip.AddrPort { return netip.AddrPortFrom(k.addr(k.client), k.cport) }

// Server is the server end of the connection.
func (k FlowKey) Server() netip.AddrPort { return netip.AddrPortFrom(k.addr(k.server), k.sport) }

func (k FlowKey) String() string { return k.Client().String() + " -> " + k.Server().String() }
