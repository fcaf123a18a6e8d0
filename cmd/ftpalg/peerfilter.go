package main

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ftpalg/ftpalg/rules"
)

// parsePortRange parses "LO-HI" (1 <= LO <= HI <= 65535), the Jool ALG's
// reserved port range of 'ftpalg run --jool-ports' and
// 'ftpalg rules --jool-ports'.
func parsePortRange(s string) ([2]uint16, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(lo, 10, 16)
	b, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || a == 0 || a > b {
		return [2]uint16{}, errors.New("want LO-HI, for example 61000-61999")
	}
	return [2]uint16{uint16(a), uint16(b)}, nil
}

// peerGuard is the Jool mapper's jool.PeerGuard: the peer filter of
// the daemon's table (rules.PeerGuard), opened once the rules are
// installed. Until it is open every Admit tries to open it, so a mapping
// is refused (fail closed) while the filter is missing.
type peerGuard struct {
	cfg *rules.Config

	mu sync.Mutex
	g  *rules.PeerGuard
}

func (p *peerGuard) open() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.openLocked()
}

func (p *peerGuard) openLocked() error {
	if p.g != nil {
		return nil
	}
	g, err := rules.OpenPeerGuard(p.cfg)
	if err != nil {
		return err
	}
	p.g = g
	return nil
}

func (p *peerGuard) Admit(peer netip.Addr, mapped netip.AddrPort, ttl time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.openLocked(); err != nil {
		return err
	}
	return p.g.Admit(peer, mapped, ttl)
}

func (p *peerGuard) Release(mapped ...netip.AddrPort) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.openLocked(); err != nil {
		return err
	}
	return p.g.Release(mapped...)
}

// restore puts the guarded mappings back after the Keeper reinstalled the
// table (nothing to do before the guard is open).
func (p *peerGuard) restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.g == nil {
		return nil
	}
	return p.g.Restore()
}

// peerFilter is the port range of the peer filter: the Jool mapper's
// reserved range (zero without one, and for Tayga).
func (c *runConfig) peerFilter() [2]uint16 {
	if c.JoolInstance == "" {
		return [2]uint16{}
	}
	return c.JoolPorts
}
