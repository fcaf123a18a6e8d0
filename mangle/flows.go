package mangle

import (
	"net/netip"
	"time"
)

// FlowInfo describes a control connection the engine follows, for an
// operator's listing ('ftpalg sessions').
type FlowInfo struct {
	// Client and Server are the connection's endpoints on the engine's
	// leg.
	Client, Server netip.AddrPort
	// Session is what the Mapper said of it; Translated is false (and
	// Session empty) for a connection the translator does not translate.
	Session    Session
	Translated bool
	// Shift is, per direction (indexed by Dir), how many bytes the
	// rewrites have added to the stream so far (negative: removed); the
	// sequence numbers of that direction differ by as much on the two
	// sides.
	Shift         [2]int64
	Started, Last time.Time // first and last packet seen
	Closed        bool      // RST, or FIN both ways
	Desync        bool      // replies can no longer be matched to commands
	Transparent   bool      // encrypted after AUTH: no longer read
}

// AppendFlows appends a FlowInfo for every control connection the engine
// follows to dst. It allocates (the listing is for operators, never on the
// packet path); call it from the goroutine that calls Process.
func (e *Engine) AppendFlows(dst []FlowInfo) []FlowInfo {
	for _, f := range e.flows {
		fi := FlowInfo{
			Client: f.key.Client(), Server: f.key.Server(),
			Session: f.sess, Translated: f.translate,
			Started: f.started, Last: f.last,
			Closed: f.closed, Desync: f.desync, Transparent: f.transparent,
		}
		for d := range f.s {
			st := &f.s[d]
			fi.Shift[d] = int64(int32(st.hist.toSent(st.next) - st.next))
		}
		dst = append(dst, fi)
	}
	for i := e.ho.head; i >= 0; {
		r := e.ho.rec(i)
		fi := FlowInfo{Client: r.key.Client(), Server: r.key.Server(), Started: time.Unix(0, r.started), Last: r.last()}
		fi.Session, _ = e.cfg.Mapper.Classify(fi.Client, fi.Server)
		fi.Translated = r.flags&hoTranslate != 0
		dst = append(dst, fi)
		i = r.nxt
	}
	return dst
}
