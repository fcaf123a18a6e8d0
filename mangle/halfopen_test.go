package mangle

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// A connection that only sent a SYN, or went through its handshake
// without payload, costs a small fraction of a flow: at most 100 bytes
// (its record, its share of the index and of the records' chunks).
func TestHalfOpenMemory(t *testing.T) {
	const n = 10_000
	for _, handshake := range []bool{false, true} {
		name := "SYN only"
		if handshake {
			name = "SYN, SYN-ACK, ACK"
		}
		t.Run(name, func(t *testing.T) {
			fl := newFleet(t, &Config{MaxFlows: 2 * n})
			server := netip.AddrPortFrom(sess46.Server4, 21)
			pkts := make([][]byte, 0, 3*n)
			for i := range n {
				c := fleetConn{client: fleetAddr(i), server: server, seq: [2]uint32{uint32(i) * 7919, 0xfffff000 + uint32(i)}}
				pkts = append(pkts, fl.packet(&c, ToServer, tcpSYN, nil))
				if handshake {
					c.seq[ToServer]++
					pkts = append(pkts, fl.packet(&c, ToClient, tcpSYN|tcpACK, nil))
					c.seq[ToClient]++
					pkts = append(pkts, fl.packet(&c, ToServer, tcpACK, nil))
				}
			}
			before := heapAlloc()
			for _, b := range pkts {
				fl.inject(b)
				if len(fl.res.Emits) != 1 || fl.res.Emits[0].Modified {
					t.Fatalf("emits %+v", fl.res.Emits)
				}
			}
			per := (int64(heapAlloc()) - int64(before)) / n
			runtime.KeepAlive(pkts)
			t.Logf("%d bytes per half-open connection", per)
			if per > 100 {
				t.Errorf("%d bytes per half-open connection, want at most 100", per)
			}
			if fl.e.HalfOpen() != n || fl.e.Flows() != n {
				t.Errorf("%d half-open, %d flows, want %d", fl.e.HalfOpen(), fl.e.Flows(), n)
			}
		})
	}
}

// A flood of SYNs past the bound allocates nothing per packet: each one
// takes the place of the oldest.
func TestHalfOpenFloodAllocs(t *testing.T) {
	fl := newFleet(t, &Config{MaxFlows: 100})
	server := netip.AddrPortFrom(sess46.Server4, 21)
	pkts := make([][]byte, 1000)
	for i := range pkts {
		c := fleetConn{client: fleetAddr(i), server: server, seq: [2]uint32{uint32(i), 0}}
		pkts[i] = fl.packet(&c, ToServer, tcpSYN, nil)
	}
	i := 0
	send := func() {
		fl.tag++
		fl.e.Process(pkts[i%len(pkts)], fl.tag, fl.now, &fl.res)
		i++
	}
	for range 2 * len(pkts) {
		send()
	}
	if n := testing.AllocsPerRun(1000, send); n != 0 {
		t.Errorf("%v allocations per SYN", n)
	}
	if fl.e.ho.n != 100 {
		t.Errorf("%d records", fl.e.ho.n)
	}
}

// The record table against a map: random adds and removes, including
// many keys whose index slots collide in a small table.
func TestHalfOpenTable(t *testing.T) {
	var tb hoTable
	tb.init()
	model := map[FlowKey]int32{}
	var order []FlowKey // the age list, oldest first
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() FlowKey {
		return FlowKeyOf(fleetAddr(rng.IntN(3000)), netip.AddrPortFrom(sess46.Server4, 21))
	}
	for step := range 200_000 {
		k := key()
		i, ok := model[k]
		if got := tb.find(&k); ok != (got >= 0) || ok && got != i {
			t.Fatalf("step %d: find %v = %d, model %d %v", step, k, got, i, ok)
		}
		if ok {
			tb.remove(i)
			delete(model, k)
			for j := range order {
				if order[j] == k {
					order = append(order[:j], order[j+1:]...)
					break
				}
			}
		} else if rng.IntN(3) > 0 || tb.n == 0 {
			model[k] = tb.add(k)
			order = append(order, k)
		} else {
			// Drop the oldest, as a full table does.
			o := tb.rec(tb.head).key
			if o != order[0] {
				t.Fatalf("step %d: oldest %v, want %v", step, o, order[0])
			}
			tb.remove(tb.head)
			delete(model, o)
			order = order[1:]
		}
		if tb.n != len(model) {
			t.Fatalf("step %d: %d records, model %d", step, tb.n, len(model))
		}
	}
	n := 0
	for i := tb.head; i >= 0; i = tb.rec(i).nxt {
		if tb.rec(i).key != order[n] {
			t.Fatalf("age list at %d: %v, want %v", n, tb.rec(i).key, order[n])
		}
		n++
	}
	if n != len(order) {
		t.Fatalf("age list %d long, want %d", n, len(order))
	}
	// Emptied, the table keeps one chunk, and works on.
	for tb.n > 0 {
		tb.remove(tb.head)
	}
	if len(tb.chunks) != 1 || len(tb.idx) != 64 || tb.head != -1 || tb.tail != -1 {
		t.Fatalf("emptied: %d chunks, index of %d, list %d..%d", len(tb.chunks), len(tb.idx), tb.head, tb.tail)
	}
	for i := range 2 * hoChunk {
		k := FlowKeyOf(fleetAddr(i), netip.AddrPortFrom(sess46.Server4, 21))
		tb.add(k)
		if tb.find(&k) < 0 {
			t.Fatalf("%v added, not found", k)
		}
	}
	if len(tb.chunks) != 2 || tb.n != 2*hoChunk {
		t.Fatalf("%d chunks, %d records", len(tb.chunks), tb.n)
	}
}

// A record idle for longer than the idle timeout is forgotten, like a
// flow; one that saw a packet since stays.
func TestHalfOpenExpire(t *testing.T) {
	fl := newFleet(t, &Config{IdleTimeout: time.Hour})
	fl.spoofed(1)
	fl.spoofed(2)
	fl.now = fl.now.Add(50 * time.Minute)
	fl.spoofed(2) // the same SYN again
	fl.now = fl.now.Add(20 * time.Minute)
	fl.e.Expire(fl.now, time.Second, &fl.res)
	if fl.e.HalfOpen() != 1 {
		t.Fatalf("%d half-open records, want 1", fl.e.HalfOpen())
	}
	got := fl.e.AppendFlows(nil)
	if len(got) != 1 || got[0].Client.Addr() != netip.MustParseAddr("172.16.0.2") || !got[0].Translated ||
		got[0].Session != sess46 || !got[0].Last.Equal(fl.now.Add(-20*time.Minute)) {
		t.Errorf("flows %+v", got)
	}
}

// A record becomes the flow the handshake would have built: the MSS each
// side announced, the initial numbers, the acknowledgements, the greeting
// awaited. A bare ACK beyond the numbers seen makes it a flow first, which
// sends it at the next expected number, as a flow does.
func TestHalfOpenPromote(t *testing.T) {
	fl := newFleet(t, &Config{})
	c := fleetConn{client: fleetAddr(1), server: netip.AddrPortFrom(sess46.Server4, 21), seq: [2]uint32{1000, 0xfffffff0}}
	fl.inject(withMSS(fl.packet(&c, ToServer, tcpSYN, nil), 1400))
	c.seq[ToServer]++
	fl.inject(withMSS(fl.packet(&c, ToClient, tcpSYN|tcpACK, nil), 1300))
	c.seq[ToClient]++
	fl.inject(fl.packet(&c, ToServer, tcpACK, nil))
	if fl.e.ho.n != 1 || len(fl.e.flows) != 0 {
		t.Fatalf("%d records, %d flows after the handshake", fl.e.ho.n, len(fl.e.flows))
	}
	ahead := c
	ahead.seq[ToServer] += 10
	p, _ := fl.emitted(fl.inject(fl.packet(&ahead, ToServer, tcpACK, nil)))
	if fl.e.ho.n != 0 || len(fl.e.flows) != 1 {
		t.Fatalf("%d records, %d flows after a bare ACK ahead", fl.e.ho.n, len(fl.e.flows))
	}
	if p.seq != c.seq[ToServer] {
		t.Errorf("bare ACK ahead sent at %d, want %d", p.seq, c.seq[ToServer])
	}
	f := fl.e.flows[FlowKeyOf(c.client, c.server)]
	cs, ss := &f.s[ToServer], &f.s[ToClient]
	if cs.mss != 1300 || ss.mss != 1400 || !cs.synced || !ss.synced || cs.next != 1001 || ss.next != 0xfffffff1 {
		t.Errorf("streams: client %+v, server %+v", cs, ss)
	}
	if !cs.ackSeen || !cs.rcvSeen || cs.acked != 1001 || cs.rcvAck != 1001 || !ss.ackSeen || ss.acked != 0xfffffff1 || ss.rcvAck != 0xfffffff1 {
		t.Errorf("acknowledgements: client %+v, server %+v", cs, ss)
	}
	if pc, ok := f.head(); !ok || pc.kind != cmdGreeting || f.n != 1 || !f.halfOpen || !f.translate || f.sess != sess46 {
		t.Errorf("flow %+v", f)
	}
	if f.started != fl.now || f.last != fl.now {
		t.Errorf("started %v, last %v", f.started, f.last)
	}
	// The session goes on as any.
	fl.send(&c, ToClient, "220 ready\r\n")
	fl.shift(&c)
	fl.checkShifted(&c)
	if st := fl.e.Stats(); st.Flows != 1 || st.HalfOpenEvicted != 0 {
		t.Errorf("stats %+v", st)
	}
}
