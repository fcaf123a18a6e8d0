package mangle

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// A connection kept as a half-open record behaves, packet for packet, as
// the flow the engine kept before records: random handshakes (SYNs,
// SYN-ACKs, bare ACKs, FINs, RSTs at numbers around the right ones, with
// and without MSS options, some with bad checksums, retransmitted or for a
// new connection reusing the key), then payload, through two engines, one
// of which never makes records. Every emitted packet, every counter, the
// count of flows and of half-open connections and the listing are the
// same.
func TestHalfOpenSameAsFlow(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	client := netip.AddrPortFrom(sess46.Client4, 40000)
	server := netip.AddrPortFrom(sess46.Server4, 21)
	payloads := []string{"", "", "", "220 ready\r\n", "PASV\r\n", "229 Entering Extended Passive Mode (|||2000|)\r\n"}
	for iter := range 3000 {
		var e [2]*Engine
		for i := range e {
			m := &fakeMapper{sess: sess46, ok: iter%10 != 0, ports: map[uint16]uint16{}, noCalls: true}
			e[i] = New(&Config{Mapper: m})
		}
		e[1].noRecords = true
		now := time.Unix(1700000000, 0)
		isn := [2]uint32{rng.Uint32(), rng.Uint32()}
		var log []string
		var res [2]Result
		for step := range 2 + rng.IntN(10) {
			d := Dir(rng.IntN(2))
			src, dst := client, server
			if d == ToClient {
				src, dst = server, client
			}
			var flags uint8
			switch rng.IntN(8) {
			case 0, 1:
				flags = tcpSYN
			case 2, 3:
				flags = tcpSYN | tcpACK
			case 4, 5:
				flags = tcpACK
			case 6:
				flags = []uint8{0, tcpFIN | tcpACK, tcpRST, tcpRST | tcpACK, tcpSYN | tcpFIN}[rng.IntN(5)]
			case 7:
				flags = tcpACK | 0x08
			}
			near := func(x uint32) uint32 { return x + []uint32{0, 1, 1, 1, 2, 100, 0xffffffff}[rng.IntN(7)] }
			seq, ack := near(isn[d]), near(isn[1-d])
			payload := []byte(payloads[rng.IntN(len(payloads))])
			b := buildTCP(src, dst, seq, ack, flags, payload, nil)
			if flags&tcpSYN != 0 && rng.IntN(2) == 0 {
				b = withMSS(b, uint16(500+rng.IntN(1000)))
			}
			if rng.IntN(20) == 0 {
				b[len(b)-len(payload)-1] ^= 0x5a // a bad checksum
				var p packet
				p.decode(b)
				b[p.tcp+16] ^= 0xff
			}
			if rng.IntN(4) == 0 {
				now = now.Add(time.Duration(rng.IntN(3000)) * time.Second)
			}
			log = append(log, fmt.Sprintf("%v seq %+d ack %+d flags %#x payload %q", d, seq-isn[d], ack-isn[1-d], flags, payload))
			for i := range e {
				e[i].Process(append([]byte(nil), b...), uint64(step), now, &res[i])
			}
			if rng.IntN(6) == 0 {
				for i := range e {
					e[i].Expire(now, time.Second, &res[i])
				}
				log = append(log, "expire")
			}
			if !sameResult(&res[0], &res[1]) || e[0].Stats() != e[1].Stats() || e[0].Flows() != e[1].Flows() || e[0].HalfOpen() != e[1].HalfOpen() {
				t.Fatalf("iteration %d, after:\n%v\nwith records: %+v %+v flows %d half-open %d\nwithout: %+v %+v flows %d half-open %d",
					iter, log, res[0], e[0].Stats(), e[0].Flows(), e[0].HalfOpen(), res[1], e[1].Stats(), e[1].Flows(), e[1].HalfOpen())
			}
			if a, b := e[0].AppendFlows(nil), e[1].AppendFlows(nil); len(a) != len(b) || len(a) == 1 && !sameInfo(a[0], b[0]) {
				t.Fatalf("iteration %d, after:\n%v\nlisting %+v, without records %+v", iter, log, a, b)
			}
		}
	}
}

func sameResult(a, b *Result) bool {
	if a.Held != b.Held || len(a.Emits) != len(b.Emits) || len(a.Rewrites) != len(b.Rewrites) || len(a.Alerts) != len(b.Alerts) {
		return false
	}
	for i := range a.Emits {
		x, y := a.Emits[i], b.Emits[i]
		if x.Tag != y.Tag || !bytes.Equal(x.Packet, y.Packet) || x.Modified != y.Modified || x.Extra != y.Extra || x.Drop != y.Drop {
			return false
		}
	}
	return true
}

// sameInfo compares listings; times only to the millisecond (a record
// keeps its last packet's time so).
func sameInfo(a, b FlowInfo) bool {
	if !a.Last.Truncate(time.Millisecond).Equal(b.Last.Truncate(time.Millisecond)) || !a.Started.Equal(b.Started) {
		return false
	}
	a.Last, b.Last, a.Started, b.Started = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}
