package rules

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Keeper keeps the daemon's ruleset installed while the daemon runs. An
// operator's "nft flush ruleset", or a "systemctl reload nftables" whose
// /etc/nftables.conf begins with one (Debian's does), removes every table,
// the daemon's included, and the ALG would be silently off. Run watches the
// ruleset (the nftables netlink monitor, NFNLGRP_NFTABLES) and loads the
// ruleset again as soon as the daemon's table is gone or incomplete.
type Keeper struct {
	k         keeperKernel
	table     string
	poll      time.Duration // check this often even without an event
	retry     time.Duration // after a failed restore, try again this soon
	installed atomic.Bool
	restores  atomic.Uint64
	close     func() error // may be nil
	// restored, if set, runs after each restore, before Run reports it:
	// state the daemon keeps in the table's sets goes back in.
	restored func() error
}

// OnRestore sets a function that runs after each restore of the ruleset,
// to put back what the daemon keeps in the table's sets (the peer filter's
// admissions); its error is reported as Run reports others. Call it before
// Run.
func (k *Keeper) OnRestore(f func() error) { k.restored = f }

// Close releases what NewKeeper holds. The rules stay: Remove removes them.
func (k *Keeper) Close() error {
	if k.close == nil {
		return nil
	}
	err := k.close()
	k.close = nil
	return err
}

// keeperKernel is what a Keeper needs of nftables; the Linux one is
// nftKernel, tests use a fake.
type keeperKernel interface {
	install() error
	remove() error
	// present reports whether the table is there with every chain and
	// rule of the plan.
	present() (bool, error)
	// watch sends on the channel after every change of the ruleset
	// (coalesced), and closes it when it can no longer watch.
	watch(ctx context.Context) (<-chan struct{}, error)
}

// ErrNotInstalled is returned by Keeper.SwitchQueues when the table is not
// in place with every chain and rule of the plan.
var ErrNotInstalled = errors.New("the table is not installed with the same chains and rules")

// KeeperEvent is what Run reports: a restored ruleset, or an error it
// will retry.
type KeeperEvent struct {
	Restored bool  // the table was gone or incomplete and is back
	Err      error // checking, watching or restoring failed
}

// Install loads the ruleset, as Install does.
func (k *Keeper) Install() error {
	if err := k.k.install(); err != nil {
		return err
	}
	k.installed.Store(true)
	return nil
}

// Remove deletes the table, as Remove does. Call it after Run returned, or
// Run would put the table back.
func (k *Keeper) Remove() error {
	k.installed.Store(false)
	return k.k.remove()
}

// Table is the name of the daemon's table.
func (k *Keeper) Table() string { return k.table }

// Installed reports whether the ruleset was in place at the last check.
func (k *Keeper) Installed() bool { return k.installed.Load() }

// Restores counts the times Run found the ruleset gone or incomplete and
// loaded it again.
func (k *Keeper) Restores() uint64 { return k.restores.Load() }

// Run watches the ruleset until ctx is done, restores it whenever it is gone
// or incomplete, and tells report (which may be nil) what it did. Call
// Install first.
func (k *Keeper) Run(ctx context.Context, report func(KeeperEvent)) {
	if report == nil {
		report = func(KeeperEvent) {}
	}
	events, err := k.k.watch(ctx)
	if err != nil {
		report(KeeperEvent{Err: fmt.Errorf("watch the ruleset (checking every %v instead): %w", k.poll, err)})
	}
	t := time.NewTimer(k.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil
				if ctx.Err() != nil {
					return
				}
				report(KeeperEvent{Err: fmt.Errorf("watch the ruleset: monitor closed (checking every %v until it is back)", k.poll)})
			}
		case <-t.C:
			if events == nil {
				if events, err = k.k.watch(ctx); err != nil {
					events = nil
				}
			}
		}
		next := k.poll
		if !k.check(report) {
			next = k.retry
		}
		t.Reset(next) // no stale tick can follow (Go 1.23 timers)
	}
}

// check restores the ruleset if it is not in place; false means it is
// still not in place.
func (k *Keeper) check(report func(KeeperEvent)) bool {
	ok, err := k.k.present()
	if err != nil {
		report(KeeperEvent{Err: fmt.Errorf("check the ruleset: %w", err)})
		return false
	}
	if ok {
		k.installed.Store(true)
		return true
	}
	k.installed.Store(false)
	if err := k.k.install(); err != nil {
		report(KeeperEvent{Err: fmt.Errorf("restore the ruleset: %w", err)})
		return false
	}
	k.installed.Store(true)
	k.restores.Add(1)
	if k.restored != nil {
		if err := k.restored(); err != nil {
			report(KeeperEvent{Err: fmt.Errorf("restore the daemon's set elements: %w", err)})
		}
	}
	report(KeeperEvent{Restored: true})
	return true
}
