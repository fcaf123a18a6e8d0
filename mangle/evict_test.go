package mangle

import (
	"net/netip"
	"strings"
	"testing"
)

// send sends payload on connection c in direction d as one new in-order
// segment and returns what the engine made of it.
func (fl *fleet) send(c *fleetConn, d Dir, payload string) *Result {
	b := fl.packet(c, d, tcpACK|0x08, []byte(payload))
	c.seq[d] += uint32(len(payload))
	return fl.inject(b)
}

// emitted decodes the only packet a call emitted.
func (fl *fleet) emitted(res *Result) (packet, string) {
	fl.tb.Helper()
	if len(res.Emits) != 1 || res.Held {
		fl.tb.Fatalf("emits %d, held %v", len(res.Emits), res.Held)
	}
	var p packet
	if p.decode(res.Emits[0].Packet) != decodedTCP {
		fl.tb.Fatal("emitted packet does not decode")
	}
	return p, string(p.data())
}

// shift puts a 46 session in the state that must survive: PASV sent as
// EPSV 2 (the client's numbers now shifted by 2, a translated reply
// awaited).
func (fl *fleet) shift(c *fleetConn) {
	fl.tb.Helper()
	if _, got := fl.emitted(fl.send(c, ToServer, "PASV\r\n")); got != "EPSV 2\r\n" {
		fl.tb.Fatalf("%v: PASV sent as %q", c.client, got)
	}
}

// checkShifted checks that the session of c is followed: the reply to its
// PASV is translated and its next command comes out shifted.
func (fl *fleet) checkShifted(c *fleetConn) {
	fl.tb.Helper()
	if _, got := fl.emitted(fl.send(c, ToClient, "229 Entering Extended Passive Mode (|||2000|)\r\n")); !strings.HasPrefix(got, "227 ") {
		fl.tb.Fatalf("%v: 229 sent as %q", c.client, got)
	}
	seq := c.seq[ToServer]
	if p, _ := fl.emitted(fl.send(c, ToServer, "NOOP\r\n")); p.seq != seq+2 {
		fl.tb.Fatalf("%v: NOOP at %d, want %d", c.client, p.seq, seq+2)
	}
}

// spoofed sends a SYN to the server from the i-th spoofed client.
func (fl *fleet) spoofed(i int) {
	a := netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)})
	c := fleetConn{client: netip.AddrPortFrom(a, uint16(1024+i%50000)), server: netip.AddrPortFrom(sess46.Server4, 21), seq: [2]uint32{uint32(i), 0}}
	fl.inject(fl.packet(&c, ToServer, tcpSYN, nil))
}

// A SYN flood many times the table's size, beside real sessions opened
// before and during it: every real session keeps its pending command and
// its offsets; only the flood's own half-open flows are evicted.
func TestSYNFloodKeepsSessions(t *testing.T) {
	const maxFlows, real, flood = 1000, 400, 20000
	fl := newFleet(t, &Config{MaxFlows: maxFlows})
	fl.open(0, real/2)
	for i := range fl.conns {
		fl.shift(&fl.conns[i])
	}
	for i := range flood {
		fl.spoofed(i)
		if i%(2*flood/real) == 0 && len(fl.conns) < real {
			// A real session opened in the middle of the flood.
			fl.open(len(fl.conns), 1)
			fl.shift(&fl.conns[len(fl.conns)-1])
		}
	}
	if len(fl.conns) != real {
		t.Fatalf("%d real sessions, want %d", len(fl.conns), real)
	}
	for i := range fl.conns {
		fl.checkShifted(&fl.conns[i])
	}
	st := fl.e.Stats()
	if st.FlowsEvicted != 0 || st.FlowsRefused != 0 || st.HalfOpenEvicted < flood-maxFlows {
		t.Errorf("evicted %d, refused %d, half-open evicted %d", st.FlowsEvicted, st.FlowsRefused, st.HalfOpenEvicted)
	}
	if len(fl.e.flows) > maxFlows || fl.e.ho.n > maxFlows {
		t.Errorf("%d flows and %d half-open records, bound %d each", len(fl.e.flows), fl.e.ho.n, maxFlows)
	}
}

// A table full of flows that matter refuses a new one (its packets pass
// unchanged) instead of evicting one of them; a flow that stops mattering
// makes room again. SYNs meanwhile are kept as half-open records, which
// have their own bound: the flood evicts only its own records, and a
// record that needs a flow (its first payload) is refused.
func TestFullTableRefuses(t *testing.T) {
	const maxFlows = 50
	fl := newFleet(t, &Config{MaxFlows: maxFlows})
	fl.open(0, maxFlows)
	for i := range fl.conns {
		fl.shift(&fl.conns[i])
	}
	for i := range 3 * evictSample {
		fl.spoofed(i)
		if _, got := fl.emitted(&fl.res); got != "" {
			t.Fatalf("spoofed SYN came out with payload %q", got)
		}
	}
	st := fl.e.Stats()
	if st.FlowsRefused != 0 || st.FlowsEvicted != 0 || st.HalfOpenEvicted != 3*evictSample-maxFlows {
		t.Errorf("refused %d, evicted %d, half-open evicted %d", st.FlowsRefused, st.FlowsEvicted, st.HalfOpenEvicted)
	}
	if len(fl.e.flows) != maxFlows || fl.e.ho.n != maxFlows {
		t.Errorf("%d flows, %d half-open records", len(fl.e.flows), fl.e.ho.n)
	}
	// A new session: its handshake is a record, its greeting finds no
	// room (refused, the record forgotten), its command passes unchanged
	// (refused again): it is not followed.
	fl.open(maxFlows, 1)
	c := &fl.conns[maxFlows]
	if st := fl.e.Stats(); st.FlowsRefused != 1 || st.HalfOpenEvicted != 3*evictSample-maxFlows+1 {
		t.Errorf("after a handshake and greeting: refused %d, half-open evicted %d", st.FlowsRefused, st.HalfOpenEvicted)
	}
	if _, got := fl.emitted(fl.send(c, ToServer, "PASV\r\n")); got != "PASV\r\n" {
		t.Errorf("refused flow's PASV sent as %q", got)
	}
	if st := fl.e.Stats(); st.FlowsRefused != 2 {
		t.Errorf("refused %d, want 2", st.FlowsRefused)
	}
	fl.conns = fl.conns[:maxFlows]
	for i := range fl.conns {
		fl.checkShifted(&fl.conns[i])
	}
	// The sessions still have shifted numbers: they still matter, and
	// still nothing is evicted.
	fl.spoofed(1 << 20)
	fl.send(c, ToServer, "NOOP\r\n")
	if st := fl.e.Stats(); st.FlowsEvicted != 0 || st.FlowsRefused != 3 || len(fl.e.flows) != maxFlows {
		t.Errorf("evicted %d, refused %d, %d flows", st.FlowsEvicted, st.FlowsRefused, len(fl.e.flows))
	}
}

// Established flows with nothing rewritten, held or awaited go before a
// new flow is refused: their next packet rebuilds them.
func TestEvictsStatelessFlows(t *testing.T) {
	const maxFlows = 20
	fl := newFleet(t, &Config{MaxFlows: maxFlows})
	fl.open(0, maxFlows)
	for i := range maxFlows / 2 {
		fl.shift(&fl.conns[i])
	}
	fl.open(maxFlows, maxFlows/2)
	st := fl.e.Stats()
	if st.FlowsEvicted != maxFlows/2 || st.FlowsRefused != 0 {
		t.Errorf("evicted %d, refused %d", st.FlowsEvicted, st.FlowsRefused)
	}
	for i := range maxFlows / 2 {
		fl.checkShifted(&fl.conns[i])
	}
	// An evicted session is followed again from its next packet.
	c := &fl.conns[maxFlows/2]
	fl.shift(c)
	fl.checkShifted(c)
}

// Half-open flows go oldest first.
func TestHalfOpenOldestFirst(t *testing.T) {
	fl := newFleet(t, &Config{MaxFlows: 4})
	for i := range 6 {
		fl.spoofed(i)
	}
	if n := fl.e.HalfOpen(); n != 4 {
		t.Fatalf("%d half-open flows, want 4", n)
	}
	var got []netip.Addr
	for i := fl.e.ho.head; i >= 0; i = fl.e.ho.rec(i).nxt {
		got = append(got, fl.e.ho.rec(i).key.Client().Addr())
	}
	want := []netip.Addr{netip.MustParseAddr("172.16.0.2"), netip.MustParseAddr("172.16.0.3"), netip.MustParseAddr("172.16.0.4"), netip.MustParseAddr("172.16.0.5")}
	if len(got) != len(want) {
		t.Fatalf("half-open %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("half-open %v, want %v", got, want)
		}
	}
	// The first payload takes a flow off the list.
	fl.open(100, 1)
	if n := fl.e.HalfOpen(); n != 3 {
		t.Errorf("%d half-open flows after a session opened, want 3", n)
	}
}

// An evicted flow's saved state is dropped with it: the store does not
// keep (and a later packet does not restore) what the table let go.
func TestEvictForgetsState(t *testing.T) {
	const maxFlows = 10
	st := newMemStore()
	fl := newFleet(t, &Config{MaxFlows: maxFlows, State: st})
	fl.open(0, maxFlows) // greeted: saved, nothing that matters
	if len(st.m) != maxFlows {
		t.Fatalf("%d saved states, want %d", len(st.m), maxFlows)
	}
	fl.open(maxFlows, maxFlows)
	if s := fl.e.Stats(); s.FlowsEvicted != maxFlows || s.Restored != 0 {
		t.Errorf("evicted %d, restored %d", s.FlowsEvicted, s.Restored)
	}
	if len(st.m) != maxFlows {
		t.Errorf("%d saved states after evicting %d flows, want %d", len(st.m), maxFlows, maxFlows)
	}
	for k := range st.m {
		if _, ok := fl.e.flows[k]; !ok {
			t.Errorf("%v: evicted, but its state is still saved", k)
		}
	}
}
