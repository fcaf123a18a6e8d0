//go:build !linux

package rules

import (
	"errors"
	"fmt"
)

// Install needs Linux nftables.
func Install(cfg *Config) error {
	if _, err := newPlan(cfg); err != nil {
		return err
	}
	return fmt.Errorf("install rules: %w", errors.ErrUnsupported)
}

// Remove needs Linux nftables.
func Remove(cfg *Config) error {
	if _, err := tableOf(cfg); err != nil {
		return err
	}
	return fmt.Errorf("remove rules: %w", errors.ErrUnsupported)
}

// NativeQueue needs Linux nftables.
func NativeQueue() (bool, error) {
	return false, errors.ErrUnsupported
}

// Shifted needs Linux nftables.
type Shifted struct{}

// OpenShifted needs Linux nftables.
func OpenShifted(cfg *Config) (*Shifted, error) { return nil, errors.ErrUnsupported }

// Add needs Linux nftables.
func (s *Shifted) Add(c Conn) error { return nil }

// Delete needs Linux nftables.
func (s *Shifted) Delete(c Conn) error { return nil }

// Close needs Linux nftables.
func (s *Shifted) Close() error { return nil }

// NewKeeper needs Linux nftables.
func NewKeeper(cfg *Config) (*Keeper, error) {
	if _, err := newPlan(cfg); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("keep rules: %w", errors.ErrUnsupported)
}

// SwitchQueues needs Linux nftables.
func (k *Keeper) SwitchQueues() error { return fmt.Errorf("switch queues: %w", errors.ErrUnsupported) }
