package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/internal/nfq"
	"github.com/ftpalg/ftpalg/mangle"
	"github.com/ftpalg/ftpalg/rules"
)

func init() {
	commands = append(commands, command{
		name:    "run",
		summary: "run the ALG daemon (in the translator's network namespace)",
		run:     runMain,

		linuxOnly: true,
	})
}

func runMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseRunFlags(args, stdout)
	if err != nil {
		return usageExit("run", err, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP reloads; it never ends the daemon (by default it would).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// SIGUSR2 starts the binary anew, which takes over (upgrade.go).
	usr2 := make(chan os.Signal, 1)
	if upgradeSignal != nil {
		signal.Notify(usr2, upgradeSignal)
	}
	defer signal.Stop(usr2)
	cfg.Args, cfg.Reload, cfg.Upgrade = args, hup, usr2
	go func() {
		// A second signal during shutdown ends the process at once (the
		// rules may then stay: "ftpalg rules remove" removes them).
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, cfg, newLogger(stderr, cfg)); err != nil {
		fmt.Fprintf(stderr, "ftpalg run: %v\n", err)
		return 1
	}
	return 0
}

// daemonMapper is the translator's Mapper with what the daemon does
// around it: expire (periodically, may be nil) and close (at shutdown,
// may be nil).
type daemonMapper struct {
	mangle.Mapper
	expire func(now time.Time) error
	close  func() error
	scope  []netip.Prefix // the translator's addresses (rules.Config.Scope)
	// pinholes returns the pinhole decorator's counters; nil without it.
	pinholes func() pinholeStats
	// guard is the Jool mapper's peer filter (nil without one); run
	// opens it once the rules are in.
	guard *peerGuard
	// origin marks 46 active data connections for the Jool mapper (nil
	// without it).
	origin *originMarker
	// reload re-reads the translator's configuration (may be nil): it
	// returns what changed, or an error and keeps the old one.
	reload func(cfg *runConfig) (string, error)
}

// restoreSets puts the elements the daemon keeps in its table's sets back
// after the Keeper reinstalled it: the peer filter's and the origin's.
func (m *daemonMapper) restoreSets() error {
	var errs []error
	if m.guard != nil {
		errs = append(errs, m.guard.restore())
	}
	if m.origin != nil {
		errs = append(errs, m.origin.restore())
	}
	return errors.Join(errs...)
}

// errNotRoot is returned when the daemon lacks CAP_NET_ADMIN.
var errNotRoot = errors.New("needs root (CAP_NET_ADMIN) to queue packets and install rules")

// run is the daemon: it returns when ctx is done (nil after a clean
// shutdown) or when it cannot go on.
func run(ctx context.Context, cfg *runConfig, log *slog.Logger) (err error) {
	mapper, err := loadMapper(cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if mapper.close != nil {
			if cerr := mapper.close(); cerr != nil {
				log.Warn("close mapper", "err", cerr)
			}
		}
	}()
	if ok, known := hasNetAdmin(); known && !ok {
		return errNotRoot
	}
	// A takeover (--takeover) starts beside the running daemon of the
	// table: it binds the other queue range now, and claims the table
	// once the old one is gone (handover.go).
	var ho *handoverClient
	if cfg.Takeover {
		if ho, err = dialHandover(cfg.Table); err != nil {
			return err
		}
		if ho == nil {
			log.Info("takeover: no daemon of this table runs here: starting as usual", "table", cfg.Table)
		} else {
			defer ho.c.Close()
			if err := cfg.pickQueues(ho.first, ho.count); err != nil {
				return err
			}
		}
	}
	// One daemon per table and per queue in a namespace: a second one
	// stops here, before it touches the first one's rules or queues.
	queueNums := make([]uint16, cfg.Queues)
	for i := range queueNums {
		queueNums[i] = cfg.firstQueue() + uint16(i)
	}
	table := cfg.Table
	if ho != nil {
		table = ""
	}
	release, err := claimInstance(table, queueNums)
	if err != nil {
		return err
	}
	defer func() { release() }() // a takeover adds the table's claim

	// Queues first: a second daemon stops here, before it touches the
	// first one's rules.
	queues, err := openQueues(cfg)
	closeQueues := func() {
		for _, q := range queues {
			if cerr := q.Close(); cerr != nil {
				log.Warn("close queue", "err", cerr)
			}
		}
	}
	defer closeQueues() // on early returns; Close is idempotent
	if err != nil {
		return err
	}

	// The state of the connections an earlier daemon shifted: the engines
	// resume them, the rules keep them fail-closed.
	rc := cfg.rules(mapper.scope)
	var jn *journal
	if cfg.StateDir != "" {
		var conns []rules.Conn
		dir, err := stateDir(cfg.StateDir, cfg.RunDir)
		if err != nil {
			return err
		}
		jn, conns, err = openJournal(dir, journalMaxAge, log)
		if err != nil {
			return err
		}
		defer jn.Close()
		rc.Shifted = conns
		if len(conns) > 0 {
			log.Info("resuming shifted control connections of an earlier daemon", "count", len(conns), "state_dir", dir)
		}
	}
	// The engines get the translator's Mapper itself (not daemonMapper,
	// which would hide its optional LengthWatcher), wrapped in the
	// recorder of data channels for 'ftpalg sessions'.
	rec := newDataRecorder(mapper.Mapper, mapper.pinholes != nil)
	handlers := make([]*engineHandler, len(queues))
	for i, q := range queues {
		mc := &mangle.Config{
			Mapper:      rec,
			Strict:      cfg.Strict,
			ServerPorts: cfg.Ports,
			MaxFlows:    cfg.MaxFlows,
		}
		if jn != nil {
			mc.State = jn
		}
		handlers[i] = newEngineHandler(q.Num(), mc, cfg.HoldTimeout, log)
	}

	started := time.Now()
	var loopsUp atomic.Bool // the queue loops answer Flows
	var keeper *rules.Keeper
	if !cfg.NoRules {
		if jn != nil {
			rc.ShiftedNow = jn.conns
		}
		rc.EstablishedNow = func() []rules.Conn { return liveConns(handlers, &loopsUp) }
		if keeper, err = rules.NewKeeper(rc); err != nil {
			return err
		}
		if mapper.guard != nil || mapper.origin != nil {
			keeper.OnRestore(mapper.restoreSets)
		}
		defer keeper.Close()
	}
	// The takeover: the rules switch to this daemon's queues, where the
	// packets wait while the old daemon verdicts what it has queued.
	switched := false
	if ho != nil {
		switched = takeOver(cfg, log, ho, keeper, jn, &release)
	}
	getReport := func() statusReport { return report(cfg, started, queues, handlers, keeper, mapper.pinholes) }
	ready := func() error {
		if keeper != nil && !keeper.Installed() {
			return errors.New("rules not installed")
		}
		return nil
	}
	getSessions := func() sessionsReport { return sessions(cfg.Leg, rec, handlers, time.Now()) }
	stopServers, err := serveReports(cfg, log, getReport, getSessions, ready)
	if err != nil {
		return err
	}
	defer stopServers()

	// Rules last: nothing can fail after them but the loops themselves.
	// Install replaces a table an earlier daemon left, atomically, with
	// its shifted connections in the new table's set.
	keep := false
	if keeper != nil {
		if !switched {
			if err := keeper.Install(); err != nil {
				return err
			}
		}
		if jn != nil {
			if jn.set, err = rules.OpenShifted(rc); err != nil {
				return err
			}
			defer jn.set.Close()
		}
		// The queues close first (below, after the loops end): between
		// that and this, queued packets pass unchanged with the bypass
		// flag (--fail-open) or are dropped.
		defer func() {
			if keep {
				shifted := 0
				if jn != nil {
					shifted = jn.open()
				}
				log.Info("rules kept for the next daemon: shifted connections wait for it (ftpalg rules remove removes them)",
					"shifted", shifted)
				return
			}
			// The mappings go before the peer filter that guards them.
			if mapper.close != nil {
				if cerr := mapper.close(); cerr != nil {
					log.Warn("close mapper", "err", cerr)
				}
				mapper.close = nil
			}
			if rerr := keeper.Remove(); rerr != nil {
				log.Error("remove rules", "err", rerr)
				if err == nil {
					err = rerr
				}
			}
		}()
	}
	if jn != nil && cfg.SyncPeer != "" {
		ss, err := startStateSync(jn, cfg.SyncPeer, cfg.SyncListen, cfg.SyncKey, log)
		if err != nil {
			return err
		}
		defer ss.Close()
		log.Info("state sync on", "peer", cfg.SyncPeer, "listen", cfg.SyncListen, "key", cfg.SyncKey != "")
	}
	if mapper.guard != nil {
		if err := mapper.guard.open(); err != nil {
			if !cfg.NoRules {
				return err
			}
			// The operator installs the rules: until the peer filter is
			// in, the mapper refuses mappings (fail closed).
			log.Warn("jool: no peer filter yet: 46 passive and 64 active data channels are refused until 'ftpalg rules install --translator jool --jool-ports ...' is done", "err", err)
		}
	}
	log.Info("ftpalg running",
		"version", version, "translator", cfg.translator(), "conf", cfg.TaygaConf+cfg.JoolInstance,
		"leg", cfg.Leg, "ports", cfg.Ports, "queue_nums", queueRange(cfg), "rules", !cfg.NoRules, "table", cfg.Table,
		"fail_open", cfg.FailOpen, "status_socket", cfg.StatusSocket, "metrics_addr", cfg.MetricsAddr)

	// A successor (run --takeover) may ask this daemon to finish: the
	// loops then end once the packets queued before the rules switched
	// have been read, and the rules stay, the successor's now.
	var handingOver atomic.Bool
	var successor chan *net.UnixConn
	loopCtx, cancelLoops := context.WithCancel(ctx)
	defer cancelLoops()
	if keeper != nil {
		if hl, err := listenHandover(cfg.Table, cfg.firstQueue(), cfg.Queues); err != nil {
			log.Warn("no handover socket: 'ftpalg run --takeover' cannot take over from this daemon", "err", err)
		} else {
			defer hl.Close()
			successor = make(chan *net.UnixConn, 1)
			go func() {
				select {
				case c := <-hl.requests:
					hl.Close()
					handingOver.Store(true)
					log.Info("handing over to a new daemon: finishing the packets queued here")
					waitQuiet(queues, handoverQuiet, handoverTimeout/2)
					successor <- c
					cancelLoops()
				case <-loopCtx.Done():
				}
			}()
		}
	}
	// Keep the rules when the next daemon must find the shifted
	// connections waiting: then the packets the engines hold get no
	// verdict (the kernel drops them as the queues close, TCP resends them
	// to the next daemon) rather than going out with a line half-rewritten.
	keepRules := func() bool {
		return handingOver.Load() || !cfg.NoRules && (cfg.KeepRules == "yes" || cfg.KeepRules == "auto" && jn != nil && jn.open() > 0)
	}
	for _, h := range handlers {
		h.dropHeld = keepRules
	}
	loopsUp.Store(true)
	loopErr := runLoops(loopCtx, log, queues, handlers, keeper, mapper.expire, func(ctx context.Context) {
		serviceLoop(ctx, cfg, mapper, handlers, log, &handingOver)
	})
	keep = keepRules()
	// The loops gave every held packet its verdict (unless dropHeld); the
	// kernel drops what is still queued when a queue closes: at a
	// handover, those are the packets this daemon held (a line's start
	// waiting for its end, which went to the new queues), resent by TCP.
	var left uint64
	if handingOver.Load() {
		for _, q := range queues {
			if ks, ok := q.KernelStats(); ok {
				left += uint64(ks.Waiting)
			}
		}
	}
	closeQueues()
	if handingOver.Load() {
		select {
		case c := <-successor:
			// The successor takes the table's claim, the status socket
			// and the metrics address next: let go of them first.
			stopServers()
			release()
			handoverDone(c, left)
			log.Info("handed over to the new daemon", "left_without_verdict", left)
		default:
		}
	}

	sum := report(cfg, started, queues, handlers, keeper, mapper.pinholes).total()
	log.Info("ftpalg stopped", "uptime", time.Since(started).Round(time.Millisecond).String(),
		"packets", sum.NFQ.Packets, "modified", sum.NFQ.Modified, "rewrites", sum.Engine.Rewrites,
		"flows", sum.Engine.Flows, "restored", sum.Engine.Restored, "restore_failed", sum.Engine.RestoreFailed,
		"desync", sum.Engine.Desync, "out_of_order", sum.Engine.OutOfOrder, "held", sum.Engine.Held,
		"held_timeout", sum.Engine.HeldTimeout,
		"map_failed", sum.Engine.MapFailed, "enobufs", sum.NFQ.ENOBUFS,
		"verdict_errors", sum.NFQ.VerdictErrors, "last_verdict_error", lastVerdictError(queues),
		"half_open_evicted", sum.Engine.HalfOpenEvicted, "flows_evicted", sum.Engine.FlowsEvicted,
		"flows_refused", sum.Engine.FlowsRefused)
	return loopErr
}

// handoverTimeout bounds a takeover: the old daemon's wait for the
// packets queued before the switch (half of it), and the new one's wait
// for the old one to be done; past it the new daemon goes on (logged).
const handoverTimeout = 5 * time.Second

// handoverQuiet is how long no packet must arrive in the old daemon's
// queues after the switch, with none left unread, before it stops reading
// them: the packets that matched the old rules reach the queues within
// microseconds of the switch. Meanwhile packets wait in the new queues.
const handoverQuiet = 20 * time.Millisecond

// takeOver is the new daemon's side of a handover (handover.go): it
// tells systemd to follow this process, switches the rules to its queues
// in place, lets the old daemon finish, claims the table (adding that to
// *release) and lists the journal again. switched is false when the rules
// could not be switched in place: the caller installs them.
func takeOver(cfg *runConfig, log *slog.Logger, ho *handoverClient, keeper *rules.Keeper, jn *journal, release *func()) (switched bool) {
	start := time.Now()
	// The old daemon may be the service's main process: systemd must
	// follow this one before it exits (the units' NotifyAccess=all).
	state := fmt.Sprintf("MAINPID=%d", os.Getpid())
	if _, ok := watchdogInterval(); ok {
		state += "\nWATCHDOG=1" // the old daemon pings no more
	}
	if _, err := sdNotify(state); err != nil {
		log.Warn("takeover: systemd notification", "err", err)
	}
	if err := keeper.SwitchQueues(); err != nil {
		log.Warn("takeover: the rules could not be switched in place; they are installed anew once the old daemon is gone (what it has queued then is dropped and resent by TCP)", "err", err)
	} else {
		switched = true
	}
	left, err := ho.finish(start.Add(handoverTimeout))
	if err != nil {
		log.Warn("takeover: the old daemon did not say it is done: going on", "err", err, "timeout", handoverTimeout.String())
	}
	// The old daemon lets go of the table as it exits.
	for {
		rt, err := claimInstance(cfg.Table, nil)
		if err == nil {
			prev := *release
			*release = func() { rt(); prev() }
			break
		}
		if !errors.Is(err, errInstance) || time.Since(start) > 2*handoverTimeout {
			log.Warn("takeover: the table is still claimed: going on", "err", err)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	resumed := 0
	if jn != nil {
		resumed = jn.rescan()
	}
	log.Info("took over from the old daemon", "pid", os.Getpid(), "old_queues", fmt.Sprintf("%d-%d", ho.first, int(ho.first)+int(ho.count)-1),
		"queues", queueRange(cfg), "switched_in_place", switched, "old_left_without_verdict", left,
		"shifted", resumed, "took", time.Since(start).Round(time.Millisecond).String())
	return switched
}

// waitQuiet returns once the queues received no packet for quiet and the
// kernel has none waiting that the loops did not read (those read and
// not verdicted are held by the engines), or after limit.
func waitQuiet(queues []*nfq.Queue, quiet, limit time.Duration) {
	end := time.Now().Add(limit)
	var last uint64
	since := time.Now()
	for first := true; time.Now().Before(end); first = false {
		var n uint64
		unread := false
		for _, q := range queues {
			st := q.Stats()
			n += st.Packets
			if ks, ok := q.KernelStats(); ok && uint64(ks.Waiting) > st.Packets-st.Verdicts {
				unread = true
			}
		}
		if first || n != last || unread {
			last, since = n, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// openQueues binds the configured queues. On an error it returns those
// already bound, for the caller to close.
func openQueues(cfg *runConfig) ([]*nfq.Queue, error) {
	queues := make([]*nfq.Queue, 0, cfg.Queues)
	for i := range cfg.Queues {
		// The queue's own fail-open (a full queue or socket accepts
		// packets unchanged) would let a shifted connection's packets
		// pass unshifted: with a state directory a full queue drops, and
		// TCP resends (docs/STATE.md).
		q, err := nfq.Open(&nfq.Config{Queue: cfg.firstQueue() + i, FailOpen: cfg.FailOpen && cfg.StateDir == ""})

		if err != nil {
			return queues, err
		}
		queues = append(queues, q)
	}
	return queues, nil
}

// serveReports starts the status socket (status and sessions) and the
// metrics listener that cfg asks for; stop closes them. ready tells
// /readyz whether the daemon translates.
func serveReports(cfg *runConfig, log *slog.Logger, get func() statusReport, sess func() sessionsReport, ready func() error) (stop func(), err error) {
	var closers []func() error
	var once sync.Once
	stop = func() {
		once.Do(func() {
			for _, c := range closers {
				c()
			}
		})
	}
	if cfg.StatusSocket != "" {
		// Only a window on the daemon: translating matters more. Daemons
		// in several namespaces of one host share /run, for one.
		// Its directory, which systemd's RuntimeDirectory= makes too.
		_ = os.MkdirAll(filepath.Dir(cfg.StatusSocket), 0o755)
		if status, err := listenStatus(cfg.StatusSocket, log); err != nil {
			log.Warn("no status socket: 'ftpalg status' cannot reach this daemon (see --status-socket)", "err", err)
		} else {
			closers = append(closers, status.Close)
			status.serve(get, sess)
		}
	}
	if cfg.MetricsAddr != "" {
		ms, err := listenMetrics(cfg.MetricsAddr, log, get, ready)
		if err != nil {
			stop()
			return nil, err
		}
		closers = append(closers, ms.Close)
	}
	return stop, nil
}

func queueRange(cfg *runConfig) string {
	if cfg.Queues == 1 {
		return strconv.Itoa(int(cfg.firstQueue()))
	}
	return fmt.Sprintf("%d-%d", cfg.firstQueue(), int(cfg.firstQueue())+int(cfg.Queues)-1)
}

// hasNetAdmin reads CAP_NET_ADMIN from the effective capabilities of this
// process; known is false where /proc does not tell.
func hasNetAdmin() (ok, known bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, false
	}
	return capEffHas(string(b), 12) // CAP_NET_ADMIN
}

// capEffHas reports whether the CapEff line of a /proc/PID/status text has
// capability bit cap.
func capEffHas(status string, cap uint) (ok, known bool) {
	for _, line := range strings.Split(status, "\n") {
		v, found := strings.CutPrefix(line, "CapEff:")
		if !found {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return false, false
		}
		return mask&(1<<cap) != 0, true
	}
	return false, false
}
