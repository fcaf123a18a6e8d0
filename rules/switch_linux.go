//go:build linux

package rules

import (
	"fmt"

	"github.com/google/nftables"
)

// SwitchQueues points the installed ruleset at the queues of the Keeper's
// configuration (Config.QueueNum, Config.Queues): the handover of a
// running daemon to its successor (docs/STATE.md). It replaces the rules of
// the regular chain that queues, and nothing else, in one transaction:
// packets matched before it go to the old queues, those after it to the
// new ones, none in between. Replacing the table instead would drop what
// the old daemon still has queued: when a base chain's hook is
// unregistered, the kernel drops every packet queued in the namespace, in
// every queue. The set of shifted connections and its elements stay.
//
// It fails, changing nothing, unless the table is there with every chain
// and rule of the plan (another daemon's table of the same shape): the
// caller then installs the ruleset as at a start.
func (k *Keeper) SwitchQueues() error {
	n, ok := k.k.(*nftKernel)
	if !ok {
		return fmt.Errorf("switch queues: %w", ErrNotInstalled)
	}
	if err := n.switchQueues(); err != nil {
		return err
	}
	k.installed.Store(true)
	return nil
}

func (n *nftKernel) switchQueues() error {
	ok, err := n.present()
	if err != nil {
		return fmt.Errorf("switch queues: %w", err)
	}
	if !ok {
		return fmt.Errorf("switch queues: %w", ErrNotInstalled)
	}
	conn, err := dial(&n.cfg)
	if err != nil {
		return fmt.Errorf("switch queues: %w", err)
	}
	native, err := nativeQueue(conn)
	if err != nil {
		return fmt.Errorf("switch queues: %w", err)
	}
	p := n.p
	fam := nftables.TableFamilyIPv4
	if p.family == familyIP6 {
		fam = nftables.TableFamilyIPv6
	}
	t := &nftables.Table{Family: fam, Name: p.table}
	divert := &nftables.Chain{Name: divertChain, Table: t}
	conn.FlushChain(divert)
	var shifted, established *nftables.Set
	if p.shifted() {
		if shifted, err = conn.GetSetByName(t, ShiftedSet); err != nil {
			return fmt.Errorf("switch queues: set %s: %w", ShiftedSet, err)
		}
	}
	if p.tracked() {
		if established, err = conn.GetSetByName(t, EstablishedSet); err != nil {
			return fmt.Errorf("switch queues: set %s: %w", EstablishedSet, err)
		}
	}
	p.addDivertRules(conn, t, divert, shifted, established, native)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("switch queues in table %s %s: %w", p.family, p.table, err)
	}
	return nil
}
