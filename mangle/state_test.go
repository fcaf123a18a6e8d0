package mangle

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// memStore is a StateStore in memory, as a daemon's journal would be.
type memStore struct {
	m     map[FlowKey][]byte
	saves int
}

func newMemStore() *memStore { return &memStore{m: map[FlowKey][]byte{}} }

func (s *memStore) SaveFlow(k FlowKey, b []byte) {
	s.m[k] = append([]byte(nil), b...)
	s.saves++
}

func (s *memStore) LoadFlow(k FlowKey, buf []byte) []byte {
	b, ok := s.m[k]
	if !ok {
		return nil
	}
	return append(buf, b...)
}

func (s *memStore) DropFlow(k FlowKey) { delete(s.m, k) }

// restart replaces the sim's engine by a new one sharing the store, as a
// restarted daemon would: what the old engine held is lost.
func (s *sim) restart(st StateStore) {
	s.e = New(&Config{Mapper: s.m, State: st})
	for tag := range s.held {
		s.emitted[tag] = 1 // dropped with the old daemon; TCP resends it
		delete(s.held, tag)
	}
}

// A 46 session shifted by PASV -> EPSV 2 and 229 -> 227 survives a new
// engine: the next commands and replies are translated and mapped, and a
// retransmission of a line rewritten by the old engine comes out of the
// new one byte-identical.
func TestStateRestart46(t *testing.T) {
	for _, kill := range []string{"after-reply", "reply-in-flight"} {
		t.Run(kill, func(t *testing.T) {
			st := newMemStore()
			m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}}
			s := newSimMapper(t, m, false, &Config{State: st})
			s.handshake()
			if len(st.m) != 0 {
				t.Fatalf("%d states saved after the handshake, want 0: nothing heard from the server yet (a spoofed SYN costs nothing)", len(st.m))
			}
			s.send(ToClient, "220 ready\r\n")
			if len(st.m) != 1 {
				t.Fatalf("%d states saved after the greeting, want 1: a translated session waits for the next daemon", len(st.m))
			}
			s.send(ToServer, "PASV\r\n")
			sv := s.ends[ToClient]
			seq := sv.sndNxt
			reply := "229 Entering Extended Passive Mode (|||50000|)\r\n"
			var first []byte
			if kill == "after-reply" {
				s.send(ToClient, reply)
				first = append([]byte(nil), s.res.Emits[0].Packet...)
				s.ack(ToServer)
			}
			if len(st.m) != 1 {
				t.Fatalf("%d states saved, want 1", len(st.m))
			}
			s.restart(st)
			if kill == "reply-in-flight" {
				// The command's translation is pending: the new engine
				// translates the reply.
				s.send(ToClient, reply)
				first = append([]byte(nil), s.res.Emits[0].Packet...)
			}
			// The reply again, as the server's TCP resends it.
			s.inject(ToClient, s.build(ToClient, seq, tcpACK|0x08, []byte(reply)))
			if diff := cmp.Diff(first, s.res.Emits[0].Packet); diff != "" {
				t.Errorf("retransmission differs from the first rewrite:\n%s", diff)
			}
			s.send(ToServer, "PASV\r\n")
			s.send(ToClient, "229 Entering Extended Passive Mode (|||50001|)\r\n")
			s.send(ToServer, "QUIT\r\n")
			s.send(ToClient, "221 bye\r\n")
			want := lines("EPSV 2", "EPSV 2", "QUIT")
			if diff := cmp.Diff(want, s.got(ToServer)); diff != "" {
				t.Errorf("server got (-want +got):\n%s", diff)
			}
			wantC := lines("220 ready", "227 Entering Passive Mode (100,1,1,10,195,80)",
				"227 Entering Passive Mode (100,1,1,10,195,81)", "221 bye")
			if diff := cmp.Diff(wantC, s.got(ToClient)); diff != "" {
				t.Errorf("client got (-want +got):\n%s", diff)
			}
			if got := s.e.Stats().Restored; got != 1 {
				t.Errorf("Restored = %d, want 1", got)
			}
			s.done()
		})
	}
}

// Without a store the same restart breaks the connection: the new engine
// leaves the offsets unmapped (the test above fails on the old code).
func TestStateRestartWithoutStore(t *testing.T) {
	m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}}
	s := newSimMapper(t, m, false, &Config{})
	s.noCheck = true
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "PASV\r\n")
	s.send(ToClient, "229 Entering Extended Passive Mode (|||50000|)\r\n")
	s.restart(nil)
	s.send(ToServer, "NOOP\r\n")
	if got := s.got(ToServer); got == lines("EPSV 2", "NOOP") {
		t.Errorf("server got %q through an engine that lost the offsets", got)
	}
}

// A line whose start an old engine passed on unmodified is consumed
// unparsed by the new one, and the next line is translated.
func TestStateRestartMidLine(t *testing.T) {
	st := newMemStore()
	m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}}
	s := newSimMapper(t, m, false, &Config{State: st})
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "PASV\r\n")
	s.send(ToClient, "229 Entering Extended Passive Mode (|||50000|)\r\n")
	s.send(ToClient, "150-a long banner ")
	s.restart(st)
	s.send(ToClient, "that goes on\r\n150 ok\r\n")
	s.send(ToServer, "PASV\r\n")
	s.send(ToClient, "229 Entering Extended Passive Mode (|||50001|)\r\n")
	wantC := lines("220 ready", "227 Entering Passive Mode (100,1,1,10,195,80)",
		"150-a long banner that goes on", "150 ok", "227 Entering Passive Mode (100,1,1,10,195,81)")
	if diff := cmp.Diff(wantC, s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
	s.done()
}

// A daemon lost between the handshake and the greeting: nothing was saved
// (the server had not spoken), so the new engine meets the connection at
// its greeting, as it meets every connection with the Tayga rules that
// queue a connection from its greeting on: the 220 is the greeting, no
// reply to a missed command, and the session is translated from its first
// command on.
func TestStateRestartBeforeGreeting(t *testing.T) {
	st := newMemStore()
	m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}}
	s := newSimMapper(t, m, false, &Config{State: st})
	s.handshake()
	s.restart(st)
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "PASV\r\n")
	s.send(ToClient, "229 Entering Extended Passive Mode (|||50000|)\r\n")
	if diff := cmp.Diff(lines("220 ready", "227 Entering Passive Mode (100,1,1,10,195,80)"), s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
	if st := s.e.Stats(); st.Restored != 0 || st.Desync != 0 {
		t.Errorf("Restored %d, Desync %d; want 0, 0", st.Restored, st.Desync)
	}
	s.done()
}

// A daemon lost in the middle of a session without saved state: the
// first reply the new engine meets answers a command it never saw
// (counted), and the session is translated from its next command on.
func TestStateRestartMidSessionUnsaved(t *testing.T) {
	m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}}
	s := newSimMapper(t, m, false, &Config{})
	s.handshake()
	s.restart(nil)
	s.send(ToClient, "331 Please specify the password.\r\n")
	s.send(ToServer, "PASV\r\n")
	s.send(ToClient, "229 Entering Extended Passive Mode (|||50000|)\r\n")
	if diff := cmp.Diff(lines("331 Please specify the password.", "227 Entering Passive Mode (100,1,1,10,195,80)"), s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
	if st := s.e.Stats(); st.Desync != 1 {
		t.Errorf("Desync %d; want 1", st.Desync)
	}
	s.done()
}

// A new connection reusing the key of a saved one starts afresh and drops
// the stale state.
func TestStateSYNDropsStale(t *testing.T) {
	st := newMemStore()
	m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}}
	s := newSimMapper(t, m, false, &Config{State: st})
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "PASV\r\n")
	var stale []byte
	for _, b := range st.m {
		stale = b
	}
	s.restart(st)
	s.ends[ToServer].sndNxt += 100000
	s.ends[ToClient].synced, s.ends[ToServer].synced = false, false
	s.handshake()
	if len(st.m) != 0 {
		t.Errorf("%d states after a new SYN, want the stale one dropped", len(st.m))
	}
	s.send(ToClient, "220 ready\r\n")
	if len(st.m) != 1 {
		t.Errorf("%d states after the new connection's greeting, want its own", len(st.m))
	}
	for _, b := range st.m {
		if string(b) == string(stale) {
			t.Errorf("stale state kept after a new SYN")
		}
	}
	s.send(ToServer, "PASV\r\n")
	s.send(ToClient, "229 Entering Extended Passive Mode (|||50000|)\r\n")
	if got := s.e.Stats().Restored; got != 0 {
		t.Errorf("Restored = %d, want 0", got)
	}
}

func TestStateCorruptIgnored(t *testing.T) {
	var f flow
	f.sess = sess64
	f.s[0].hist.add(new(pools), 100, 6, []byte("PASV 2\r\n"), 0, false)
	b := f.appendState(nil)
	var g flow
	if !g.decodeState(b) {
		t.Fatalf("decode of a good state failed")
	}
	if g.s[0].hist.n != 1 || string(g.s[0].hist.data(&g.s[0].hist.regions[0])) != "PASV 2\r\n" || g.sess != sess64 {
		t.Errorf("decoded state differs: %+v", g.s[0].hist.regions[0])
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x40
		var h flow
		if h.decodeState(c) {
			t.Errorf("corrupt byte %d accepted", i)
		}
		if h.decodeState(b[:i]) {
			t.Errorf("state cut at %d accepted", i)
		}
	}
	if len(b) > MaxStateLen {
		t.Errorf("state of %d bytes longer than MaxStateLen %d", len(b), MaxStateLen)
	}
}

func FuzzDecodeState(f *testing.F) {
	var fl flow
	fl.sess = sess46
	f.Add(fl.appendState(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		var g flow
		g.decodeState(b)
	})
}

// Replies lost while no daemon ran come back in any order (a tail loss
// probe resends the last segment first): the new engine holds the later
// one until the hole is filled and parses both, so the command queue
// stays in step and the next passive reply is translated.
func TestStateRestartLastSegmentFirst(t *testing.T) {
	st := newMemStore()
	m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}}
	s := newSimMapper(t, m, false, &Config{State: st})
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "PASV\r\n")
	s.send(ToClient, "229 Entering Extended Passive Mode (|||50000|)\r\n")
	s.send(ToServer, "RETR f\r\n")
	s.restart(st)
	sv := s.ends[ToClient]
	first, second := "150 Opening\r\n", "226 Done\r\n"
	seq := sv.sndNxt
	sv.sndNxt += uint32(len(first) + len(second))
	s.inject(ToClient, s.build(ToClient, seq+uint32(len(first)), tcpACK|0x08, []byte(second)))
	s.inject(ToClient, s.build(ToClient, seq, tcpACK|0x08, []byte(first)))
	s.send(ToServer, "PASV\r\n")
	s.send(ToClient, "229 Entering Extended Passive Mode (|||50001|)\r\n")
	want := lines("220 ready", "227 Entering Passive Mode (100,1,1,10,195,80)", "150 Opening", "226 Done",
		"227 Entering Passive Mode (100,1,1,10,195,81)")
	if diff := cmp.Diff(want, s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
	s.done()
}

// A hole left by a lost daemon is waited for longer than a line is held:
// the retransmission that fills it comes after TCP's timeout.
func TestStateRestartHoleWaits(t *testing.T) {
	st := newMemStore()
	m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}}
	s := newSimMapper(t, m, false, &Config{State: st})
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "RETR f\r\n")
	s.restart(st)
	sv := s.ends[ToClient]
	first, second := "150 Opening\r\n", "226 Done\r\n"
	seq := sv.sndNxt
	sv.sndNxt += uint32(len(first) + len(second))
	s.inject(ToClient, s.build(ToClient, seq+uint32(len(first)), tcpACK|0x08, []byte(second)))
	s.expire(time.Second) // holds for 500 ms in the sim's terms: far past a line's hold
	s.inject(ToClient, s.build(ToClient, seq, tcpACK|0x08, []byte(first)))
	s.send(ToServer, "PASV\r\n")
	s.send(ToClient, "229 Entering Extended Passive Mode (|||50001|)\r\n")
	want := lines("220 ready", "150 Opening", "226 Done", "227 Entering Passive Mode (100,1,1,10,195,81)")
	if diff := cmp.Diff(want, s.got(ToClient)); diff != "" {
		t.Errorf("client got (-want +got):\n%s", diff)
	}
	if st := s.e.Stats(); st.HeldTimeout != 0 || st.Desync != 0 {
		t.Errorf("HeldTimeout %d, Desync %d; want 0", st.HeldTimeout, st.Desync)
	}
	s.done()
}

func TestStateClosed(t *testing.T) {
	st := newMemStore()
	m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}}
	s := newSimMapper(t, m, false, &Config{State: st})
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	var k FlowKey
	for key, b := range st.m {
		k = key
		if StateClosed(b) {
			t.Fatalf("open connection saved as closed")
		}
	}
	c, sv := s.ends[ToServer], s.ends[ToClient]
	s.inject(ToServer, s.build(ToServer, c.sndNxt, tcpACK|tcpFIN, nil))
	c.sndNxt++
	s.inject(ToClient, s.build(ToClient, sv.sndNxt, tcpACK|tcpFIN, nil))
	sv.sndNxt++
	if !StateClosed(st.m[k]) {
		t.Errorf("connection closed both ways not saved as closed")
	}
}

// A flood to port 21 costs no state: a SYN, or garbage from a client the
// server never answered with data, saves nothing (a journal file and a set
// element each, in the daemon), and a flow the ALG shifted by removing a
// Telnet negotiation from such garbage does not count as one that matters
// in a full table. Once the server speaks, it does both.
func TestStateNotSavedUntilServerSpeaks(t *testing.T) {
	st := newMemStore()
	m := &fakeMapper{sess: sess46, ok: true, ports: map[uint16]uint16{}}
	s := newSimMapper(t, m, false, &Config{State: st})
	s.handshake()
	s.send(ToServer, "\xff\xfb\x18garbage\r\n")
	if st.saves != 0 {
		t.Errorf("%d saves before the server spoke, want 0", st.saves)
	}
	var f *flow
	for _, g := range s.e.flows {
		f = g
	}
	if f == nil || f.s[ToServer].hist.empty() {
		t.Fatalf("the Telnet negotiation did not shift the flow: the test tests nothing")
	}
	if f.matters() {
		t.Errorf("a shifted flow the server never spoke in matters: a garbage flood would pin the table")
	}
	s.send(ToClient, "220 ready\r\n")
	if st.saves == 0 || !f.matters() {
		t.Errorf("after the greeting: %d saves, matters %v; want saved and mattering", st.saves, f.matters())
	}
}
