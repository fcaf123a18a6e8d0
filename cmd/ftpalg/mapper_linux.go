package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
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
	l, closeRes, err := loadTayga(cfg.TaygaConf, log)
	if err != nil {
		return nil, err
	}
	// The engines keep the swap: SIGHUP puts a mapper from the re-read
	// configuration in it, and flows under way keep their sessions.
	swap := newSwapMapper(l.Mapper)
	dm := &daemonMapper{Mapper: swap}
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
		return taygaChanges(oldConf, l.Config), nil
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
		dm.Mapper = conntrackx.NewPinholeMapper(swap, x, log)
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
	m, err := jool.NewMapper(&jool.MapperConfig{Tables: j, ReservedPorts: cfg.JoolPorts})
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
	}, nil
}
