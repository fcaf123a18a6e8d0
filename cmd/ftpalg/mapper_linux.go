package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/ftpalg/ftpalg/conntrackx"
	"github.com/ftpalg/ftpalg/conntrackx/jool"
	"github.com/ftpalg/ftpalg/mangle/tayga"
)

// loadMapper builds the Mapper of the configured translator.
func loadMapper(cfg *runConfig, log *slog.Logger) (*daemonMapper, error) {
	if cfg.JoolInstance != "" {
		return loadJoolMapper(cfg, log)
	}
	// Dynamic-pool hosts: conntrack in this namespace tells the binding
	// of a new control connection (both legs of a Tayga flow are tracked
	// here, ports kept); the mapper's prediction is tried first.
	var closeRes func() error
	l, err := tayga.Load(cfg.TaygaConf, func(tc *tayga.Config, m *tayga.Mapper) (tayga.DynamicResolver, error) {
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
		return nil, err
	}
	if l.Warn != nil {
		// Bindings Tayga saved when it last stopped.
		log.Warn("tayga dynamic map", "err", l.Warn)
	}
	dm := &daemonMapper{Mapper: l.Mapper, close: closeRes}
	if !cfg.NoPinholes {
		// Firewall pinholes: the conntrack expectations of data
		// connections on the rewritten leg (rules/README.md, Pinholes).
		x, err := conntrackx.DialExpecter(&conntrackx.ExpecterConfig{Timeout: time.Minute})
		if err != nil {
			if closeRes != nil {
				closeRes()
			}
			return nil, err
		}
		dm.Mapper = conntrackx.NewPinholeMapper(l.Mapper, x, log)
		dm.close = func() error {
			var err error
			if closeRes != nil {
				err = closeRes()
			}
			return errors.Join(err, x.Close())
		}
	}
	return dm, nil
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
	mc := &jool.MapperConfig{Tables: j, ReservedPorts: cfg.JoolPorts, IdleTimeout: cfg.JoolIdle}
	var guard *peerGuard
	if pf := cfg.peerFilter(); pf != [2]uint16{} {
		guard = &peerGuard{cfg: cfg.rules()}
		mc.Guard = guard
	}
	m, err := jool.NewMapper(mc)
	if err != nil {
		j.Close()
		return nil, fmt.Errorf("--jool-instance %s: %w", cfg.JoolInstance, err)
	}
	if n, err := m.Cleanup(); err != nil {
		log.Warn("jool: remove stale static BIB entries", "err", err)
	} else if n > 0 {
		log.Info("jool: removed static BIB entries left by an earlier run", "count", n)
	}
	if cfg.JoolPorts == [2]uint16{} {
		log.Warn("jool: no --jool-ports: 46 passive and 64 active data channels will not be mapped")
	}
	return &daemonMapper{
		Mapper: m,
		expire: m.Expire,
		close: func() error {
			return errors.Join(m.Close(), j.Close())
		},
		guard: guard,
	}, nil
}
