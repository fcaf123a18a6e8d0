package mangle

import (
	"time"
)

// maxPending bounds the commands awaiting replies in one session; past it
// the session stops translating (its replies could no longer be matched).
const maxPending = 32

// maxHeldCap is the hard bound on packets held per direction.
const maxHeldCap = 16

// cmdKind says what the reply to a command needs (rows of
// docs/PROTOCOL.md).
type cmdKind uint8

const (
	cmdOther    cmdKind = iota // nothing
	cmdGreeting                // the 220 greeting that opens a connection
	cmdPASV46                  // PASV sent as EPSV 2: 229 -> 227 (P46-1)
	cmdEPSV46                  // EPSV (1) sent as EPSV 2: 229 port p6 -> p4 (P46-2, P46-3)
	cmdEPSV64                  // EPSV (2) sent as PASV: 227 -> 229 (P64-1)
	cmdLPSV64                  // LPSV sent as PASV: 227 -> 228 (P64-10)
	cmdLocal                   // NOOP substituted: the reply becomes the ALG's own (P64-2, P64-3, P64-6..9)
	cmdAUTH                    // AUTH: a 2xx/3xx reply makes the session transparent (PB-1)
)

// translated reports whether a reply to the command may be rewritten.
func (k cmdKind) translated() bool {
	return k != cmdOther && k != cmdGreeting && k != cmdAUTH
}

type pendingCmd struct {
	kind  cmdKind
	local localReply
}

// replyState follows the reply being received, which may span lines
// (RFC 959 section 4.2: "ddd-" opens a multi-line reply, "ddd " closes it).
type replyState struct {
	code     int
	active   bool
	codeText [3]byte
	newCode  [3]byte // the code every line of this reply gets ("" = keep)
	recode   bool
	addrDone bool // the line carrying the address has been handled
	first    bool
	final    bool // the current line closes the reply
}

// heldPkt is a packet the engine keeps until the line it carries is
// complete (or a hole before it is filled).
type heldPkt struct {
	tag    uint64
	off, n int // bytes in stream.heldBuf
	seq    uint32
	end    uint32 // seq + sequence space used
	at     time.Time
	parsed bool // its bytes went through the line assembler
}

// stream is one direction of a flow.
//
// A flow carries two, so the small fields are kept together (no padding).
type stream struct {
	hist    history
	next    uint32 // next original sequence number the assembler expects
	acked   uint32 // highest original number the receiver acknowledged
	rcvAck  uint32 // highest number the receiver acknowledged, in its own (sent) numbering
	mss     uint16 // the MSS the receiver announced in its SYN (0: unknown)
	ackSeen bool
	rcvSeen bool
	synced  bool
	fin     bool
	// refuse holds the ALG's Telnet refusals (IAC DONT/WONT opt) to send
	// in this direction, at the end of its next line (see telnet.go).
	refuse  [maxRefuse]byte
	line    lineState
	nheld   int
	held    *[maxHeldCap]heldPkt // from the engine's pools while nheld > 0 (pool.go)
	heldBuf []byte
	nrefuse int
}

// flow is one control connection.
//
// Its fields are ordered so that it has no padding: with the allocator's
// header it fits the 704-byte size class (TestFlowSize).
type flow struct {
	key       FlowKey
	translate bool
	closed    bool // RST seen, or FIN both ways
	sess      Session
	s         [2]stream
	last      time.Time
	started   time.Time // when the engine began to follow it

	pending  [maxPending]pendingCmd
	phead, n int
	rep      replyState

	desync      bool // replies can no longer be matched to commands
	transparent bool // after a successful AUTH: no parsing
	disabled    bool // ALGS DISABLE64
	authPending bool // AUTH sent, its reply not yet seen: nothing is translated
	// teardown: the server refused a substituted NOOP and the client was
	// told 421 (RFC 6384 section 12). A packet ALG cannot close a
	// connection by itself without desynchronising TCP, so it lets the
	// endpoints do it: a client that got 421 closes (RFC 959 section
	// 4.2), and every command it still sends reaches the server as QUIT,
	// which makes the server close its side.
	teardown   bool
	inHeldList bool
	lenChanged bool // the Mapper was told of a length change
	dirty      bool // a line completed since the state was last saved
	saved      bool // the StateStore holds a state of this flow

	halfOpen       bool  // no payload seen yet: in the engine's half-open list
	greeted        bool  // the server sent data (its greeting): see heard
	hoPrev, hoNext *flow // that list (evict.go)
}

func (f *flow) push(c pendingCmd) {
	if f.n == maxPending {
		f.desync = true
		return
	}
	f.pending[(f.phead+f.n)%maxPending] = c
	f.n++
}

func (f *flow) head() (pendingCmd, bool) {
	if f.n == 0 {
		return pendingCmd{}, false
	}
	return f.pending[f.phead], true
}

func (f *flow) pop() {
	if f.n == 0 {
		return
	}
	f.phead = (f.phead + 1) % maxPending
	f.n--
}

// active reports whether the flow's lines are still parsed.
func (f *flow) active() bool { return !f.transparent && !f.desync }

// heard reports whether the server has spoken in this connection (its
// greeting, or any reply), or the flow was resumed from a saved state. An
// FTP server speaks first (RFC 959 section 5.4). A flood of spoofed SYNs or
// garbage segments to port 21 never gets a server's data: until it does, a
// flow's state is not saved (no journal file, no set element: state.go)
// and it never counts as one that matters in a full table (evict.go), even
// if a Telnet negotiation in random bytes made the ALG shift it.
func (f *flow) heard() bool { return f.greeted || f.saved }
