//go:build !linux

package rules

import (
	"errors"
	"net/netip"
	"time"
)

// PeerGuard needs Linux nftables.
type PeerGuard struct{}

// ErrNoPeerFilter is returned by OpenPeerGuard when the daemon's table has
// no peer filter.
var ErrNoPeerFilter = errors.New("no peer filter in the table (install the rules with the jool port range)")

// OpenPeerGuard needs Linux nftables.
func OpenPeerGuard(cfg *Config) (*PeerGuard, error) { return nil, errors.ErrUnsupported }

// Admit needs Linux nftables.
func (g *PeerGuard) Admit(peer netip.Addr, mapped netip.AddrPort, ttl time.Duration) error {
	return errors.ErrUnsupported
}

// Release needs Linux nftables.
func (g *PeerGuard) Release(mapped ...netip.AddrPort) error { return errors.ErrUnsupported }

// Restore needs Linux nftables.
func (g *PeerGuard) Restore() error { return errors.ErrUnsupported }
