package mangle

import (
	"runtime"
	"testing"
	"time"
)

// A flow, as allocated, fits the 704-byte size class: the allocator adds
// an 8-byte header to objects over 512 bytes that hold pointers, so the
// struct must stay within 696 bytes (a field or padding more and every
// flow costs 768).
func TestFlowSize(t *testing.T) {
	const n = 1000
	keep := make([]*flow, n)
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	for i := range keep {
		keep[i] = new(flow)
	}
	runtime.ReadMemStats(&b)
	per := (b.TotalAlloc - a.TotalAlloc) / n
	t.Logf("%d bytes per flow allocated", per)
	if per > 704 {
		t.Errorf("a flow takes %d bytes, want at most 704", per)
	}
	runtime.KeepAlive(keep)
}

// An established idle control connection costs less than a kilobyte (the
// flow, 704 bytes with the allocator's header, and its slot in the map): no
// line buffer, no held-packet buffers and, once its rewrites are
// acknowledged and it has been quiet for a sweep, no regions. Right after
// its rewrites, before any sweep (100,000 sessions opened and translated in
// a burst), it still costs less than a kilobyte: the regions' replacement
// bytes take what they need, not maxRegionBytes each.
func TestFlowMemory(t *testing.T) {
	const n = 10_000
	for _, tc := range []struct {
		name           string
		rewrite, sweep bool
	}{{"greeted", false, true}, {"after a rewrite", true, true}, {"right after a rewrite", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			fl := newFleet(t, &Config{MaxFlows: 2 * n})
			fl.e.Expire(fl.now, time.Second, &fl.res) // the first sweep
			fl.conns = make([]fleetConn, 0, n)
			before := heapAlloc()
			fl.open(0, n)
			if tc.rewrite {
				for i := range fl.conns {
					c := &fl.conns[i]
					fl.shift(c)
					fl.checkShifted(c) // 229 -> 227, then a NOOP
					fl.send(c, ToClient, "200 NOOP ok.\r\n")
					fl.inject(fl.packet(c, ToServer, tcpACK, nil))
				}
			}
			if tc.sweep {
				fl.now = fl.now.Add(time.Minute)
				fl.e.Expire(fl.now, time.Second, &fl.res)
			}
			per := (int64(heapAlloc()) - int64(before)) / n
			t.Logf("%d bytes per flow", per)
			if per > 1024 {
				t.Errorf("%d bytes per established flow, want at most 1024", per)
			}
			if fl.e.Flows() != n {
				t.Fatalf("%d flows", fl.e.Flows())
			}
			// The flows still map their numbers after the sweep.
			if tc.rewrite {
				for i := range 10 {
					c := &fl.conns[i]
					seq := c.seq[ToServer]
					if p, _ := fl.emitted(fl.send(c, ToServer, "NOOP\r\n")); p.seq != seq+2 {
						t.Fatalf("%v: NOOP at %d after the sweep, want %d", c.client, p.seq, seq+2)
					}
				}
			}
		})
	}
}
