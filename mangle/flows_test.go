package mangle

import (
	"testing"
)

// TestAppendFlows follows a 64 session whose 227 became a 229: the listing
// names the connection and the session, and the reply direction's shift is
// the length the rewrite changed.
func TestAppendFlows(t *testing.T) {
	s := newSim(t, sess64, false)
	s.handshake()
	s.send(ToClient, "220 ready\r\n")
	s.send(ToServer, "EPSV\r\n")
	const reply = "227 Entering Passive Mode (198,51,100,10,7,208)\r\n"
	s.send(ToClient, reply)
	got := s.e.AppendFlows(nil)
	if len(got) != 1 {
		t.Fatalf("AppendFlows = %+v, want one flow", got)
	}
	f := got[0]
	if f.Client != s.ends[ToServer].addr || f.Server != s.ends[ToClient].addr || !f.Translated || f.Session != sess64 {
		t.Errorf("flow %+v, want %v -> %v, translated, session %+v", f, s.ends[ToServer].addr, s.ends[ToClient].addr, sess64)
	}
	sent := s.got(ToClient)
	wantShift := int64(len(sent)) - int64(len("220 ready\r\n"+reply))
	if f.Shift[ToClient] != wantShift || f.Shift[ToServer] != 0 || wantShift == 0 {
		t.Errorf("shift %v, want [0 %d] (the client received %q)", f.Shift, wantShift, sent)
	}
	if f.Started.IsZero() || f.Last.Before(f.Started) {
		t.Errorf("started %v, last %v", f.Started, f.Last)
	}
	s.done()
}
