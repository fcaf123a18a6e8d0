package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
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

// runConfig is the daemon's configuration, from the flags of "ftpalg run".
type runConfig struct {
	Config       string
	TaygaConf    string
	JoolInstance string
	JoolPorts    [2]uint16
	JoolIdle     time.Duration
	Queues       uint16
	QueueNum     uint16
	Ports        []uint16
	Leg          string
	NoRules      bool
	NoPinholes   bool
	FailOpen     bool
	HoldTimeout  time.Duration
	MaxFlows     int
	Strict       bool
	LogLevel     slog.Level
	LogFormat    string
	StatusSocket string
	MetricsAddr  string
	Table        string
	// StateDir keeps the state of translated control connections for a
	// restarted daemon (--state-dir, journal.go).
	StateDir  string
	KeepRules string
	// RunDir holds what must survive a crash of the daemon (the Jool
	// static BIB entries it added), per --table; not a flag yet.
	RunDir string

	// Not flags: runMain sets them for a reload on SIGHUP (the command
	// line to parse again, and the signal).
	Args   []string
	Reload <-chan os.Signal
}

const runUsage = `Usage: ftpalg run (--tayga-conf FILE | --jool-instance NAME) [flags]

Runs the FTP ALG in the network namespace of a NAT64 translator: installs
nftables rules that send FTP control packets (TCP port 21 by default) of
one leg of the translator to NFQUEUE, rewrites them there, and removes the
rules again on SIGINT or SIGTERM. Needs CAP_NET_ADMIN (root, or the
capability alone, as the systemd unit gives it).

Every flag can also be set in the file --config names, one "flag value"
per line ("# comments"; a boolean flag alone means true); flags on the
command line win. SIGHUP re-reads that file and the translator's
configuration (tayga.conf and its map-file; Jool's pool4) without
breaking a connection; a bad file is logged and the old settings kept.
Under systemd (NOTIFY_SOCKET), the daemon reports ready once its queues
and rules are up, and pings the watchdog (WatchdogSec=).
`

const runExit = `Exit status:
  0  stopped by SIGINT or SIGTERM after a clean shutdown
  1  could not start (translator configuration, permissions, queue in use)
     or stopped on an error
  2  usage error (a bad flag, value, argument or config file line)
`

// defaultQueues is the number of queues without --queues: one per CPU the
// daemon may use, at most 4. Two queues on two cores verdict about twice
// the packets of one (test/bench/RESULTS.md); each needs a core of its own
// to gain anything.
func defaultQueues() int { return min(runtime.NumCPU(), 4) }

// defaultMaxFlows bounds the flow table of each queue's engine: an idle
// established control connection costs about 1 KB, so 131072 of them
// about 128 MB.
const defaultMaxFlows = 131072

// defaultRunDir is where the daemon keeps its records under /run.
const defaultRunDir = "/run/ftpalg"

// defaultStatusSocket is where "ftpalg status" finds the daemon.
const defaultStatusSocket = "/run/ftpalg/ftpalg.sock"

// defaultStateDir is where the daemon keeps the state of shifted control
// connections (tmpfs on systemd machines): "auto" is a directory of the
// daemon's network namespace, /run/ftpalg/netns-INODE, as daemons in
// several namespaces of one host share /run and may see the same
// addresses.
const defaultStateDir = "auto"

func newRunFlags(cfg *runConfig) *cmdFlags {
	fl := newCmdFlags("run", runUsage, runExit)
	fl.StringVar(&cfg.Config, "config", "", "read flags from this `file` first (for example /etc/ftpalg/ftpalg.conf); SIGHUP re-reads it")
	fl.StringVar(&cfg.TaygaConf, "tayga-conf", "", "Tayga's configuration `file` (tayga.conf): translate for that Tayga")
	fl.StringVar(&cfg.JoolInstance, "jool-instance", "", "Jool instance `name`: translate for that Jool (its pool4 must be explicit)")
	fl.Func("jool-ports", "with --jool-instance: the pool4 port `range` (LO-HI) reserved for the ALG's static BIB entries;\nwithout it 46 passive and 64 active data channels are not mapped", func(s string) (err error) {
		if cfg.JoolPorts, err = parsePortRange(s); err != nil {
			return fmt.Errorf("bad range %q (%w)", s, err)
		}
		return nil
	})
	fl.DurationVar(&cfg.JoolIdle, "jool-idle-timeout", 30*time.Second, "with --jool-ports: how long (a `duration`) a data-channel mapping nobody connects through lives,\nand the peer's admission through it (rules/README.md, Peer filter)")
	fl.Func("queues", "`count` of NFQUEUE queues, one engine each (default: one per CPU, at most 4)", func(s string) error {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("bad count %q (want 1-65535)", s)
		}
		cfg.Queues = uint16(n)
		return nil
	})
	fl.Func("queue-num", "first NFQUEUE `number` (default 0)", func(s string) error {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return fmt.Errorf("bad queue number %q (want 0-65535)", s)
		}
		cfg.QueueNum = uint16(n)
		return nil
	})
	fl.Func("ports", "FTP control `ports`, comma-separated (default 21)", func(s string) error {
		ports, err := parsePorts(s)
		if err != nil {
			return err
		}
		cfg.Ports = ports
		return nil
	})
	fl.StringVar(&cfg.Leg, "leg", rules.LegIPv4, "`leg` of the translator whose packets are queued: ipv4 or ipv6")
	fl.StringVar(&cfg.Table, "table", rules.DefaultTable, "the daemon's nftables `table`, one per instance: several daemons in one network namespace\nneed their own --table and --queue-num")
	fl.BoolVar(&cfg.NoRules, "no-rules", false, "install no nftables rules (the operator installs them, see 'ftpalg rules')")
	fl.BoolVar(&cfg.NoPinholes, "no-pinholes", false, "Tayga: attach no conntrack helpers and create no expectations for data connections\n(the firewall pinholes, see rules/README.md)")
	fl.BoolVar(&cfg.FailOpen, "fail-open", true, failOpenUsage)
	fl.DurationVar(&cfg.HoldTimeout, "hold-timeout", 200*time.Millisecond, "longest `duration` a segment ending inside a command is held, then it is sent unchanged\n(a reply the ALG has committed to translate is never sent half translated)")
	fl.IntVar(&cfg.MaxFlows, "max-flows", defaultMaxFlows, "`count` of control connections each queue follows; past it half-open ones are forgotten first,\nthose with rewritten state never (new ones then pass unchanged, counted as flows_refused)")
	fl.BoolVar(&cfg.Strict, "strict", false, "answer 425 to an IPv6 client when the IPv4 server's 227 names another address")
	fl.Func("log-level", "log `level`: debug (every rewritten line), info, warn or error (default info)", func(s string) error {
		var l slog.Level
		if err := l.UnmarshalText([]byte(s)); err != nil {
			return fmt.Errorf("bad level %q (want debug, info, warn or error)", s)
		}
		cfg.LogLevel = l
		return nil
	})
	fl.StringVar(&cfg.LogFormat, "log-format", "text", "log `format`: text or json (one JSON object per line)")
	fl.StringVar(&cfg.StatusSocket, "status-socket", defaultStatusSocket, "unix socket `path` that 'ftpalg status' reads (empty: none)")
	fl.StringVar(&cfg.StateDir, "state-dir", defaultStateDir, "`directory` (on tmpfs) where the state of translated control connections is kept for a restarted\ndaemon to resume them (docs/STATE.md; auto: /run/ftpalg/netns-INODE of this network namespace;\nempty: none, a restart breaks them)")
	fl.StringVar(&cfg.KeepRules, "keep-rules", "auto", "on exit keep the rules (`mode`): auto (while shifted connections are open, so that they wait\nfor the next daemon), yes or no")
	fl.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://`address`/metrics (for example 127.0.0.1:9421; empty: none)")
	return fl
}

// failOpenUsage is the help of --fail-open, the same in run and rules.
const failOpenUsage = "let FTP control packets pass unchanged while the queue is full or no daemon listens,\ninstead of dropping them (--fail-open=false: fail closed)"

// parseRunFlags parses and checks the flags of "ftpalg run" (and the file
// of --config). It prints the help to stdout for --help (errHelp); a bad
// flag is a *usageError.
func parseRunFlags(args []string, stdout io.Writer) (*runConfig, error) {
	cfg := &runConfig{Ports: []uint16{21}, StateDir: defaultStateDir, RunDir: defaultRunDir}
	fl := newRunFlags(cfg)
	if err := fl.parse(args, stdout); err != nil {
		return nil, err
	}
	if fl.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fl.Arg(0))
	}
	if err := cfg.check(); err != nil {
		return nil, &usageError{msg: err.Error()}
	}
	return cfg, nil
}

func (c *runConfig) check() error {
	switch {
	case c.TaygaConf == "" && c.JoolInstance == "":
		return errors.New("one of --tayga-conf or --jool-instance is required")
	case c.TaygaConf != "" && c.JoolInstance != "":
		return errors.New("--tayga-conf and --jool-instance exclude each other")
	case c.JoolPorts != [2]uint16{} && c.JoolInstance == "":
		return errors.New("--jool-ports needs --jool-instance")
	case c.JoolIdle <= 0:
		return fmt.Errorf("--jool-idle-timeout %v: want a positive duration", c.JoolIdle)
	}
	if lo, hi := c.JoolPorts[0], c.JoolPorts[1]; lo != 0 {
		for _, p := range c.Ports {
			if p >= lo && p <= hi {
				return fmt.Errorf("--jool-ports %d-%d holds FTP control port %d (--ports): choose a range without it", lo, hi, p)
			}
		}
	}
	if c.Leg != rules.LegIPv4 && c.Leg != rules.LegIPv6 {
		return fmt.Errorf("--leg %q: want ipv4 or ipv6", c.Leg)
	}
	if c.Queues == 0 {
		c.Queues = uint16(min(defaultQueues(), 0x10000-int(c.QueueNum)))
	}
	if int(c.QueueNum)+int(c.Queues)-1 > 0xffff {
		return fmt.Errorf("--queue-num %d with --queues %d goes past queue 65535", c.QueueNum, c.Queues)
	}
	if c.HoldTimeout <= 0 {
		return fmt.Errorf("--hold-timeout %v: want a positive duration", c.HoldTimeout)
	}
	if c.MaxFlows <= 0 {
		return fmt.Errorf("--max-flows %d: want a positive number", c.MaxFlows)
	}
	if c.KeepRules != "auto" && c.KeepRules != "yes" && c.KeepRules != "no" {
		return fmt.Errorf("--keep-rules %q: want auto, yes or no", c.KeepRules)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
	}
	return nil
}

func (c *runConfig) translator() string {
	if c.JoolInstance != "" {
		return rules.Jool
	}
	return rules.Tayga
}

// rules is the ruleset of the daemon; scope is the translator's own
// addresses (daemonMapper.scope).
func (c *runConfig) rules(scope []netip.Prefix) *rules.Config {
	return &rules.Config{
		Table:      c.Table,
		Scope:      scope,
		Translator: c.translator(),
		Leg:        c.Leg,
		Ports:      c.Ports,
		QueueNum:   c.QueueNum,
		Queues:     c.Queues,
		Bypass:     c.FailOpen,
		Helper:     c.translator() == rules.Tayga && !c.NoPinholes,
		PeerFilter: c.peerFilter(),
	}
}

func newLogger(w io.Writer, cfg *runConfig) *slog.Logger {
	logLevel.Set(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: &logLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
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
	cfg.Args, cfg.Reload = args, hup
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
	// reload re-reads the translator's configuration (may be nil): it
	// returns what changed, or an error and keeps the old one.
	reload func(cfg *runConfig) (string, error)
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
	// One daemon per table and per queue in a namespace: a second one
	// stops here, before it touches the first one's rules or queues.
	queueNums := make([]uint16, cfg.Queues)
	for i := range queueNums {
		queueNums[i] = cfg.QueueNum + uint16(i)
	}
	release, err := claimInstance(cfg.Table, queueNums)
	if err != nil {
		return err
	}
	defer release()

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
		dir, err := stateDir(cfg.StateDir)
		if err != nil {
			return err
		}
		jn, conns, err = openJournal(dir, 2*time.Hour, log)
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
	var keeper *rules.Keeper
	if !cfg.NoRules {
		if jn != nil {
			rc.ShiftedNow = jn.conns
		}
		if keeper, err = rules.NewKeeper(rc); err != nil {
			return err
		}
		if mapper.guard != nil {
			keeper.OnRestore(mapper.guard.restore)
		}
		defer keeper.Close()
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
		if err := keeper.Install(); err != nil {
			return err
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
				log.Info("rules kept for the next daemon: shifted connections wait for it (ftpalg rules remove removes them)",
					"shifted", jn.open())
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

	// Keep the rules when the next daemon must find the shifted
	// connections waiting: then the packets the engines hold get no
	// verdict (the kernel drops them as the queues close, TCP resends them
	// to the next daemon) rather than going out with a line half-rewritten.
	keepRules := func() bool {
		return !cfg.NoRules && (cfg.KeepRules == "yes" || cfg.KeepRules == "auto" && jn != nil && jn.open() > 0)
	}
	for _, h := range handlers {
		h.dropHeld = keepRules
	}
	loopErr := runLoops(ctx, log, queues, handlers, keeper, mapper.expire, func(ctx context.Context) {
		serviceLoop(ctx, cfg, mapper, handlers, log)
	})
	keep = keepRules()
	// The loops gave every held packet its verdict (unless dropHeld); the
	// kernel drops what is still queued when a queue closes.
	closeQueues()

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

// openQueues binds the configured queues. On an error it returns those
// already bound, for the caller to close.
func openQueues(cfg *runConfig) ([]*nfq.Queue, error) {
	queues := make([]*nfq.Queue, 0, cfg.Queues)
	for i := range cfg.Queues {
		// The queue's own fail-open (a full queue or socket accepts
		// packets unchanged) would let a shifted connection's packets
		// pass unshifted: with a state directory a full queue drops, and
		// TCP resends (docs/STATE.md).
		q, err := nfq.Open(&nfq.Config{Queue: cfg.QueueNum + i, FailOpen: cfg.FailOpen && cfg.StateDir == ""})

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
	stop = func() {
		for _, c := range closers {
			c()
		}
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
// and of SIGHUP, until ctx is done.
func serviceLoop(ctx context.Context, cfg *runConfig, mapper *daemonMapper, hs []*engineHandler, log *slog.Logger) {
	notify := func(state string) {
		if _, err := sdNotify(state); err != nil {
			log.Warn("systemd notification", "state", state, "err", err)
		}
	}
	// The queues are open and the rules in: ready.
	notify("READY=1\nSTATUS=running")
	defer notify("STOPPING=1\nSTATUS=stopping")
	var wd <-chan time.Time
	interval, ok := watchdogInterval()
	if ok {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		wd = t.C
	}
	r := &reloader{args: cfg.Args, cfg: cfg, mapper: mapper, handlers: hs, log: log, notify: notify}
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

func queueRange(cfg *runConfig) string {
	if cfg.Queues == 1 {
		return strconv.Itoa(int(cfg.QueueNum))
	}
	return fmt.Sprintf("%d-%d", cfg.QueueNum, int(cfg.QueueNum)+int(cfg.Queues)-1)
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

// engineHandler runs one mangle.Engine on one queue. Its methods run on the
// queue's loop goroutine; stats is the only state other goroutines read.
type engineHandler struct {
	queue uint16
	eng   *mangle.Engine
	res   mangle.Result
	hold  atomic.Int64 // time.Duration; a reload may change it
	log   *slog.Logger
	debug bool

	// lastTick is the time of the last Tick (UnixNano): the watchdog
	// pings systemd only while every queue loop ticks.
	lastTick atomic.Int64

	mu    sync.Mutex
	stats mangle.Stats // copied from the engine at every Tick
	flows int

	dropHeld func() bool // at Close, leave held packets without a verdict (nil: never)

	// listReq carries requests for the engine's flows ('ftpalg
	// sessions'), answered at the next Tick on the loop goroutine.
	listReq chan chan []mangle.FlowInfo
}

// Flows returns the engine's flows, as listed by the queue's loop at its
// next Tick; ok is false if the loop did not answer within timeout.
func (h *engineHandler) Flows(timeout time.Duration) ([]mangle.FlowInfo, bool) {
	reply := make(chan []mangle.FlowInfo, 1)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case h.listReq <- reply:
	case <-t.C:
		return nil, false
	}
	select {
	case f := <-reply:
		return f, true
	case <-t.C:
		return nil, false
	}
}

func newEngineHandler(queue uint16, cfg *mangle.Config, hold time.Duration, log *slog.Logger) *engineHandler {
	h := &engineHandler{
		listReq: make(chan chan []mangle.FlowInfo),
		queue:   queue,
		eng:     mangle.New(cfg),
		log:     log,
		debug:   log.Enabled(context.Background(), slog.LevelDebug),
	}
	h.setHold(hold)
	h.lastTick.Store(time.Now().UnixNano())
	return h
}

func (h *engineHandler) setHold(d time.Duration) { h.hold.Store(int64(d)) }

func (h *engineHandler) Packet(id uint32, pkt []byte, v *nfq.Verdicts) {
	h.eng.Process(pkt, uint64(id), time.Now(), &h.res)
	h.emit(v)
}

func (h *engineHandler) Tick(now time.Time, v *nfq.Verdicts) {
	h.lastTick.Store(now.UnixNano())
	h.eng.Expire(now, time.Duration(h.hold.Load()), &h.res)
	h.emit(v)
	h.snapshot()
	select {
	case reply := <-h.listReq:
		reply <- h.eng.AppendFlows(nil)
	default:
	}
}

// LeaveQueued tells the queue loop to leave what is still queued at
// shutdown, under the same condition as Close leaves held packets.
func (h *engineHandler) LeaveQueued() bool { return h.dropHeld != nil && h.dropHeld() }

func (h *engineHandler) Close(v *nfq.Verdicts) {
	if h.dropHeld != nil && h.dropHeld() {
		h.snapshot()
		return
	}
	h.eng.Flush(&h.res)
	h.emit(v)
	h.snapshot()
}

// emit turns the engine's result into verdicts (the engine's packets are
// copied into the verdict buffer before its next call) and logs rewrites.
func (h *engineHandler) emit(v *nfq.Verdicts) {
	for i := range h.res.Emits {
		e := &h.res.Emits[i]
		if e.Drop {
			v.Drop(uint32(e.Tag))
			continue
		}
		if e.Extra {
			// The second part of a split segment: a verdict carries one
			// packet, and the daemon sends none of its own. The part is
			// lost on the wire; the receiver acknowledges the first part
			// only, and the engine sends the rest when the sender
			// retransmits (see mangle.Emit); Stats.Split counts them.
			continue
		}
		if e.Modified {
			v.AcceptModified(uint32(e.Tag), e.Packet)
		} else {
			v.Accept(uint32(e.Tag))
		}
	}
	for i := range h.res.Alerts {
		a := &h.res.Alerts[i]
		h.log.Error("control connection", "queue", h.queue, "flow", a.Flow.String(), "kind", a.Kind.String(), "error", a.Text)
	}
	if h.debug {
		for i := range h.res.Rewrites {
			r := &h.res.Rewrites[i]
			h.log.Debug("rewrite", "queue", h.queue, "flow", r.Flow.String(), "kind", r.Kind.String(),
				"dir", r.Dir.String(), "before", string(r.Before), "after", string(r.After))
		}
	}
}

func (h *engineHandler) snapshot() {
	st, n := h.eng.Stats(), h.eng.Flows()
	h.mu.Lock()
	h.stats, h.flows = st, n
	h.mu.Unlock()
}

// Stats returns the engine's counters as of its last Tick.
func (h *engineHandler) Stats() (mangle.Stats, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats, h.flows
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
