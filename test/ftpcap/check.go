package ftpcap

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// maxStream bounds a reconstructed stream: a sequence number further than
// this from the start of its flow is reported, not buffered.
const maxStream = 16 << 20

// Problem is one violation found by Check.
type Problem struct {
	// Where names the packet ("packet 3", "output packet 3") or the flow.
	Where string
	Msg   string
}

func (p Problem) String() string { return p.Where + ": " + p.Msg }

// Flow is one direction of a TCP connection, reconstructed from a capture.
type Flow struct {
	Src, Dst netip.AddrPort
	// ISN is the sequence number of the SYN (SawSYN) or one less than the
	// lowest sequence number seen.
	ISN    uint32
	SawSYN bool
	SawFIN bool
	// Data is the byte stream from ISN+1 up to the first byte never seen.
	Data []byte
	// Segments counts the packets of this direction.
	Segments int

	segs        []seg
	isnFromData bool   // without a SYN: ISN was taken from a segment with data or FIN
	have        []bool // which bytes of Data's backing buffer were seen
	buf         []byte
	high        uint32 // highest sequence number sent plus one (SYN and FIN count)
	finSeq      uint32
	starts      map[uint32]bool // sequence numbers where a segment started
	ends        map[uint32]bool // sequence numbers up to which something can be acknowledged
}

// seg is one TCP segment as pass one records it.
type seg struct {
	where    string
	seq      uint32
	syn, fin bool
	payload  []byte
}

// ackRef is one acknowledgement (or SACK block) to check in pass two.
type ackRef struct {
	where       string
	of          flowKey // the flow whose data is acknowledged
	ack         uint32
	sack        bool
	left, right uint32
}

// Report is what Check found.
type Report struct {
	Packets  int // packets checked
	TCP      int // TCP segments among them
	Problems []Problem
	Flows    []*Flow // in order of first appearance
}

// Err returns nil when the capture had no problems, otherwise an error
// listing them (at most 20).
func (r *Report) Err() error {
	if len(r.Problems) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problems:", len(r.Problems))
	for i, p := range r.Problems {
		if i == 20 {
			b.WriteString("\n...")
			break
		}
		b.WriteString("\n")
		b.WriteString(p.String())
	}
	return errors.New(b.String())
}

// Flow returns the flow from src to dst, or nil.
func (r *Report) Flow(src, dst netip.AddrPort) *Flow {
	for _, f := range r.Flows {
		if f.Src == src && f.Dst == dst {
			return f
		}
	}
	return nil
}

// Stream returns the bytes sent from src to dst ("" when there is no such
// flow).
func (r *Report) Stream(src, dst netip.AddrPort) string {
	if f := r.Flow(src, dst); f != nil {
		return string(f.Data)
	}
	return ""
}

type flowKey struct{ src, dst netip.AddrPort }

// labeled is a packet with the name problems give it.
type labeled struct {
	where string
	data  []byte
}

// Check verifies a capture of raw IP packets taken on one wire, where
// both directions of a connection use the same sequence numbering (the
// capture of one side of an ALG, or of a connection without one):
//   - every IPv4 header checksum and every TCP checksum is right (verified
//     with gopacket), and the IP length fields match the packet;
//   - per TCP flow and direction, segments that overlap carry identical bytes
//     at identical sequence numbers, no data follows a FIN, and the stream
//     has no hole;
//   - every acknowledgement number acknowledges only what the other
//     direction sent: not beyond its highest sequence number plus length,
//     and on a boundary where one of its segments (or its SYN or FIN) ended;
//     every SACK block (RFC 2018) starts where a segment of the other
//     direction started and ends where one ended, within what was sent.
//
// The checks look at the whole capture, not at the order of its packets.
// Acknowledgements of a direction not in the capture, or of data from
// before the capture started, cannot be checked and are not reported.
// Packets that are not TCP are counted and otherwise ignored. All sequence
// arithmetic is modulo 2^32.
//
// What an ALG emits is not such a capture when it changes lengths: its
// packets towards the client acknowledge the client's own numbering, which
// only the ALG's input shows. Use CheckALG for that.
func Check(packets [][]byte) *Report {
	l := make([]labeled, len(packets))
	for i, p := range packets {
		l[i] = labeled{fmt.Sprintf("packet %d", i), p}
	}
	return check(l)
}

// CheckALG verifies what an ALG made of a capture: in holds the packets
// that reached it (from both ends, each in its own numbering, as Conv
// generates them) and out the packets it sent on. For every endpoint E it
// runs Check's checks on the wire between E and the ALG: the packets E
// sent (from in) with the packets the ALG sent to E (from out). Every
// packet of out is therefore checked (checksums, consistent streams, and
// acknowledgements that acknowledge only what E really sent), and so is
// every acknowledgement E sent in reply to what it received from the ALG.
//
// The returned Flows are those of out: Stream(client, server) is what the
// server received.
func CheckALG(in, out [][]byte) *Report {
	r := &Report{}
	endpoints := map[netip.AddrPort]bool{}
	var order []netip.AddrPort
	addr := func(p []byte) (src, dst netip.AddrPort, ok bool) {
		var tcp layers.TCP
		s, d, ok := decodeTCP(p, &tcp)
		if !ok {
			return src, dst, false
		}
		return netip.AddrPortFrom(s, uint16(tcp.SrcPort)), netip.AddrPortFrom(d, uint16(tcp.DstPort)), true
	}
	for _, p := range in {
		if src, _, ok := addr(p); ok && !endpoints[src] {
			endpoints[src] = true
			order = append(order, src)
		}
	}
	seen := map[int]bool{}
	for _, e := range order {
		var view []labeled
		for i, p := range in {
			if src, _, ok := addr(p); ok && src == e {
				view = append(view, labeled{fmt.Sprintf("input packet %d", i), p})
			}
		}
		for i, p := range out {
			if _, dst, ok := addr(p); ok && dst == e {
				view = append(view, labeled{fmt.Sprintf("output packet %d", i), p})
				seen[i] = true
			}
		}
		vr := check(view)
		for _, p := range vr.Problems {
			p.Where = "wire of " + e.String() + ": " + p.Where
			r.Problems = append(r.Problems, p)
		}
		for _, f := range vr.Flows {
			if f.Dst == e {
				r.Flows = append(r.Flows, f)
			}
		}
	}
	// Packets of out that go to no endpoint of in (not TCP, or a flow the
	// ALG made up) get the per-packet checks on their own.
	var rest []labeled
	for i, p := range out {
		if !seen[i] {
			rest = append(rest, labeled{fmt.Sprintf("output packet %d", i), p})
		}
	}
	rr := check(rest)
	r.Problems = append(r.Problems, rr.Problems...)
	r.Flows = append(r.Flows, rr.Flows...)
	r.Packets = len(out)
	for _, p := range out {
		var tcp layers.TCP
		if _, _, ok := decodeTCP(p, &tcp); ok {
			r.TCP++
		}
	}
	return r
}

func (r *Report) problem(where, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{Where: where, Msg: fmt.Sprintf(format, args...)})
}

// decodeTCP decodes an IPv4 or IPv6 packet carrying a whole TCP segment
// into tcp (with its pseudo-header set for checksums).
func decodeTCP(pkt []byte, tcp *layers.TCP) (src, dst netip.Addr, ok bool) {
	if len(pkt) == 0 {
		return src, dst, false
	}
	switch pkt[0] >> 4 {
	case 4:
		ip := new(layers.IPv4)
		if ip.DecodeFromBytes(pkt, gopacket.NilDecodeFeedback) != nil || ip.Protocol != layers.IPProtocolTCP ||
			ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
			return src, dst, false
		}
		if tcp.DecodeFromBytes(ip.Payload, gopacket.NilDecodeFeedback) != nil {
			return src, dst, false
		}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		return src, dst, true
	case 6:
		ip := new(layers.IPv6)
		if ip.DecodeFromBytes(pkt, gopacket.NilDecodeFeedback) != nil || ip.NextHeader != layers.IPProtocolTCP {
			return src, dst, false
		}
		if tcp.DecodeFromBytes(ip.Payload, gopacket.NilDecodeFeedback) != nil {
			return src, dst, false
		}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		return src, dst, true
	}
	return src, dst, false
}

func check(packets []labeled) *Report {
	r := &Report{}
	flows := map[flowKey]*Flow{}
	var acks []ackRef
	// Pass one: per-packet checks, and the segments of every flow.
	for _, lp := range packets {
		r.Packets++
		acks = r.checkPacket(lp, flows, acks)
	}
	// Pass two: streams, then acknowledgements against them.
	for _, f := range r.Flows {
		f.build(r)
	}
	for _, a := range acks {
		f := flows[a.of]
		if f == nil {
			continue // the other direction is not in the capture
		}
		if a.sack {
			f.checkSACK(r, a.where, a.left, a.right)
		} else {
			f.checkAck(r, a.where, a.ack)
		}
	}
	return r
}

func (r *Report) checkPacket(lp labeled, flows map[flowKey]*Flow, acks []ackRef) []ackRef {
	pkt, where := lp.data, lp.where
	if len(pkt) == 0 {
		r.problem(where, "empty packet")
		return acks
	}
	switch pkt[0] >> 4 {
	case 4:
		var ip layers.IPv4
		if err := ip.DecodeFromBytes(pkt, gopacket.NilDecodeFeedback); err != nil {
			r.problem(where, "IPv4: %v", err)
			return acks
		}
		if int(ip.Length) != len(pkt) {
			r.problem(where, "IPv4 total length %d, packet %d bytes", ip.Length, len(pkt))
		}
		if _, v := ip.VerifyChecksum(); !v.Valid {
			r.problem(where, "IPv4 header checksum %#04x, want %#04x", v.Actual, v.Correct)
		}
	case 6:
		var ip layers.IPv6
		if err := ip.DecodeFromBytes(pkt, gopacket.NilDecodeFeedback); err != nil {
			r.problem(where, "IPv6: %v", err)
			return acks
		}
		if int(ip.Length)+40 != len(pkt) {
			r.problem(where, "IPv6 payload length %d, packet %d bytes", ip.Length, len(pkt))
		}
	default:
		r.problem(where, "IP version %d", pkt[0]>>4)
		return acks
	}
	var tcp layers.TCP
	src, dst, ok := decodeTCP(pkt, &tcp)
	if !ok {
		return acks // not TCP (or IPv6 extension headers: not generated here)
	}
	r.TCP++
	if err, v := tcp.VerifyChecksum(); err != nil {
		r.problem(where, "TCP checksum: %v", err)
	} else if !v.Valid {
		r.problem(where, "TCP checksum %#04x, want %#04x", v.Actual, v.Correct)
	}

	k := flowKey{netip.AddrPortFrom(src, uint16(tcp.SrcPort)), netip.AddrPortFrom(dst, uint16(tcp.DstPort))}
	f := flows[k]
	if f == nil {
		f = &Flow{Src: k.src, Dst: k.dst, ISN: tcp.Seq - 1, starts: map[uint32]bool{}, ends: map[uint32]bool{}}
		flows[k] = f
		r.Flows = append(r.Flows, f)
	}
	f.Segments++
	s := seg{where: where, seq: tcp.Seq, syn: tcp.SYN, fin: tcp.FIN, payload: tcp.Payload}
	f.segs = append(f.segs, s)
	// Without a SYN the stream starts at the lowest sequence number that
	// carried data or a FIN (a keep-alive's is one below the next byte).
	carries := len(tcp.Payload) > 0 || tcp.FIN
	switch {
	case tcp.SYN && !f.SawSYN:
		f.ISN, f.SawSYN = tcp.Seq, true
	case tcp.SYN && tcp.Seq != f.ISN:
		r.problem(where, "%v: SYN at %d, earlier SYN at %d", f.name(), tcp.Seq, f.ISN)
	case !f.SawSYN && carries && (!f.isnFromData || seqLT(tcp.Seq-1, f.ISN)):
		f.ISN, f.isnFromData = tcp.Seq-1, true
	}

	rev := flowKey{k.dst, k.src}
	if tcp.ACK {
		acks = append(acks, ackRef{where: where, of: rev, ack: tcp.Ack})
	}
	for _, o := range tcp.Options {
		if o.OptionType != layers.TCPOptionKindSACK {
			continue
		}
		if len(o.OptionData)%8 != 0 {
			r.problem(where, "SACK option of %d bytes", len(o.OptionData))
			continue
		}
		for j := 0; j+8 <= len(o.OptionData); j += 8 {
			acks = append(acks, ackRef{where: where, of: rev, sack: true, left: be32(o.OptionData[j:]), right: be32(o.OptionData[j+4:])})
		}
	}
	return acks
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// seqLT says a < b in sequence space (RFC 793, wrap-safe).
func seqLT(a, b uint32) bool { return int32(a-b) < 0 }

// build reconstructs the stream from the segments and records where
// segments start and end.
func (f *Flow) build(r *Report) {
	f.high = f.ISN + 1
	f.ends[f.ISN+1] = true
	// FINs first, so data beyond one is found whatever the order.
	for _, s := range f.segs {
		if !s.fin {
			continue
		}
		end := s.seq + uint32(len(s.payload))
		if s.syn {
			end++
		}
		if f.SawFIN && f.finSeq != end {
			r.problem(s.where, "%v: FIN at %d, another FIN at %d", f.name(), end, f.finSeq)
			continue
		}
		f.SawFIN, f.finSeq = true, end
		f.ends[end+1] = true
	}
	for _, s := range f.segs {
		seq := s.seq
		if s.syn {
			seq++
		}
		off := seq - (f.ISN + 1)
		n := uint32(len(s.payload))
		if n == 0 && !s.fin && !s.syn {
			continue // a pure acknowledgement or a keep-alive
		}
		if int32(off) < 0 || off > maxStream || off+n > maxStream {
			r.problem(s.where, "%v: sequence number %d is %d bytes from the stream's start", f.name(), s.seq, int32(off))
			continue
		}
		end := seq + n
		if n > 0 && f.SawFIN && seqLT(f.finSeq, end) {
			r.problem(s.where, "%v: %d bytes of data beyond the FIN at %d", f.name(), int32(end-f.finSeq), f.finSeq)
		}
		if s.fin {
			end++
		}
		if seqLT(f.high, end) {
			f.high = end
		}
		if n == 0 {
			continue
		}
		f.starts[seq] = true
		f.ends[seq+n] = true
		if need := int(off + n); need > len(f.buf) {
			f.buf = append(f.buf, make([]byte, need-len(f.buf))...)
			f.have = append(f.have, make([]bool, need-len(f.have))...)
		}
		mismatch := -1
		for j, c := range s.payload {
			p := int(off) + j
			if f.have[p] && f.buf[p] != c && mismatch < 0 {
				mismatch = j
			}
			if !f.have[p] {
				f.buf[p], f.have[p] = c, true
			}
		}
		if mismatch >= 0 {
			r.problem(s.where, "%v: retransmitted bytes differ at sequence number %d (offset %d of the segment): %q, first sent %q",
				f.name(), seq+uint32(mismatch), mismatch, s.payload, f.buf[off:off+n])
		}
	}
	k := 0
	for k < len(f.have) && f.have[k] {
		k++
	}
	f.Data = f.buf[:k]
	if k < len(f.have) {
		m := k
		for m < len(f.have) && !f.have[m] {
			m++
		}
		r.problem(f.name(), "%d bytes never sent at sequence number %d (a hole in the stream)", m-k, f.ISN+1+uint32(k))
	}
	if f.SawFIN && f.finSeq != f.ISN+1+uint32(len(f.buf)) && k == len(f.have) {
		r.problem(f.name(), "FIN at %d, but the data ends at %d", f.finSeq, f.ISN+1+uint32(len(f.buf)))
	}
}

func (f *Flow) checkAck(r *Report, where string, ack uint32) {
	if seqLT(ack, f.ISN+1) {
		if !f.SawSYN {
			return // acknowledges data from before the capture
		}
		r.problem(where, "ack %d is before %v's first byte %d", ack, f.name(), f.ISN+1)
		return
	}
	if seqLT(f.high, ack) {
		r.problem(where, "ack %d beyond what %v sent (up to %d)", ack, f.name(), f.high)
		return
	}
	if !f.ends[ack] {
		r.problem(where, "ack %d is not at the end of any segment of %v", ack, f.name())
	}
}

func (f *Flow) checkSACK(r *Report, where string, left, right uint32) {
	if !seqLT(left, right) {
		r.problem(where, "SACK block %d-%d is empty or reversed", left, right)
		return
	}
	if seqLT(f.high, right) {
		r.problem(where, "SACK block %d-%d beyond what %v sent (up to %d)", left, right, f.name(), f.high)
		return
	}
	if !f.starts[left] {
		r.problem(where, "SACK block %d-%d does not start where a segment of %v started", left, right, f.name())
	}
	if !f.ends[right] {
		r.problem(where, "SACK block %d-%d does not end where a segment of %v ended", left, right, f.name())
	}
}

func (f *Flow) name() string { return f.Src.String() + " -> " + f.Dst.String() }
