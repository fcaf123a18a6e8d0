package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/ftpalg/ftpalg/rules"
)

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
	// SyncPeer, SyncListen and SyncKey replicate the journal to a standby
	// router's daemon (--state-sync-*, statesync.go).
	SyncPeer, SyncListen, SyncKey string
	// RunDir holds what must survive a crash of the daemon: the Jool
	// static BIB entries it added (per --table) and, with --state-dir
	// auto, the journal (--run-dir).
	RunDir string
	// JoolOriginMarks are the packet marks of the pool4 entries that make
	// 46 active data connections leave from the control connection's
	// address (--jool-origin-marks; zero: off).
	JoolOriginMarks [2]uint32

	// Takeover starts this daemon beside a running one of the same table
	// and takes its queues' traffic over without losing a packet
	// (--takeover, handover.go).
	Takeover bool

	// Not a flag: the daemon uses the queues QueueNum+Queues onwards, not
	// QueueNum onwards (a takeover from a daemon on those: handover.go).
	AltQueues bool
	// Not flags: runMain sets them for a reload on SIGHUP (the command
	// line to parse again, and the signal).
	Args    []string
	Reload  <-chan os.Signal
	Upgrade <-chan os.Signal // SIGUSR2: start the binary anew with --takeover (upgrade.go)
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

SIGUSR2 upgrades without losing a packet: the daemon starts its binary
again (the file on disk, so a newer one after a package upgrade) with the
same flags and --takeover; the new daemon takes over the queues' traffic,
the rules and the state, tells systemd it is the main process now
(NotifyAccess=all) and this one exits. If the new one fails to start, this
one goes on.
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
// established control connection costs about 800 bytes (a flow of 704
// bytes and its slot in the map), so 131072 of them about 100 MB. As many
// half-open connections (a SYN, no payload yet) are kept apart, about 100
// bytes each: 13 MB more.
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
	fl.Func("jool-origin-marks", "with --jool-ports: the packet `marks` (LO-HI, or off) of the pool4 entries the daemon adds so that\nan IPv6 server's 46 active data connection leaves Jool from the address the IPv4 client\ndialled: one mark per such address, the reserved ports on it alone; every pool4 entry\nunder these marks is the daemon's (README.md, Jool) (default 46000-46063)", func(s string) (err error) {
		if cfg.JoolOriginMarks, err = parseMarkRange(s); err != nil {
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
	fl.IntVar(&cfg.MaxFlows, "max-flows", defaultMaxFlows, "`count` of established control connections each queue follows, and as many half-open ones (a SYN,\nno payload yet: about 100 bytes each); past it half-open ones are forgotten first, those with\nrewritten state never (new ones then pass unchanged, counted as flows_refused)")
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
	fl.StringVar(&cfg.StateDir, "state-dir", defaultStateDir, "`directory` (on tmpfs) where the state of translated control connections is kept for a restarted\ndaemon to resume them (docs/STATE.md; auto: RUN-DIR/netns-INODE of this network namespace;\nempty: none, a restart breaks them)")
	fl.StringVar(&cfg.SyncPeer, "state-sync-peer", "", "for router failover: send each write of the state (--state-dir) to the daemon of the peer\nrouter at `address:port` (UDP; docs/STATE.md), and take records only from its address")
	fl.StringVar(&cfg.SyncListen, "state-sync-listen", "", "for router failover: receive the peer's records (--state-sync-peer) on `address:port` (UDP)\nand apply them to this daemon's state and set of shifted connections")
	fl.StringVar(&cfg.SyncKey, "state-sync-key", "", "`file` holding a shared secret (16 bytes or more, the same on both routers): records carry\nan HMAC-SHA256 tag and those without a valid one are dropped")
	fl.StringVar(&cfg.RunDir, "run-dir", defaultRunDir, "`directory` (on tmpfs) for what must outlive the daemon: the Jool BIB entries it added,\nand the journal with --state-dir auto (the template unit gives each instance its own)")
	fl.StringVar(&cfg.KeepRules, "keep-rules", "auto", "on exit keep the rules (`mode`): auto (while shifted connections are open, so that they wait\nfor the next daemon), yes or no")
	fl.BoolVar(&cfg.Takeover, "takeover", false, "start beside the running daemon of this --table (in this network namespace) and take over\nfrom it without losing a packet: bind the other queue range (QUEUE-NUM+QUEUES onwards,\nor QUEUE-NUM if the running one uses that), point the rules at it in one transaction, let\nthe running daemon verdict what it has queued and exit, then go on with its state\n(docs/STATE.md, Handover); without a running daemon, start as usual. Tayga only")
	fl.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://`address`/metrics (for example 127.0.0.1:9421; empty: none)")
	return fl
}

// failOpenUsage is the help of --fail-open, the same in run and rules.
const failOpenUsage = "let FTP control packets pass unchanged while the queue is full or no daemon listens,\ninstead of dropping them (--fail-open=false: fail closed)"

// parseRunFlags parses and checks the flags of "ftpalg run" (and the file
// of --config). It prints the help to stdout for --help (errHelp); a bad
// flag is a *usageError.
func parseRunFlags(args []string, stdout io.Writer) (*runConfig, error) {
	cfg := &runConfig{Ports: []uint16{21}, StateDir: defaultStateDir, RunDir: defaultRunDir, JoolOriginMarks: defaultOriginMarks}
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
	if c.Takeover && int(c.QueueNum)+2*int(c.Queues)-1 > 0xffff {
		return fmt.Errorf("--takeover: --queue-num %d with --queues %d: the other range goes past queue 65535", c.QueueNum, c.Queues)
	}
	if c.Takeover && c.NoRules {
		return errors.New("--takeover needs the daemon's own rules (not --no-rules): it points them at its queues")
	}
	if c.Takeover && c.JoolInstance != "" {
		return errors.New("--takeover is for Tayga only for now (the Jool mapper's peer filter and BIB records are not handed over)")
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
	if (c.SyncListen != "" || c.SyncKey != "") && c.SyncPeer == "" {
		return errors.New("--state-sync-listen and --state-sync-key need --state-sync-peer (the only address records are taken from)")
	}
	if c.SyncPeer != "" && c.StateDir == "" {
		return errors.New("--state-sync-peer needs --state-dir (the state it replicates)")
	}
	for _, a := range []struct{ flag, v string }{{"--state-sync-peer", c.SyncPeer}, {"--state-sync-listen", c.SyncListen}} {
		if _, err := netip.ParseAddrPort(a.v); a.v != "" && err != nil {
			return fmt.Errorf("%s %q: want address:port ([address]:port for IPv6)", a.flag, a.v)
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
	}
	return nil
}

// pickQueues chooses the daemon's queues beside those of the running
// daemon it takes over from (first, count): QueueNum onwards if they are
// free, else QueueNum+Queues onwards.
func (c *runConfig) pickQueues(first, count uint16) error {
	overlaps := func(a uint16) bool {
		return int(a) < int(first)+int(count) && int(first) < int(a)+int(c.Queues)
	}
	c.AltQueues = false
	if !overlaps(c.QueueNum) {
		return nil
	}
	c.AltQueues = true
	if !overlaps(c.firstQueue()) {
		return nil
	}
	return fmt.Errorf("takeover: the running daemon uses queues %d-%d: neither %d nor %d onwards is free (--queue-num, --queues)",
		first, int(first)+int(count)-1, c.QueueNum, c.firstQueue())
}

// firstQueue is the first queue the daemon binds.
func (c *runConfig) firstQueue() uint16 {
	if c.AltQueues {
		return c.QueueNum + c.Queues
	}
	return c.QueueNum
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
		QueueNum:   c.firstQueue(),
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
