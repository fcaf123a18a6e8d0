package ftpcap

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Side is one end of a control connection.
type Side uint8

const (
	// Client is the FTP client: it sends commands.
	Client Side = iota
	// Server is the FTP server: it sends replies.
	Server
)

func (s Side) String() string {
	if s == Client {
		return "client"
	}
	return "server"
}

// Peer is the other side.
func (s Side) Peer() Side { return 1 - s }

// Config sets the constants of a conversation. The zero value of a field
// means its default.
type Config struct {
	// Start is the time of the first packet (default 2026-01-01 00:00:00 UTC).
	Start time.Time
	// Step is the time between packets (default 1ms).
	Step time.Duration
	// ClientISN and ServerISN are the initial sequence numbers (defaults
	// 1000000 and 2000000). Pick values near 1<<32 to test wrap-around.
	ClientISN, ServerISN uint32
	// Window is the advertised receive window (default 64240).
	Window uint16
	// MSS is the maximum segment size announced in the SYNs (default 1460).
	// Writes are never split automatically; see Write.Split.
	MSS uint16
	// SACK announces SACK-permitted in the SYNs and makes receivers SACK
	// (RFC 2018) lost segments and D-SACK (RFC 2883) duplicates.
	SACK bool
	// Timestamps puts the timestamp option (RFC 7323) on every segment.
	Timestamps bool
}

func (c *Config) setDefaults() {
	if c.Start.IsZero() {
		c.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if c.Step == 0 {
		c.Step = time.Millisecond
	}
	if c.ClientISN == 0 {
		c.ClientISN = 1000000
	}
	if c.ServerISN == 0 {
		c.ServerISN = 2000000
	}
	if c.Window == 0 {
		c.Window = 64240
	}
	if c.MSS == 0 {
		c.MSS = 1460
	}
}

// Write is one application write by one endpoint.
type Write struct {
	From Side
	// Data is what the sender writes (in its own sequence numbering).
	Data string
	// Want is what the peer receives after the ALG; empty means Data
	// unchanged. The peer's acknowledgements count these bytes.
	Want string
	// Split lists offsets into Data where a new segment starts, in
	// increasing order (a split command or reply). Without it the write is
	// one segment; several commands in one Data are pipelined.
	Split []int
	// Lost lists segments (indices into the write's segments) that pass the
	// ALG but do not reach the peer. The peer then acknowledges up to the
	// first hole, with SACK blocks for what it did get when Config.SACK is
	// set; the sender retransmits the lost segments verbatim and the peer
	// acknowledges everything. A segment boundary inside a rewritten part
	// of Data (inside a line that the ALG rewrites) cannot be located in
	// the peer's numbering: such a script panics.
	Lost []int
	// NoAck leaves the write unacknowledged for now: the peer's next
	// segment carries the acknowledgement.
	NoAck bool
	// Order is the order in which the segments reach the ALG (a
	// permutation of their indices; reordering before the ALG). Empty:
	// in order.
	Order []int
}

// Packet is one generated IP packet.
type Packet struct {
	Time time.Time
	From Side
	// Data is the raw IP packet (IPv4 or IPv6, no link-layer header).
	Data []byte
}

// Raw returns the IP packets of pkts.
func Raw(pkts []Packet) [][]byte {
	out := make([][]byte, len(pkts))
	for i, p := range pkts {
		out[i] = p.Data
	}
	return out
}

// segment is a packet before it is given addresses.
type segment struct {
	from     Side
	seq, ack uint32
	syn, fin bool
	rst      bool
	ackFlag  bool
	payload  []byte
	sack     [][2]uint32 // in the sender's numbering of what it received
	opts     []layers.TCPOption
	tsval    uint32
	tsecr    uint32
}

// dataSeg remembers a data segment for retransmissions and D-SACKs.
type dataSeg struct {
	seg segment
	// peerLeft and peerRight locate the bytes in the receiver's numbering;
	// ok is false when they cannot be known (a boundary inside a rewrite).
	peerLeft, peerRight uint32
	ok                  bool
}

type sideState struct {
	isn    uint32
	snd    uint32 // next sequence number to send
	rcv    uint32 // next byte expected from the peer, in our numbering of what we receive
	sent   []dataSeg
	ipID   uint16
	lastTS uint32 // last TSval seen from the peer
	fin    bool
}

// Conv is a scripted control connection. Build it with New, then call
// Handshake, Send (or Command and Reply), Retransmit and Close in the order
// the packets should appear; Packets renders it on one leg.
type Conv struct {
	cfg   Config
	sides [2]sideState
	segs  []segment
	// want holds what each side receives after the ALG (indexed by the
	// receiving side).
	want [2][]byte
}

// New starts a conversation. The endpoints' state begins just after the
// handshake, so a script without Handshake models a capture that starts
// in the middle of a connection.
func New(cfg Config) *Conv {
	cfg.setDefaults()
	c := &Conv{cfg: cfg}
	c.sides[Client] = sideState{isn: cfg.ClientISN, snd: cfg.ClientISN + 1, rcv: cfg.ServerISN + 1, ipID: 0x1000}
	c.sides[Server] = sideState{isn: cfg.ServerISN, snd: cfg.ServerISN + 1, rcv: cfg.ClientISN + 1, ipID: 0x8000}
	return c
}

func (c *Conv) tsval() uint32 { return uint32(len(c.segs)) + 100 }

func (c *Conv) add(s segment) {
	st := &c.sides[s.from]
	if c.cfg.Timestamps {
		s.tsval = c.tsval()
		s.tsecr = st.lastTS
		c.sides[s.from.Peer()].lastTS = s.tsval
	}
	c.segs = append(c.segs, s)
}

// Handshake adds the three-way handshake. It must come first.
func (c *Conv) Handshake() {
	if len(c.segs) != 0 {
		panic("ftpcap: Handshake after other packets")
	}
	cl, sv := &c.sides[Client], &c.sides[Server]
	opts := c.synOptions()
	c.add(segment{from: Client, seq: cl.isn, syn: true, opts: opts})
	c.add(segment{from: Server, seq: sv.isn, ack: cl.isn + 1, syn: true, ackFlag: true, opts: opts})
	c.add(segment{from: Client, seq: cl.snd, ack: cl.rcv, ackFlag: true})
}

func (c *Conv) synOptions() []layers.TCPOption {
	var mss [2]byte
	binary.BigEndian.PutUint16(mss[:], c.cfg.MSS)
	opts := []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionData: mss[:]}}
	if c.cfg.SACK {
		opts = append(opts, layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted})
	}
	opts = append(opts, layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{7}})
	return opts
}

// Command adds a write of the client that the server receives as want
// ("" for unchanged).
func (c *Conv) Command(data, want string) { c.Send(Write{From: Client, Data: data, Want: want}) }

// Reply adds a write of the server that the client receives as want
// ("" for unchanged).
func (c *Conv) Reply(data, want string) { c.Send(Write{From: Server, Data: data, Want: want}) }

// Send adds one write: its segments, the peer's acknowledgement, and the
// recovery of lost segments.
func (c *Conv) Send(w Write) {
	if w.Data == "" {
		panic("ftpcap: empty write")
	}
	want := w.Want
	if want == "" {
		want = w.Data
	}
	snd, rcv := &c.sides[w.From], &c.sides[w.From.Peer()]
	if snd.fin {
		panic("ftpcap: write after FIN")
	}
	bounds := append(append([]int{0}, w.Split...), len(w.Data))
	for i := 1; i < len(bounds); i++ {
		if bounds[i] <= bounds[i-1] {
			panic(fmt.Sprintf("ftpcap: bad Split %v for %d bytes", w.Split, len(w.Data)))
		}
	}
	lost := map[int]bool{}
	for _, l := range w.Lost {
		if l < 0 || l >= len(bounds)-1 {
			panic(fmt.Sprintf("ftpcap: Lost segment %d of %d", l, len(bounds)-1))
		}
		lost[l] = true
	}
	peerBase := rcv.rcv
	var segs []dataSeg
	for i := 0; i+1 < len(bounds); i++ {
		a, b := bounds[i], bounds[i+1]
		pa, oka := MapOffset(w.Data, want, a)
		pb, okb := MapOffset(w.Data, want, b)
		s := segment{from: w.From, seq: snd.snd + uint32(a), ack: snd.rcv, ackFlag: true, payload: []byte(w.Data[a:b])}
		ds := dataSeg{seg: s, peerLeft: peerBase + uint32(pa), peerRight: peerBase + uint32(pb), ok: oka && okb}
		if lost[i] && !ds.ok {
			panic(fmt.Sprintf("ftpcap: lost segment %d of %q has a boundary inside the rewrite to %q", i, w.Data, want))
		}
		segs = append(segs, ds)
	}
	order := w.Order
	if len(order) == 0 {
		for i := range segs {
			order = append(order, i)
		}
	}
	if len(order) != len(segs) {
		panic(fmt.Sprintf("ftpcap: Order %v for %d segments", w.Order, len(segs)))
	}
	seen := map[int]bool{}
	for _, i := range order {
		if i < 0 || i >= len(segs) || seen[i] {
			panic(fmt.Sprintf("ftpcap: Order %v is not a permutation of %d segments", w.Order, len(segs)))
		}
		seen[i] = true
		c.add(segs[i].seg)
	}
	snd.sent = append(snd.sent, segs...)
	snd.snd += uint32(len(w.Data))

	if len(lost) != 0 {
		// The peer got everything but the lost segments: it acknowledges
		// up to the first hole and SACKs the received runs beyond it.
		first := -1
		for i := range segs {
			if lost[i] {
				first = i
				break
			}
		}
		var blocks [][2]uint32
		for i := first; i < len(segs); i++ {
			if lost[i] {
				continue
			}
			if n := len(blocks); n > 0 && blocks[n-1][1] == segs[i].peerLeft {
				blocks[n-1][1] = segs[i].peerRight
			} else {
				blocks = append(blocks, [2]uint32{segs[i].peerLeft, segs[i].peerRight})
			}
		}
		ack := segs[first].peerLeft
		if !c.cfg.SACK {
			blocks = nil
		}
		// RFC 2018: the most recently received block comes first.
		for i, j := 0, len(blocks)-1; i < j; i, j = i+1, j-1 {
			blocks[i], blocks[j] = blocks[j], blocks[i]
		}
		c.add(segment{from: w.From.Peer(), seq: rcv.snd, ack: ack, ackFlag: true, sack: blocks})
		for i := range segs {
			if lost[i] {
				s := segs[i].seg
				s.ack = snd.rcv
				c.add(s)
			}
		}
	}
	rcv.rcv += uint32(len(want))
	c.want[w.From.Peer()] = append(c.want[w.From.Peer()], want...)
	if !w.NoAck {
		c.ack(w.From.Peer())
	}
}

// MapOffset locates offset o of data in want, the way an ALG that
// rewrites whole lines can: data and want must have the same number of
// lines (each ending after its LF; a last line may have none); an offset
// at a line boundary, or inside a line the rewrite left alone, has an
// exact counterpart; an offset inside a rewritten line has none.
func MapOffset(data, want string, o int) (int, bool) {
	if data == want {
		return o, true
	}
	if o == 0 {
		return 0, true
	}
	if o == len(data) {
		return len(want), true
	}
	dl, wl := lines(data), lines(want)
	if len(dl) != len(wl) {
		return 0, false
	}
	pos, wpos := 0, 0
	for i := range dl {
		switch {
		case o == pos:
			return wpos, true
		case o < pos+len(dl[i]):
			if dl[i] == wl[i] {
				return wpos + o - pos, true
			}
			return 0, false
		}
		pos += len(dl[i])
		wpos += len(wl[i])
	}
	return 0, false
}

// lines splits s after every LF.
func lines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := strings.IndexByte(s, '\n') + 1
		if i == 0 {
			i = len(s)
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	return out
}

// ack adds a pure acknowledgement from side.
func (c *Conv) ack(from Side) {
	st := &c.sides[from]
	c.add(segment{from: from, seq: st.snd, ack: st.rcv, ackFlag: true})
}

// Ack adds a pure acknowledgement of everything side has received (after
// a Write with NoAck).
func (c *Conv) Ack(from Side) { c.ack(from) }

// Retransmit resends the n-th data segment that side from has sent
// (counting from 0 over the whole conversation, lost-segment recoveries
// not counted): same sequence number and payload, the sender's current
// acknowledgement. The peer answers with a duplicate acknowledgement,
// carrying a D-SACK block (RFC 2883) for the duplicate when Config.SACK is
// set.
func (c *Conv) Retransmit(from Side, n int) {
	st := &c.sides[from]
	if n < 0 || n >= len(st.sent) {
		panic(fmt.Sprintf("ftpcap: %v has sent %d data segments, no %d", from, len(st.sent), n))
	}
	ds := st.sent[n]
	s := ds.seg
	s.ack = st.rcv
	c.add(s)
	peer := &c.sides[from.Peer()]
	a := segment{from: from.Peer(), seq: peer.snd, ack: peer.rcv, ackFlag: true}
	if c.cfg.SACK && ds.ok {
		a.sack = [][2]uint32{{ds.peerLeft, ds.peerRight}}
	}
	c.add(a)
}

// Resend sends bytes [start, end) of what side from has sent so far
// (offsets into its stream, 0 being its first byte) again as one segment,
// with the sender's current acknowledgement: a retransmission that covers
// several original segments, or part of one, as TCP stacks do. The peer
// answers with a duplicate acknowledgement, with a D-SACK block (RFC 2883)
// when Config.SACK is set and the range starts and ends on segment
// boundaries the peer can number.
func (c *Conv) Resend(from Side, start, end int) {
	st := &c.sides[from]
	var stream []byte
	for _, ds := range st.sent {
		stream = append(stream, ds.seg.payload...)
	}
	if start < 0 || end > len(stream) || start >= end {
		panic(fmt.Sprintf("ftpcap: Resend [%d, %d) of %d bytes", start, end, len(stream)))
	}
	base := st.isn + 1
	c.add(segment{from: from, seq: base + uint32(start), ack: st.rcv, ackFlag: true, payload: stream[start:end]})
	peer := &c.sides[from.Peer()]
	a := segment{from: from.Peer(), seq: peer.snd, ack: peer.rcv, ackFlag: true}
	var left, right uint32
	var okl, okr bool
	for _, ds := range st.sent {
		if ds.ok && ds.seg.seq == base+uint32(start) {
			left, okl = ds.peerLeft, true
		}
		if ds.ok && ds.seg.seq+uint32(len(ds.seg.payload)) == base+uint32(end) {
			right, okr = ds.peerRight, true
		}
	}
	if c.cfg.SACK && okl && okr {
		a.sack = [][2]uint32{{left, right}}
	}
	c.add(a)
}

// KeepAlive adds a TCP keep-alive from side from (RFC 1122 4.2.3.6: the
// sequence number one below the next byte, no data) and the peer's
// acknowledgement.
func (c *Conv) KeepAlive(from Side) {
	st := &c.sides[from]
	c.add(segment{from: from, seq: st.snd - 1, ack: st.rcv, ackFlag: true})
	c.ack(from.Peer())
}

// Close adds a FIN from side from, the peer's FIN+ACK and the final ACK.
func (c *Conv) Close(from Side) {
	a, b := &c.sides[from], &c.sides[from.Peer()]
	c.add(segment{from: from, seq: a.snd, ack: a.rcv, ackFlag: true, fin: true})
	a.snd++
	a.fin = true
	b.rcv++
	c.add(segment{from: from.Peer(), seq: b.snd, ack: b.rcv, ackFlag: true, fin: true})
	b.snd++
	b.fin = true
	a.rcv++
	c.add(segment{from: from, seq: a.snd, ack: a.rcv, ackFlag: true})
}

// Reset adds a RST (with ACK) from side from: the connection is over.
func (c *Conv) Reset(from Side) {
	a := &c.sides[from]
	c.add(segment{from: from, seq: a.snd, ack: a.rcv, ackFlag: true, rst: true})
	a.fin, c.sides[from.Peer()].fin = true, true
}

// Sent returns the byte streams the client and the server sent, each in
// its own numbering: what the ALG receives.
func (c *Conv) Sent() (fromClient, fromServer string) {
	var b [2][]byte
	for side := range b {
		for _, ds := range c.sides[side].sent {
			b[side] = append(b[side], ds.seg.payload...)
		}
	}
	return string(b[Client]), string(b[Server])
}

// Want returns the byte streams the server and the client receive after
// the ALG, as the script declares them: what a correct ALG emits.
func (c *Conv) Want() (toServer, toClient string) {
	return string(c.want[Server]), string(c.want[Client])
}

// Len is the number of packets generated so far.
func (c *Conv) Len() int { return len(c.segs) }

// Packets renders the conversation with the addresses of leg.
func (c *Conv) Packets(leg Leg) []Packet {
	out := make([]Packet, 0, len(c.segs))
	ids := [2]uint16{c.sides[Client].ipID, c.sides[Server].ipID}
	for i, s := range c.segs {
		src, dst := leg.Client, leg.Server
		if s.from == Server {
			src, dst = dst, src
		}
		ids[s.from]++
		out = append(out, Packet{
			Time: c.cfg.Start.Add(time.Duration(i) * c.cfg.Step),
			From: s.from,
			Data: c.render(s, src.Addr().AsSlice(), dst.Addr().AsSlice(), src.Port(), dst.Port(), ids[s.from], leg.Is6()),
		})
	}
	return out
}

func (c *Conv) render(s segment, src, dst net.IP, sport, dport uint16, id uint16, v6 bool) []byte {
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(sport),
		DstPort: layers.TCPPort(dport),
		Seq:     s.seq,
		SYN:     s.syn,
		FIN:     s.fin,
		RST:     s.rst,
		ACK:     s.ackFlag,
		PSH:     len(s.payload) > 0,
		Window:  c.cfg.Window,
		Options: append([]layers.TCPOption(nil), s.opts...),
	}
	if s.ackFlag {
		tcp.Ack = s.ack
	}
	if c.cfg.Timestamps {
		var ts [8]byte
		binary.BigEndian.PutUint32(ts[:4], s.tsval)
		binary.BigEndian.PutUint32(ts[4:], s.tsecr)
		tcp.Options = append(tcp.Options,
			layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionData: ts[:]})
	}
	if len(s.sack) > 0 {
		data := make([]byte, 0, 8*len(s.sack))
		for _, b := range s.sack {
			data = binary.BigEndian.AppendUint32(data, b[0])
			data = binary.BigEndian.AppendUint32(data, b[1])
		}
		tcp.Options = append(tcp.Options,
			layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionData: data})
	}
	var netl gopacket.SerializableLayer
	if v6 {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src, DstIP: dst}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		netl = ip
	} else {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: id, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP, SrcIP: src, DstIP: dst}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		netl = ip
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, netl, tcp, gopacket.Payload(s.payload)); err != nil {
		panic("ftpcap: serialize: " + err.Error())
	}
	return append([]byte(nil), buf.Bytes()...)
}
