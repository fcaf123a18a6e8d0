package mangle

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// Many control connections in one engine: what each costs in memory once
// established and idle, and what a pass-through packet costs when the
// flows it belongs to are spread over a large table (cache misses in the
// map and in the flow) rather than one hot flow.

// fleetConn is one established control connection of a fleet: its
// addresses and the next sequence number of each side.
type fleetConn struct {
	client, server netip.AddrPort
	seq            [2]uint32 // next sequence number sent, by Dir
}

// fleet drives many connections of the same session kind through one
// engine.
type fleet struct {
	tb    testing.TB
	e     *Engine
	m     *fakeMapper
	conns []fleetConn
	res   Result
	now   time.Time
	tag   uint64
}

func newFleet(tb testing.TB, cfg *Config) *fleet {
	m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}, noCalls: true}
	cfg.Mapper = m
	return &fleet{tb: tb, e: New(cfg), m: m, now: time.Unix(1700000000, 0)}
}

// fleetAddr is the i-th client of a fleet: 10.x.y.z ports 1024 and up.
func fleetAddr(i int) netip.AddrPort {
	a := 10<<24 | uint32(i/60000)
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), uint16(1024+i%60000))
}

// packet builds a segment of connection c in direction d carrying
// payload, acknowledging everything the other side sent.
func (fl *fleet) packet(c *fleetConn, d Dir, flags uint8, payload []byte) []byte {
	src, dst := c.client, c.server
	if d == ToClient {
		src, dst = dst, src
	}
	return buildTCP(src, dst, c.seq[d], c.seq[1-d], flags, payload, nil)
}

func (fl *fleet) inject(b []byte) *Result {
	fl.tag++
	fl.e.Process(b, fl.tag, fl.now, &fl.res)
	return &fl.res
}

// open runs the handshake and the server's greeting of n new connections
// (clients from fleetAddr(first) on).
func (fl *fleet) open(first, n int) {
	server := netip.AddrPortFrom(sess46.Server4, 21)
	for i := first; i < first+n; i++ {
		c := fleetConn{client: fleetAddr(i), server: server, seq: [2]uint32{uint32(i) * 7919, 0xfffff000 + uint32(i)}}
		fl.inject(fl.packet(&c, ToServer, tcpSYN, nil))
		c.seq[ToServer]++
		fl.inject(fl.packet(&c, ToClient, tcpSYN|tcpACK, nil))
		c.seq[ToClient]++
		fl.inject(fl.packet(&c, ToServer, tcpACK, nil))
		greet := []byte("220 ready\r\n")
		fl.inject(fl.packet(&c, ToClient, tcpACK|0x08, greet))
		c.seq[ToClient] += uint32(len(greet))
		fl.conns = append(fl.conns, c)
	}
}

// heapAlloc is the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkScale reports, for 1, 10k and 100k established idle control
// connections (46, IPv4 leg) in one engine: bytes/flow, the live heap the
// flows add divided by their number, and ns/pkt of a pass-through command
// (NOOP) and its reply (200), each a new in-order segment, sent
// round-robin over all of them.
func BenchmarkScale(b *testing.B) {
	for _, n := range []int{1, 10_000, 100_000} {
		b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) {
			fl := newFleet(b, &Config{MaxFlows: 2 * n})
			fl.conns = make([]fleetConn, 0, n)
			cmd, rep := []byte("NOOP\r\n"), []byte("200 NOOP ok.\r\n")
			before := heapAlloc()
			fl.open(0, n)
			after := heapAlloc()
			if fl.e.Flows() != n {
				b.Fatalf("%d flows, want %d", fl.e.Flows(), n)
			}
			perFlow := float64(int64(after)-int64(before)) / float64(n)
			cmds, reps := make([][]byte, n), make([][]byte, n)
			for i := range fl.conns {
				cmds[i] = fl.packet(&fl.conns[i], ToServer, tcpACK|0x08, cmd)
				reps[i] = fl.packet(&fl.conns[i], ToClient, tcpACK|0x08, rep)
			}
			i := 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				// The engine does not verify checksums, so only the
				// numbers change.
				c := &fl.conns[i]
				setNumbers(cmds[i], c.seq[ToServer], c.seq[ToClient])
				c.seq[ToServer] += uint32(len(cmd))
				fl.tag++
				fl.e.Process(cmds[i], fl.tag, fl.now, &fl.res)
				setNumbers(reps[i], c.seq[ToClient], c.seq[ToServer])
				c.seq[ToClient] += uint32(len(rep))
				fl.tag++
				fl.e.Process(reps[i], fl.tag, fl.now, &fl.res)
				if i++; i == n {
					i = 0
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/pkt")
			b.ReportMetric(perFlow, "bytes/flow")
			if st := fl.e.Stats(); st.Modified != 0 || st.Desync != 0 || st.FlowsEvicted != 0 || st.BadChecksum != 0 {
				b.Fatalf("stats %+v", st)
			}
			runtime.KeepAlive(cmds)
			runtime.KeepAlive(reps)
		})
	}
}
