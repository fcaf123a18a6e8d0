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

// defaultOriginMarks are the marks of 'ftpalg run --jool-origin-marks'.
var defaultOriginMarks = [2]uint32{46000, 46063}

// parseMarkRange parses "LO-HI" (1 <= LO <= HI < 2^32) or "off" (zero), the
// marks of 'ftpalg run --jool-origin-marks'.
func parseMarkRange(s string) ([2]uint32, error) {
	if s == "off" {
		return [2]uint32{}, nil
	}
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(lo, 0, 32)
	b, err2 := strconv.ParseUint(hi, 0, 32)
	if !ok || err1 != nil || err2 != nil || a == 0 || a > b {
		return [2]uint32{}, errors.New("want LO-HI, for example 46000-46063, or off; mark 0 is Jool's default pool4")
	}
	return [2]uint32{uint32(a), uint32(b)}, nil
}

// originMarker is the Jool mapper's jool.OriginMarker: the origin map of
// the daemon's ip6 table (rules.OriginMarker), opened at its first use
// (the rules are in by then, or the mark fails and is reported).
type originMarker struct {
	cfg *rules.Config

	mu sync.Mutex
	o  *rules.OriginMarker
}

func (o *originMarker) Mark(server, client netip.Addr, mark uint32, ttl time.Duration) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.o == nil {
		m, err := rules.OpenOriginMarker(o.cfg)
		if err != nil {
			return err
		}
		o.o = m
	}
	return o.o.Mark(server, client, mark, ttl)
}

// restore puts the marks back after the Keeper reinstalled the table.
func (o *originMarker) restore() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.o == nil {
		return nil
	}
	return o.o.Restore()
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
