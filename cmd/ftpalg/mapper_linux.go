package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ftpalg/ftpalg/conntrackx"
	"github.com/ftpalg/ftpalg/conntrackx/jool"
	"github.com/ftpalg/ftpalg/mangle/tayga"
	"golang.org/x/sys/unix"
)

// loadMapper builds the Mapper of the configured translator.
func loadMapper(cfg *runConfig, log *slog.Logger) (*daemonMapper, error) {
	if cfg.JoolInstance != "" {
		return loadJoolMapper(cfg, log)
	}
	l, closeRes, err := loadTayga(cfg.TaygaConf, log)
	if err != nil {
		return nil, err
	}
	// The engines keep the swap: SIGHUP puts a mapper from the re-read
	// configuration in it, and flows under way keep their sessions.
	swap := newSwapMapper(l.Mapper)
	dm := &daemonMapper{Mapper: swap, scope: taygaScope(l.Config)}
	var mu sync.Mutex // closeRes and conf, between reload and close
	conf := l.Config
	dm.reload = func(c *runConfig) (string, error) {
		l, newClose, err := loadTayga(c.TaygaConf, log)
		if err != nil {
			return "", err
		}
		swap.swap(l.Mapper)
		mu.Lock()
		oldClose, oldConf := closeRes, conf
		closeRes, conf = newClose, l.Config
		mu.Unlock()
		if oldClose != nil {
			if err := oldClose(); err != nil {
				log.Warn("close the old conntrack resolver", "err", err)
			}
		}
		msg := taygaChanges(oldConf, l.Config)
		if !slices.Equal(taygaScope(oldConf), taygaScope(l.Config)) {
			// The Keeper restores the ruleset it was made with.
			msg += "; the translator's addresses changed: the rules' scope (set translated) follows at the next restart"
		}
		return msg, nil
	}
	closeTayga := func() error {
		mu.Lock()
		defer mu.Unlock()
		if closeRes != nil {
			return closeRes()
		}
		return nil
	}
	dm.close = closeTayga
	if !cfg.NoPinholes {
		// Firewall pinholes: the conntrack expectations of data
		// connections on the rewritten leg (rules/README.md, Pinholes).
		x, err := conntrackx.DialExpecter(&conntrackx.ExpecterConfig{Timeout: time.Minute})
		if err != nil {
			closeTayga()
			return nil, err
		}
		pm := conntrackx.NewPinholeMapper(swap, x, log)
		dm.Mapper = pm
		dm.pinholes = func() pinholeStats {
			s := pm.Stats()
			return pinholeStats{Created: s.Created, Failed: s.Failed, Refused: s.Refused}
		}
		dm.close = func() error {
			return errors.Join(closeTayga(), x.Close())
		}
	}
	return dm, nil
}

// loadTayga reads Tayga's configuration (tayga.conf, its map-file and
// dynamic.map) and, for a dynamic pool, dials the conntrack resolver that
// closeRes closes.
func loadTayga(path string, log *slog.Logger) (l *tayga.Loaded, closeRes func() error, err error) {
	// Dynamic-pool hosts: conntrack in this namespace tells the binding
	// of a new control connection (both legs of a Tayga flow are tracked
	// here, ports kept); the mapper's prediction is tried first.
	l, err = tayga.Load(path, func(tc *tayga.Config, m *tayga.Mapper) (tayga.DynamicResolver, error) {
		ct, err := conntrackx.DialTaygaConntrack(&conntrackx.TaygaConntrackConfig{
			Prefix: tc.Prefix,
			Pool:   tc.DynamicPool,
			Guess:  m.PredictDynamic,
		})
		if err != nil {
			return nil, err
		}
		closeRes = ct.Close
		return ct, nil
	})
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			err = fmt.Errorf("--tayga-conf: %w", err)
		}
		return nil, nil, err
	}
	if l.Warn != nil {
		// Bindings Tayga saved when it last stopped.
		log.Warn("tayga dynamic map", "err", l.Warn)
	}
	return l, closeRes, nil
}

var _ jool.PeerGuard = (*peerGuard)(nil)

// loadJoolMapper connects to the Jool instance and removes the static BIB
// entries a killed daemon may have left in the reserved range.
//
// Not tested on the development machines (no Jool module there): only in
// the project's QEMU guest.
func loadJoolMapper(cfg *runConfig, log *slog.Logger) (*daemonMapper, error) {
	j, err := jool.Dial(&jool.Config{Instance: cfg.JoolInstance})
	if err != nil {
		return nil, fmt.Errorf("--jool-instance %s: %w", cfg.JoolInstance, err)
	}
	ledger, err := joolLedger(cfg)
	if err != nil {
		j.Close()
		return nil, err
	}
	mc := &jool.MapperConfig{Tables: j, ReservedPorts: cfg.JoolPorts, IdleTimeout: cfg.JoolIdle, Ledger: ledger}
	var guard *peerGuard
	var origin *originMarker
	if pf := cfg.peerFilter(); pf != [2]uint16{} {
		guard = &peerGuard{cfg: cfg.rules(nil)}
		mc.Guard = guard
		if cfg.JoolOriginMarks != [2]uint32{} {
			// 46 active data connections from the control connection's
			// pool4 address (README.md, Jool).
			origin = &originMarker{cfg: cfg.rules(nil)}
			mc.Origin, mc.OriginMarks = origin, cfg.JoolOriginMarks
		}
	}
	m, err := jool.NewMapper(mc)
	if err != nil {
		j.Close()
		return nil, fmt.Errorf("--jool-instance %s: %w", cfg.JoolInstance, err)
	}
	n, err := m.Cleanup()
	if n > 0 {
		log.Info("jool: removed the static BIB entries an earlier run of this instance left", "count", n, "record", ledger.Path)
	}
	var inUse *jool.ReservedInUseError
	if errors.As(err, &inUse) {
		// An operator's entries in the range: refuse, touch nothing.
		m.Close()
		j.Close()
		return nil, fmt.Errorf("--jool-ports %d-%d: %w", cfg.JoolPorts[0], cfg.JoolPorts[1], inUse)
	}
	if err != nil {
		log.Warn("jool: remove stale static BIB entries", "err", err)
	}
	if n, err := m.CleanupOrigins(); err != nil {
		log.Warn("jool: remove the pool4 entries an earlier run left under --jool-origin-marks", "removed", n, "err", err)
	} else if n > 0 {
		log.Info("jool: removed the pool4 entries an earlier run left under --jool-origin-marks", "count", n)
	}
	if cfg.JoolPorts == [2]uint16{} {
		log.Warn("jool: no --jool-ports: 46 passive and 64 active data channels will not be mapped")
	}
	scope, err := joolScope(j)
	if err != nil {
		m.Close()
		j.Close()
		return nil, fmt.Errorf("--jool-instance %s: %w", cfg.JoolInstance, err)
	}
	return &daemonMapper{
		scope:  scope,
		Mapper: m,
		expire: m.Expire,
		reload: func(*runConfig) (string, error) {
			p, err := m.ReloadPool4()
			if err != nil {
				return "", fmt.Errorf("jool pool4: %w", err)
			}
			return fmt.Sprintf("jool pool4 re-read: %d entries", len(p)), nil
		},
		close: func() error {
			return errors.Join(m.Close(), j.Close())
		},
		guard:  guard,
		origin: origin,
	}, nil
}

// joolPools is what joolScope needs of a Jool instance.
type joolPools interface {
	Pool4List(proto uint8) ([]jool.Pool4Entry, error)
	Pool6() (netip.Prefix, bool, error)
}

// joolScope is the set of addresses a Jool translates from or to: its
// pool4 addresses (TCP) and its pool6.
func joolScope(j joolPools) ([]netip.Prefix, error) {
	pool4, err := j.Pool4List(6) // TCP
	if err != nil {
		return nil, fmt.Errorf("read pool4: %w", err)
	}
	var s []netip.Prefix
	for _, e := range pool4 {
		s = append(s, e.Prefix)
	}
	if len(s) == 0 {
		return nil, errors.New("its pool4 has no TCP addresses (ftpalg needs an explicit pool4)")
	}
	pool6, ok, err := j.Pool6()
	switch {
	case err != nil:
		return nil, fmt.Errorf("read pool6: %w", err)
	case !ok:
		return nil, errors.New("the instance has no pool6")
	}
	return append(s, pool6), nil
}

// joolLedger is where the daemon records the static BIB entries it adds:
// /run/ftpalg/TABLE/jool-INSTANCE-NETNS.bib, one file per daemon (the table
// is per instance, the network namespace's inode tells apart daemons in
// different namespaces that share /run).
func joolLedger(cfg *runConfig) (*jool.FileLedger, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nil, fmt.Errorf("jool: this network namespace: %w", err)
	}
	name := fmt.Sprintf("jool-%s-%d.bib", cfg.JoolInstance, st.Ino)
	return &jool.FileLedger{Path: filepath.Join(cfg.RunDir, cfg.Table, name)}, nil
}
