//go:build linux

package nfq

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// recorder is a Handler that accepts everything and remembers the ids.
type recorder struct{ ids []uint32 }

func (r *recorder) Packet(id uint32, _ []byte, v *Verdicts) { r.ids = append(r.ids, id); v.Accept(id) }
func (r *recorder) Tick(time.Time, *Verdicts)               {}
func (r *recorder) Close(*Verdicts)                         {}

// packetWith returns an NFQNL_MSG_PACKET for id with payload, and capLen
// when not 0.
func packetWith(id uint32, payload []byte, capLen uint32) []byte {
	b, off := appendHeader(nil, msgPacket, 0, 0, 2, 0)
	var hdr [7]byte
	binary.BigEndian.PutUint32(hdr[:], id)
	binary.BigEndian.PutUint16(hdr[4:], 0x0800)
	b = appendAttr(b, attrPacketHdr, hdr[:])
	if payload != nil {
		b = appendAttr(b, attrPayload, payload)
	}
	if capLen != 0 {
		b = appendAttrU32(b, attrCapLen, capLen)
	}
	return finish(b, off)
}

func errorMsg(errno int32) []byte {
	b := binary.NativeEndian.AppendUint32(nil, 16+4+16)
	b = binary.NativeEndian.AppendUint16(b, nlmsgError)
	b = binary.NativeEndian.AppendUint16(b, 0)
	b = append(b, make([]byte, 8)...)
	b = binary.NativeEndian.AppendUint32(b, uint32(-errno))
	return append(b, make([]byte, 16)...)
}

func TestDispatch(t *testing.T) {
	q := &Queue{}
	h := &recorder{}
	var sent []Verdict
	v := NewVerdicts(0, func(b []byte) {
		vs, err := DecodeVerdicts(b)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, vs...)
	})
	var p packet
	full := packetWith(1, []byte("E\x00\x00\x14"), 0)
	read := append([]byte{}, full...)
	read = append(read, packetWith(2, nil, 0)...)                // no payload: accepted, not handed over
	read = append(read, errorMsg(2)...)                          // ENOENT for a verdict
	read = append(read, packetWith(3, []byte("E\x00"), 1500)...) // cut by the copy range
	read = append(read, packetWith(4, []byte("E\x00\x00\x14"), 0)...)
	cut := packetWith(5, make([]byte, 64), 0)
	read = append(read, cut[:len(cut)-20]...) // cut by the read buffer
	q.dispatch(read, &p, h, v)
	v.Flush()

	if diff := cmp.Diff([]uint32{1, 4}, h.ids); diff != "" {
		t.Errorf("handed to the handler (-want +got):\n%s", diff)
	}
	var ids []uint32
	for _, x := range sent {
		ids = append(ids, x.ID)
	}
	if diff := cmp.Diff([]uint32{1, 2, 3, 4, 5}, ids); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	st := q.Stats()
	if st.Packets != 5 || st.VerdictErrors != 1 || st.Truncated != 2 || st.BadMessages != 0 {
		t.Errorf("stats %+v: want 5 packets, 1 verdict error, 2 truncated", st)
	}
	if err := q.LastVerdictError(); err == nil || err.Error() != "no such file or directory" {
		t.Errorf("LastVerdictError = %v, want ENOENT", err)
	}
}
