package mangle

import (
	"testing"
	"time"
)

// An established idle control connection costs about a kilobyte (the flow,
// about 850 bytes, and its slot in the map): no line
// buffer, no held-packet buffers and, once its rewrites are acknowledged
// and it has been quiet for a sweep, no regions.
func TestFlowMemory(t *testing.T) {
	const n = 10_000
	for _, tc := range []struct {
		name    string
		rewrite bool
	}{{"greeted", false}, {"after a rewrite", true}} {
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
			fl.now = fl.now.Add(time.Minute)
			fl.e.Expire(fl.now, time.Second, &fl.res)
			per := (int64(heapAlloc()) - int64(before)) / n
			t.Logf("%d bytes per flow", per)
			if per > 1152 {
				t.Errorf("%d bytes per idle established flow, want at most 1152", per)
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
