//go:build !linux

package rules

import (
	"errors"
	"net/netip"
	"time"
)

// OriginMarker needs Linux nftables.
type OriginMarker struct{}

// ErrNoOrigin is returned by OpenOriginMarker when the daemon's table has
// no origin map.
var ErrNoOrigin = errors.New("no origin map in the table (install the rules with the jool port range)")

// OpenOriginMarker needs Linux nftables.
func OpenOriginMarker(cfg *Config) (*OriginMarker, error) { return nil, errors.ErrUnsupported }

// Mark needs Linux nftables.
func (o *OriginMarker) Mark(server, client netip.Addr, mark uint32, ttl time.Duration) error {
	return errors.ErrUnsupported
}

// Restore needs Linux nftables.
func (o *OriginMarker) Restore() error { return errors.ErrUnsupported }
