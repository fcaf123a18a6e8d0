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
	Packet int // index of the packet in the capture, -1 for a whole flow
	Msg    string
}

func (p Problem) String() string {
	if p.Packet < 0 {
		return p.Msg
	}
	return fmt.Sprintf("packet %d: %s", p.Packet, p.Msg)
}

// Flow is one direction of a TCP connection, reconstructed from a capture.
type Flow struct {
	Src, Dst netip.AddrPort
	// ISN is the sequence number of the SYN (SawSYN) or one less than the
	// first sequence number seen.
	ISN    uint32
	SawSYN bool
	SawFIN bool
	// Data is the byte stream from ISN+1 up to the first byte never seen.
	Data []byte
	// Segments counts the packets of this direction.
	Segments int

	have   []bool // which bytes of buf were seen
	buf    []byte
	high   uint32 // highest sequence number sent plus one (SYN and FIN count)
	finSeq uint32
	starts map[uint32]bool // sequence numbers where a segment started
	ends   map[uint32]bool // sequence numbers up to which something can be acknowledged
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

// Check verifies a capture of raw IP packets, in capture order:
//   - every IPv4 header checksum and every TCP checksum is right (verified
//     with gopacket), and the IP length fields match the packet;
//   - per TCP flow and direction, segments that overlap carry identical bytes
//     at identical sequence numbers, no data follows a FIN, and the stream
//     has no hole;
//   - every acknowledgement number acknowledges only what the other
//     direction has sent so far: not beyond its highest sequence number plus
//     length, and on a boundary where one of its segments (or its SYN or FIN)
//     ended; every SACK block (RFC 2018) starts where a segment of the other
//     direction started and ends where one ended, again within what was sent.
//
// Acknowledgements of a direction not seen at all, or of data from before
// the capture started, cannot be checked and are not reported. Packets that
// are not TCP are counted and otherwise ignored. All sequence arithmetic is
// modulo 2^32.
func Check(packets [][]byte) *Report {
	r := &Report{}
	flows := map[flowKey]*Flow{}
	for i, pkt := range packets {
		r.Packets++
		r.checkPacket(i, pkt, flows)
	}
	for _, f := range r.Flows {
		f.finish(r)
	}
	return r
}

func (r *Report) problem(i int, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{Packet: i, Msg: fmt.Sprintf(format, args...)})
}

func (r *Report) checkPacket(i int, pkt []byte, flows map[flowKey]*Flow) {
	if len(pkt) == 0 {
		r.problem(i, "empty packet")
		return
	}
	var (
		tcp      layers.TCP
		src, dst netip.Addr
	)
	switch pkt[0] >> 4 {
	case 4:
		var ip layers.IPv4
		if err := ip.DecodeFromBytes(pkt, gopacket.NilDecodeFeedback); err != nil {
			r.problem(i, "IPv4: %v", err)
			return
		}
		if int(ip.Length) != len(pkt) {
			r.problem(i, "IPv4 total length %d, packet %d bytes", ip.Length, len(pkt))
		}
		if _, v := ip.VerifyChecksum(); !v.Valid {
			r.problem(i, "IPv4 header checksum %#04x, want %#04x", v.Actual, v.Correct)
		}
		if ip.Protocol != layers.IPProtocolTCP || ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
			return
		}
		if err := tcp.DecodeFromBytes(ip.Payload, gopacket.NilDecodeFeedback); err != nil {
			r.problem(i, "TCP: %v", err)
			return
		}
		_ = tcp.SetNetworkLayerForChecksum(&ip)
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
	case 6:
		var ip layers.IPv6
		if err := ip.DecodeFromBytes(pkt, gopacket.NilDecodeFeedback); err != nil {
			r.problem(i, "IPv6: %v", err)
			return
		}
		if int(ip.Length)+40 != len(pkt) {
			r.problem(i, "IPv6 payload length %d, packet %d bytes", ip.Length, len(pkt))
		}
		if ip.NextHeader != layers.IPProtocolTCP {
			return // extension headers: not generated here, not checked
		}
		if err := tcp.DecodeFromBytes(ip.Payload, gopacket.NilDecodeFeedback); err != nil {
			r.problem(i, "TCP: %v", err)
			return
		}
		_ = tcp.SetNetworkLayerForChecksum(&ip)
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
	default:
		r.problem(i, "IP version %d", pkt[0]>>4)
		return
	}
	r.TCP++
	if err, v := tcp.VerifyChecksum(); err != nil {
		r.problem(i, "TCP checksum: %v", err)
	} else if !v.Valid {
		r.problem(i, "TCP checksum %#04x, want %#04x", v.Actual, v.Correct)
	}

	k := flowKey{netip.AddrPortFrom(src, uint16(tcp.SrcPort)), netip.AddrPortFrom(dst, uint16(tcp.DstPort))}
	f := flows[k]
	if f == nil {
		f = &Flow{Src: k.src, Dst: k.dst, starts: map[uint32]bool{}, ends: map[uint32]bool{}}
		if tcp.SYN {
			f.ISN, f.SawSYN = tcp.Seq, true
		} else {
			f.ISN = tcp.Seq - 1
		}
		f.high = f.ISN + 1
		f.ends[f.ISN+1] = true
		flows[k] = f
		r.Flows = append(r.Flows, f)
	}
	f.Segments++
	f.segment(r, i, &tcp)

	rev := flows[flowKey{k.dst, k.src}]
	if rev == nil {
		return // the other direction was not seen yet: nothing to check against
	}
	if tcp.ACK {
		rev.checkAck(r, i, tcp.Ack)
	}
	for _, o := range tcp.Options {
		if o.OptionType != layers.TCPOptionKindSACK {
			continue
		}
		if len(o.OptionData)%8 != 0 {
			r.problem(i, "SACK option of %d bytes", len(o.OptionData))
			continue
		}
		for j := 0; j+8 <= len(o.OptionData); j += 8 {
			left := be32(o.OptionData[j:])
			right := be32(o.OptionData[j+4:])
			rev.checkSACK(r, i, left, right)
		}
	}
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// seqLT says a < b in sequence space (RFC 793, wrap-safe).
func seqLT(a, b uint32) bool { return int32(a-b) < 0 }

func (f *Flow) segment(r *Report, i int, tcp *layers.TCP) {
	seq := tcp.Seq
	if tcp.SYN {
		if f.SawSYN && seq != f.ISN {
			r.problem(i, "%v: SYN at %d, earlier SYN at %d", f.name(), seq, f.ISN)
			return
		}
		seq++
	}
	off := seq - (f.ISN + 1)
	n := uint32(len(tcp.Payload))
	if int32(off) < 0 || off > maxStream || off+n > maxStream {
		r.problem(i, "%v: sequence number %d is %d bytes from the stream's start", f.name(), tcp.Seq, int32(off))
		return
	}
	if n > 0 {
		f.starts[seq] = true
		f.ends[seq+n] = true
		if f.SawFIN && seqLT(f.finSeq, seq+n) {
			r.problem(i, "%v: %d bytes of data beyond the FIN at %d", f.name(), n, f.finSeq)
		}
		if need := int(off + n); need > len(f.buf) {
			f.buf = append(f.buf, make([]byte, need-len(f.buf))...)
			f.have = append(f.have, make([]bool, need-len(f.have))...)
		}
		mismatch := -1
		for j, c := range tcp.Payload {
			p := int(off) + j
			if f.have[p] && f.buf[p] != c && mismatch < 0 {
				mismatch = j
			}
			f.buf[p], f.have[p] = c, true
		}
		if mismatch >= 0 {
			r.problem(i, "%v: retransmitted bytes differ at sequence number %d (offset %d of the segment)",
				f.name(), seq+uint32(mismatch), mismatch)
		}
	}
	end := seq + n
	if tcp.SYN {
		f.ends[seq] = true
	}
	if tcp.FIN {
		if f.SawFIN && f.finSeq != end {
			r.problem(i, "%v: FIN at %d, earlier FIN at %d", f.name(), end, f.finSeq)
		}
		if !f.SawFIN && seqLT(end, f.ISN+1+uint32(len(f.buf))) {
			r.problem(i, "%v: FIN at %d before data already sent", f.name(), end)
		}
		f.SawFIN, f.finSeq = true, end
		end++
		f.ends[end] = true
	}
	if seqLT(f.high, end) {
		f.high = end
	}
}

func (f *Flow) checkAck(r *Report, i int, ack uint32) {
	if seqLT(ack, f.ISN+1) {
		if !f.SawSYN {
			return // acknowledges data from before the capture
		}
		r.problem(i, "ack %d is before %v's first byte %d", ack, f.name(), f.ISN+1)
		return
	}
	if seqLT(f.high, ack) {
		r.problem(i, "ack %d beyond what %v sent (up to %d)", ack, f.name(), f.high)
		return
	}
	if !f.ends[ack] {
		r.problem(i, "ack %d is not at the end of any segment of %v", ack, f.name())
	}
}

func (f *Flow) checkSACK(r *Report, i int, left, right uint32) {
	if !seqLT(left, right) {
		r.problem(i, "SACK block %d-%d is empty or reversed", left, right)
		return
	}
	if seqLT(f.high, right) {
		r.problem(i, "SACK block %d-%d beyond what %v sent (up to %d)", left, right, f.name(), f.high)
		return
	}
	if !f.starts[left] {
		r.problem(i, "SACK block %d-%d does not start where a segment of %v started", left, right, f.name())
	}
	if !f.ends[right] {
		r.problem(i, "SACK block %d-%d does not end where a segment of %v ended", left, right, f.name())
	}
}

func (f *Flow) finish(r *Report) {
	n := 0
	for n < len(f.have) && f.have[n] {
		n++
	}
	f.Data = f.buf[:n]
	if n < len(f.have) {
		m := n
		for m < len(f.have) && !f.have[m] {
			m++
		}
		r.problem(-1, "%v: %d bytes never sent at sequence number %d (a hole in the stream)", f.name(), m-n, f.ISN+1+uint32(n))
	}
}

func (f *Flow) name() string { return f.Src.String() + " -> " + f.Dst.String() }
