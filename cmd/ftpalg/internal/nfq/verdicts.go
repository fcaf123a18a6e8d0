package nfq

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
	oversize uint64
	// send, when set, is called with buf when it grows past batchLimit.
	send func(b []byte)
}

// Accept lets packet id go on unchanged.
func (v *Verdicts) Accept(id uint32) {
	v.buf = appendVerdict(v.buf, v.queue, id, verdictAccept, nil)
	v.added()
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
