package conntrackx

import (
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
)

// ExpectationCreator is what PinholeMapper needs of an Expecter.
type ExpectationCreator interface {
	Create(Expectation) error
	Liberal(client, server netip.AddrPort) error
}

// PinholeMapper is the translator's Mapper with firewall pinholes: after
// the inner Mapper has set up a data channel, it creates the conntrack
// expectation of the data connection on the leg the engine rewrites, so
// that a firewall admitting "ct state established,related" admits it.
//
// Why that leg and only that leg (rules.Config.Helper, rules/README.md
// "Pinholes"): the engine rewrites there before conntrack, so conntrack on
// that leg sees each side's messages in the other family's words and the
// kernel's FTP helper cannot run there (it would even drop a rewritten
// "EPRT |2|" on IPv4); the rules attach an inert carrier helper instead,
// and every expectation of that leg is made here, for all four modes. The
// other leg carries consistent text, and the kernel's FTP helper makes
// its expectations, except for RFC 1639's LPSV/228 and LPRT, which it does
// not parse: for those (DataRequest.Long) the other leg's expectation is
// made here too.
//
// Before each expectation it makes the control connection's window
// tracking liberal (Expecter.Liberal): the engine's rewrites
// that shorten a line otherwise make conntrack mark the connection's later
// packets INVALID, which the same firewall drops. Rewrites before the
// first data channel of a connection (ALGS, EPSV ALL) are covered by
// LengthChanged, which the engine calls at a connection's first length
// change.
//
// A failure to create an expectation never fails MapData: the rewrite
// goes ahead (the data connection may still pass a firewall that needs no
// pinhole), the failure is counted and logged once per control connection,
// with a global rate limit.
//
// It is safe for concurrent use if the inner Mapper is.
type PinholeMapper struct {
	inner mangle.Mapper
	exp   ExpectationCreator
	log   *slog.Logger

	created, failed, refused atomic.Uint64

	mu     sync.Mutex
	logged map[[2]netip.AddrPort]struct{} // control connections whose failure was logged
	tokens float64                        // log lines the rate limit allows now
	last   time.Time                      // when tokens was last refilled
	now    func() time.Time
}

var _ mangle.Mapper = (*PinholeMapper)(nil)

// Limits of the failure log.
const (
	pinholeLogFlows = 4096 // control connections remembered as logged
	pinholeLogBurst = 10   // log lines at once
	pinholeLogRate  = 1.0  // log lines per second after that
)

// NewPinholeMapper wraps inner so that data channels get firewall
// pinholes created by exp (an *Expecter in the daemon).
func NewPinholeMapper(inner mangle.Mapper, exp ExpectationCreator, log *slog.Logger) *PinholeMapper {
	return &PinholeMapper{
		inner:  inner,
		exp:    exp,
		log:    log,
		logged: make(map[[2]netip.AddrPort]struct{}),
		tokens: pinholeLogBurst,
		now:    time.Now,
	}
}

// LengthChanged (mangle.LengthWatcher) makes the control connection's
// window tracking liberal as soon as the engine first changes a line's
// length, so that the rewrites before its first data channel (ALGS, EPSV
// ALL, EPSV 1 answered by the ALG) do not make conntrack mark its packets
// INVALID either; MapData repeats it before each expectation (idempotent).
func (m *PinholeMapper) LengthChanged(client, server netip.AddrPort) {
	if err := m.exp.Liberal(client, server); err != nil {
		m.failed.Add(1)
		m.logFailure(mangle.DataRequest{Client: client, Server: server}, err)
	}
}

// CanMapActive64 (mangle.ActiveChecker) is the inner Mapper's answer, or
// true when it gives none.
func (m *PinholeMapper) CanMapActive64(s mangle.Session) bool {
	if c, ok := m.inner.(mangle.ActiveChecker); ok {
		return c.CanMapActive64(s)
	}
	return true
}

// Classify is the inner Mapper's.
func (m *PinholeMapper) Classify(client, server netip.AddrPort) (mangle.Session, bool) {
	return m.inner.Classify(client, server)
}

// MapData asks the inner Mapper for the endpoint, then creates the
// expectation of the data connection on the engine's leg.
func (m *PinholeMapper) MapData(req mangle.DataRequest) (netip.AddrPort, error) {
	ep, err := m.inner.MapData(req)
	if err != nil {
		return ep, err
	}
	e, ok := pinholeFor(req, ep)
	if !ok {
		m.refused.Add(1)
		return ep, nil
	}
	// Liberal window tracking first: the rewrite this request is for
	// may shorten a line, which the firewall would otherwise punish
	// (Expecter.Liberal).
	lerr := m.exp.Liberal(e.Client, e.Server)
	cerr := m.exp.Create(e)
	if cerr == nil {
		m.created.Add(1)
	}
	// RFC 1639 (LPSV/228, LPRT): the kernel's FTP helper on the other
	// leg does not parse them, so that leg's expectation is made here too.
	if o, ok := otherLegPinhole(req, ep); req.Long && ok {
		if err := m.exp.Create(o); err != nil {
			cerr = errors.Join(cerr, err)
		} else {
			m.created.Add(1)
		}
	}
	if err := errors.Join(lerr, cerr); err != nil {
		m.failed.Add(1)
		m.logFailure(req, err)
	}
	return ep, nil
}

// pinholeFor returns the expectation of the data connection req asks
// for, on the leg of req.Client and req.Server (the control connection as
// the engine sees it), given the inner Mapper's answer ep. One of
// req.Target and ep is in that leg's family: its port is where the data
// connection goes on this leg. The addresses are always the control
// connection's own ends: the client connects to the server in passive
// modes, the server to the client in active modes. ok is false if the
// request does not fit (no control connection, no endpoint of this leg's
// family, or a target that is not an end of the control connection).
func pinholeFor(req mangle.DataRequest, ep netip.AddrPort) (e Expectation, ok bool) {
	client, server := req.Client, req.Server
	if !client.IsValid() || !server.IsValid() {
		return e, false
	}
	is4 := client.Addr().Unmap().Is4()
	if server.Addr().Unmap().Is4() != is4 {
		return e, false
	}
	var port uint16
	var named netip.Addr // the address the message named, in this leg's family
	switch {
	case req.Target.IsValid() && req.Target.Addr().Unmap().Is4() == is4:
		port, named = req.Target.Port(), req.Target.Addr().Unmap()
	case ep.IsValid() && ep.Addr().Unmap().Is4() == is4:
		port = ep.Port()
	default:
		return e, false
	}
	if port == 0 {
		return e, false
	}
	e = Expectation{Client: client, Server: server}
	switch req.Mode {
	case mangle.Passive46, mangle.Passive64:
		e.From, e.To = client.Addr(), netip.AddrPortFrom(server.Addr(), port)
	case mangle.Active46, mangle.Active64:
		e.From, e.To = server.Addr(), netip.AddrPortFrom(client.Addr(), port)
	default:
		return e, false
	}
	// In active modes the target is the client itself; in passive 64 a
	// 227 may name another address, but the data connection still goes
	// to the server (docs/PROTOCOL.md P46-6, P64-5), so only active modes
	// are checked.
	if named.IsValid() && (req.Mode == mangle.Active46 || req.Mode == mangle.Active64) && named != client.Addr().Unmap() {
		return e, false
	}
	return e, true
}

// otherLegPinhole returns the expectation of the data connection req asks
// for on the other leg of the translator: the control connection and the
// data connection in the other family's addresses (req.Session's), with
// the control connection's ports, which a stateless translator (Tayga)
// keeps. The other leg's conntrack entry has the kernel's FTP helper
// attached (rules/README.md "Pinholes"), so the kernel accepts an
// expectation for it. ok is false when the session lacks an address of
// that leg.
func otherLegPinhole(req mangle.DataRequest, ep netip.AddrPort) (e Expectation, ok bool) {
	if !req.Client.IsValid() || !req.Server.IsValid() {
		return e, false
	}
	s := req.Session
	client, server := s.Client6, s.Server6
	if !req.Client.Addr().Unmap().Is4() {
		client, server = s.Client4, s.Server4
	}
	if !client.IsValid() || !server.IsValid() {
		return e, false
	}
	other := req
	other.Client = netip.AddrPortFrom(client, req.Client.Port())
	other.Server = netip.AddrPortFrom(server, req.Server.Port())
	return pinholeFor(other, ep)
}

// logFailure logs a failed expectation once per control connection, at
// most pinholeLogBurst lines at once and pinholeLogRate per second.
func (m *PinholeMapper) logFailure(req mangle.DataRequest, err error) {
	if req.Mode == 0 {
		m.logOnce(req, "pinhole: conntrack of a control connection not made liberal; a firewall dropping ct state invalid may stall it", err)
		return
	}
	m.logOnce(req, "pinhole: no expectation for a data connection; a stateful firewall may drop it", err)
}

// logOnce logs msg once per control connection, within the rate limit.
func (m *PinholeMapper) logOnce(req mangle.DataRequest, msg string, err error) {
	key := [2]netip.AddrPort{req.Client, req.Server}
	m.mu.Lock()
	if _, done := m.logged[key]; done {
		m.mu.Unlock()
		return
	}
	now := m.now()
	m.tokens += now.Sub(m.last).Seconds() * pinholeLogRate
	m.tokens = min(m.tokens, pinholeLogBurst)
	m.last = now
	if m.tokens < 1 {
		m.mu.Unlock()
		return
	}
	m.tokens--
	if len(m.logged) >= pinholeLogFlows {
		clear(m.logged)
	}
	m.logged[key] = struct{}{}
	m.mu.Unlock()
	m.log.Warn(msg,
		"mode", req.Mode, "client", req.Client, "server", req.Server, "target", req.Target,
		"failed", m.failed.Load(), "err", err)
}

// PinholeStats are the PinholeMapper's counters.
type PinholeStats struct {
	Created uint64 `json:"created"` // expectations created
	Failed  uint64 `json:"failed"`  // requests the kernel refused (expectation or liberal tracking)
	Refused uint64 `json:"refused"` // requests that named no end of their control connection
}

// Stats returns the counters.
func (m *PinholeMapper) Stats() PinholeStats {
	return PinholeStats{Created: m.created.Load(), Failed: m.failed.Load(), Refused: m.refused.Load()}
}
