//go:build linux

package rules

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// NewKeeper returns a Keeper of the ruleset of cfg, in the namespace of
// cfg.NetNS, or else in the namespace of the calling thread: when that is
// not the process's, the Keeper holds it, so its goroutines work there
// whatever thread they run on. It installs nothing yet. Close releases the
// namespace.
func NewKeeper(cfg *Config) (*Keeper, error) {
	p, err := newPlan(cfg)
	if err != nil {
		return nil, err
	}
	c := *cfg
	var closeNS func() error
	if c.NetNS == 0 && !threadInProcessNetNS() {
		// Only a thread moved to another namespace (a test) needs the
		// fd: with it, netlink sockets are made by setns(2), which a
		// sandbox may forbid (systemd's RestrictNamespaces=yes), and the
		// daemon's threads all share the process's namespace.
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("keep rules: this thread's network namespace: %w", err)
		}
		c.NetNS = fd
		closeNS = func() error { return unix.Close(fd) }
	}
	return &Keeper{
		close: closeNS,
		k:     &nftKernel{p: p, cfg: c},
		table: p.table,
		poll:  5 * time.Second,
		retry: 200 * time.Millisecond,
	}, nil
}

// threadInProcessNetNS reports whether the calling thread and every other
// thread of the process are in the same network namespace (true when it
// cannot tell): then any goroutine finds it. Comparing with the thread
// group leader alone (/proc/self) is not enough: the leader can be the very
// thread a test moved, and the keeper's goroutines then ran on threads of
// the namespace the test left (its monitor heard nothing; its restores
// went to the wrong namespace).
func threadInProcessNetNS() bool {
	var self unix.Stat_t
	if unix.Stat("/proc/thread-self/ns/net", &self) != nil {
		return true
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return true
	}
	var others []unix.Stat_t
	for _, t := range tasks {
		var st unix.Stat_t
		if unix.Stat("/proc/self/task/"+t.Name()+"/ns/net", &st) == nil {
			others = append(others, st)
		}
	}
	return sameNetNS(self, others)
}

// sameNetNS reports whether every namespace of others is self's.
func sameNetNS(self unix.Stat_t, others []unix.Stat_t) bool {
	for _, o := range others {
		if o.Dev != self.Dev || o.Ino != self.Ino {
			return false
		}
	}
	return true
}

// nftKernel is the keeperKernel of a plan.
type nftKernel struct {
	p   *plan
	cfg Config
}

func (n *nftKernel) install() error {
	conn, err := dial(&n.cfg)
	if err != nil {
		return fmt.Errorf("install rules: %w", err)
	}
	if n.cfg.ShiftedNow != nil {
		n.p.preload = n.cfg.ShiftedNow()
	}
	if n.cfg.EstablishedNow != nil {
		n.p.live = n.cfg.EstablishedNow()
	}
	return n.p.install(conn)
}

func (n *nftKernel) remove() error { return Remove(&n.cfg) }

// present lists the chains of the plan's tables and counts their rules.
func (n *nftKernel) present() (bool, error) {
	conn, err := dial(&n.cfg)
	if err != nil {
		return false, err
	}
	want := n.p.ruleCounts()
	for f, chains := range want {
		fam := nftables.TableFamilyIPv4
		if f == familyIP6 {
			fam = nftables.TableFamilyIPv6
		}
		all, err := conn.ListChainsOfTableFamily(fam)
		if err != nil {
			return false, err
		}
		found := 0
		for _, c := range all {
			count, ok := chains[c.Name]
			if c.Table.Name != n.p.table || !ok {
				continue
			}
			found++
			rules, err := conn.GetRules(c.Table, c)
			if err != nil {
				return false, err
			}
			if len(rules) != count {
				return false, nil
			}
		}
		if found != len(chains) {
			return false, nil
		}
		if ok, err := n.scopeIntact(conn, f, fam); !ok || err != nil {
			return false, err
		}
	}
	return true, nil
}

// scopeIntact reports whether the set of the translator's addresses in
// family f holds exactly the plan's prefixes: a reload that put back a
// table with other addresses (the shipped file's examples, say) must be
// replaced.
func (n *nftKernel) scopeIntact(conn *nftables.Conn, f family, fam nftables.TableFamily) (bool, error) {
	scope := n.p.scopeOf(f)
	if len(scope) == 0 || (f != n.p.family && !n.p.helper) {
		return true, nil
	}
	set, err := conn.GetSetByName(&nftables.Table{Family: fam, Name: n.p.table}, scopeSet)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	elems, err := conn.GetSetElements(set)
	if err != nil {
		return false, err
	}
	want := map[string]bool{}
	for _, q := range scope {
		want[string(q.Addr().AsSlice())] = true
	}
	got := 0
	for _, e := range elems {
		if e.IntervalEnd {
			continue
		}
		if !want[string(e.Key)] {
			return false, nil
		}
		got++
	}
	return got == len(want), nil
}

// watch subscribes to the nftables netlink group and sends once per
// transaction (generation) of the ruleset.
func (n *nftKernel) watch(ctx context.Context) (<-chan struct{}, error) {
	conn, err := dial(&n.cfg)
	if err != nil {
		return nil, err
	}
	mon := nftables.NewMonitor(nftables.WithMonitorObject(nftables.MonitorObjectAny))
	gens, err := conn.AddGenerationalMonitor(mon)
	if err != nil {
		return nil, err
	}
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			mon.Close()
		case <-done:
		}
	}()
	go func() {
		defer close(out)
		defer close(done)
		for g := range gens {
			if g.GeneratedBy != nil && g.GeneratedBy.Error != nil {
				// The monitor stops after an error (an ENOBUFS
				// overrun, for one); the caller watches again.
				mon.Close()
				continue
			}
			select {
			case out <- struct{}{}:
			default: // a check is pending already
			}
		}
	}()
	return out, nil
}
