package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/internal/nfq"
	"github.com/ftpalg/ftpalg/rules"
)

// runLoops runs one loop per queue, the warning loop, service (systemd
// and SIGHUP), if keeper is not nil the loop that keeps the rules
// installed and, if expire is not nil, the mapper's expiry loop, until ctx
// is done or a queue's loop fails (the first to fail stops the others).
func runLoops(ctx context.Context, log *slog.Logger, queues []*nfq.Queue, handlers []*engineHandler, keeper *rules.Keeper, expire func(time.Time) error, service func(context.Context)) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		service(runCtx)
	}()
	errs := make([]error, len(queues))
	for i, q := range queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := q.Run(runCtx, handlers[i]); err != nil {
				errs[i] = err
				cancel()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		warnLoop(runCtx, log, queues, handlers, 10*time.Second)
	}()
	if keeper != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keepRules(runCtx, log, keeper)
		}()
	}
	if expire != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			expireLoop(runCtx, log, expire, 5*time.Second)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// keepRules puts the rules back whenever they are removed under the daemon
// (an "nft flush ruleset", a "systemctl reload nftables").
func keepRules(ctx context.Context, log *slog.Logger, k *rules.Keeper) {
	k.Run(ctx, func(e rules.KeeperEvent) {
		switch {
		case e.Restored:
			log.Warn("rules: the table was removed or changed under the daemon (nft flush ruleset? systemctl reload nftables?); restored",
				"table", k.Table(), "restores", k.Restores())
		case e.Err != nil:
			log.Error("rules", "table", k.Table(), "installed", k.Installed(), "err", e.Err)
		}
	})
}

// serviceLoop is the daemon's side of systemd (ready, watchdog, stopping)
// and of SIGHUP, until ctx is done. A daemon handing over (handingOver,
// may be nil) says nothing as it stops: its successor is the service's
// main process by then, and systemd would take the stop as the service's.
func serviceLoop(ctx context.Context, cfg *runConfig, mapper *daemonMapper, hs []*engineHandler, log *slog.Logger, handingOver *atomic.Bool) {
	notify := func(state string) {
		if _, err := sdNotify(state); err != nil {
			log.Warn("systemd notification", "state", state, "err", err)
		}
	}
	// The queues are open and the rules in: ready. A ping at once: a
	// daemon that took over from another must not leave systemd's
	// watchdog waiting for half an interval (the old one stopped pinging).
	interval, ok := watchdogInterval()
	if ok {
		notify("READY=1\nSTATUS=running\nWATCHDOG=1")
	} else {
		notify("READY=1\nSTATUS=running")
	}
	defer func() {
		if handingOver == nil || !handingOver.Load() {
			notify("STOPPING=1\nSTATUS=stopping")
		}
	}()
	var wd <-chan time.Time
	if ok {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		wd = t.C
	}
	r := &reloader{args: cfg.Args, cfg: cfg, mapper: mapper, handlers: hs, log: log, notify: notify}
	var upgrading <-chan error // the running upgrade's new daemon, until it exits
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-wd:
			if alive(hs, now.Add(-interval)) {
				notify("WATCHDOG=1")
			} else {
				log.Error("a queue loop has not ticked within the watchdog interval: no watchdog ping", "interval", interval.String())
			}
		case <-cfg.Upgrade:
			if upgrading != nil {
				log.Warn("SIGUSR2: an upgrade is under way already")
				continue
			}
			log.Info("SIGUSR2: starting a new daemon to take over")
			var err error
			if upgrading, err = startSuccessor(cfg.Args); err != nil {
				log.Error("upgrade: the new daemon did not start; this one goes on", "err", err)
			}
		case err := <-upgrading:
			// Had it taken over, this daemon would be gone.
			upgrading = nil
			log.Error("upgrade: the new daemon exited before taking over; this one goes on", "err", err)
		case <-cfg.Reload:
			log.Info("SIGHUP: reloading the configuration", "config", cfg.Config)
			if err := r.reload(); err != nil {
				log.Error("reload", "err", err)
			}
		}
	}
}

// alive reports whether every queue loop ticked since t.
func alive(hs []*engineHandler, t time.Time) bool {
	for _, h := range hs {
		if h.lastTick.Load() < t.UnixNano() {
			return false
		}
	}
	return true
}

// expireLoop lets the mapper remove data-channel mappings that are over.
func expireLoop(ctx context.Context, log *slog.Logger, expire func(time.Time) error, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := expire(now); err != nil {
				log.Warn("expire data-channel mappings", "err", err)
			}
		}
	}
}

// warnLoop logs, at most once per period, the trouble counters that grew:
// per-packet problems are never logged one by one.
func warnLoop(ctx context.Context, log *slog.Logger, queues []*nfq.Queue, hs []*engineHandler, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	var last map[string]uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := troubleCounters(queues, hs)
		for _, name := range troubleNames {
			if d := cur[name] - last[name]; last != nil && d > 0 {
				log.Warn(troubleText[name], "count", d, "total", cur[name], "period", period.String())
			}
		}
		last = cur
	}
}

var troubleNames = []string{
	"map_failed", "bad_syntax", "addr_mismatch", "desync", "held_overflow", "regions_full",
	"bad_checksum", "noop_refused", "unparsed_425", "split_lost", "telnet_relayed",
	"flows_evicted", "flows_refused", "enobufs", "verdict_errors", "write_errors", "truncated", "oversize",
	"queue_drops", "socket_drops",
}

var troubleText = map[string]string{
	"map_failed":     "data-channel mappings refused by the translator",
	"bad_syntax":     "commands or replies that did not parse (passed unchanged)",
	"addr_mismatch":  "227 replies naming an address other than the server's",
	"desync":         "replies that could not be matched to commands",
	"held_overflow":  "held segments released unchanged: too many held per flow",
	"regions_full":   "rewrites skipped: sequence history full",
	"bad_checksum":   "segments whose TCP checksum was wrong on arrival (passed unparsed)",
	"noop_refused":   "substituted NOOPs the server refused: client told 421, session ended",
	"unparsed_425":   "227/229 replies the client could not use and the ALG could not parse (425)",
	"split_lost":     "second parts of split segments the daemon could not send (TCP resends them)",
	"telnet_relayed": "Telnet negotiations the ALG could not remove or refuse",
	"flows_evicted":  "flows evicted from a full flow table",
	"flows_refused":  "packets of new flows passed unchanged: flow table full of sessions with state",
	"enobufs":        "netlink receive buffer overruns (packets lost to the queue)",
	"verdict_errors": "verdicts the kernel refused",
	"write_errors":   "verdict writes that failed",
	"truncated":      "queued packets cut by the read buffer",
	"oversize":       "rewritten packets too long for a verdict (sent unchanged)",
	"queue_drops":    "packets the kernel dropped or bypassed: queue full",
	"socket_drops":   "packets the kernel could not hand to the daemon",
}

func troubleCounters(queues []*nfq.Queue, hs []*engineHandler) map[string]uint64 {
	m := map[string]uint64{}
	for i, q := range queues {
		es, _ := hs[i].Stats()
		qs := q.Stats()
		m["map_failed"] += es.MapFailed
		m["bad_syntax"] += es.BadSyntax
		m["addr_mismatch"] += es.AddrMismatch
		m["desync"] += es.Desync
		m["held_overflow"] += es.HeldOverflow
		m["regions_full"] += es.RegionsFull
		m["bad_checksum"] += es.BadChecksum
		m["noop_refused"] += es.NoopRefused
		m["unparsed_425"] += es.Unparsed425
		m["split_lost"] += es.Split
		m["telnet_relayed"] += es.TelnetRelayed
		m["flows_evicted"] += es.FlowsEvicted
		m["flows_refused"] += es.FlowsRefused
		m["enobufs"] += qs.ENOBUFS
		m["verdict_errors"] += qs.VerdictErrors
		m["write_errors"] += qs.WriteErrors
		m["truncated"] += qs.Truncated
		m["oversize"] += qs.Oversize
		if ks, ok := q.KernelStats(); ok {
			m["queue_drops"] += uint64(ks.QueueDrops)
			m["socket_drops"] += uint64(ks.SocketDrops)
		}
	}
	return m
}

// lastVerdictError is the last verdict error of any queue ("" if none).
func lastVerdictError(queues []*nfq.Queue) string {
	for _, q := range queues {
		if err := q.LastVerdictError(); err != nil {
			return err.Error()
		}
	}
	return ""
}
