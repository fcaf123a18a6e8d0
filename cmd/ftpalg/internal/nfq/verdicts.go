package nfq

import (
	"encoding/binary"
	"errors"
)

// batchLimit is the size past which collected verdicts are sent at once
// instead of at the end of the handler's call (well below the default
// socket send buffer, which bounds one netlink write).
const batchLimit = 128 << 10

// Verdicts collects the verdicts a Handler gives during one call; the
// queue sends them together, in order, in one write. A packet that gets no
// verdict stays queued in the kernel (held) until a later call gives one.
// Each packet must get exactly one verdict.
type Verdicts struct {
	queue    uint16
	buf      []byte
	n        int // verdicts in buf
	accepted uint64
	modified uint64
	dropped  uint64
	oversize uint64
	// send, when set, is called with buf when it grows past batchLimit.
	send func(b []byte)
}

// Accept lets packet id go on unchanged.
func (v *Verdicts) Accept(id uint32) {
	v.buf = appendVerdict(v.buf, v.queue, id, verdictAccept, nil)
	v.added()
}

// Drop drops packet id.
func (v *Verdicts) Drop(id uint32) {
	v.buf = appendVerdict(v.buf, v.queue, id, verdictDrop, nil)
	v.n++
	v.dropped++
	if v.send != nil && len(v.buf) >= batchLimit {
		v.flush()
	}
}

// AcceptModified lets packet id go on with pkt in place of its bytes. pkt
// is copied before AcceptModified returns. A packet longer than a verdict
// can carry (65531 bytes) is accepted unchanged and counted; an empty pkt
// is a plain Accept.
func (v *Verdicts) AcceptModified(id uint32, pkt []byte) {
	if len(pkt) > maxPayload || len(pkt) == 0 {
		if len(pkt) != 0 {
			v.oversize++
		}
		v.Accept(id)
		return
	}
	v.buf = appendVerdict(v.buf, v.queue, id, verdictAccept, pkt)
	v.modified++
	v.added()
}

func (v *Verdicts) added() {
	v.n++
	v.accepted++
	if v.send != nil && len(v.buf) >= batchLimit {
		v.flush()
	}
}

// Len is the number of verdicts collected and not yet sent.
func (v *Verdicts) Len() int { return v.n }

func (v *Verdicts) flush() {
	if v.n == 0 {
		return
	}
	if v.send != nil {
		v.send(v.buf)
	}
	v.reset()
}

func (v *Verdicts) reset() {
	v.buf = v.buf[:0]
	v.n = 0
}

// NewVerdicts returns a Verdicts that passes every batch to send instead of
// a queue's socket: a fake at the message level for tests of handlers and
// for offline tools. Decode the batches with DecodeVerdicts.
func NewVerdicts(queue uint16, send func(batch []byte)) *Verdicts {
	return &Verdicts{queue: queue, send: send}
}

// Flush passes the collected verdicts to the send function of NewVerdicts
// (a queue flushes on its own).
func (v *Verdicts) Flush() { v.flush() }

// Verdict is one decoded verdict message.
type Verdict struct {
	Queue   uint16
	ID      uint32
	Verdict uint32 // 1 is NF_ACCEPT
	Packet  []byte // the replacement packet, nil when unchanged
}

// DecodeVerdicts decodes a batch of verdict messages as a queue writes
// them. Packets alias b.
func DecodeVerdicts(b []byte) ([]Verdict, error) {
	var out []Verdict
	for len(b) > 0 {
		m, rest, err := nextMessage(b)
		if err != nil {
			return out, err
		}
		b = rest
		if m.typ != msgVerdict || len(m.data) < nfgenLen {
			return out, errors.New("not a verdict message")
		}
		vd := Verdict{Queue: binary.BigEndian.Uint16(m.data[2:4])}
		hdr := false
		for a := m.data[nfgenLen:]; len(a) >= nlaHdrLen; {
			l := int(binary.NativeEndian.Uint16(a))
			if l < nlaHdrLen || l > len(a) {
				return out, errShort
			}
			switch binary.NativeEndian.Uint16(a[2:]) & nlaTypeMask {
			case attrVerdictHdr:
				if l < nlaHdrLen+8 {
					return out, errShort
				}
				vd.Verdict = binary.BigEndian.Uint32(a[4:])
				vd.ID = binary.BigEndian.Uint32(a[8:])
				hdr = true
			case attrPayload:
				vd.Packet = a[nlaHdrLen:l]
			}
			if align4(l) >= len(a) {
				break
			}
			a = a[align4(l):]
		}
		if !hdr {
			return out, errors.New("verdict message without a verdict header")
		}
		out = append(out, vd)
	}
	return out, nil
}
