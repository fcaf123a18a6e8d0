package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
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
	TaygaConf    string
	JoolInstance string
	JoolPorts    [2]uint16
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
}

const runUsage = `Usage: ftpalg run (--tayga-conf FILE | --jool-instance NAME) [flags]

Runs the FTP ALG in the network namespace of a NAT64 translator: installs
nftables rules that send FTP control packets (TCP port 21 by default) of
one leg of the translator to NFQUEUE, rewrites them there, and removes the
rules again on SIGINT or SIGTERM. Needs root (CAP_NET_ADMIN).

Flags:
`

// defaultQueues is the number of queues without --queues: one per CPU the
// daemon may use, at most 4. Two queues on two cores verdict about twice
// the packets of one (test/bench/RESULTS.md); each needs a core of its own
// to gain anything.
func defaultQueues() int { return min(runtime.NumCPU(), 4) }

// defaultMaxFlows bounds the flow table of each queue's engine.
const defaultMaxFlows = 65536

// defaultStatusSocket is where "ftpalg status" finds the daemon.
const defaultStatusSocket = "/run/ftpalg.sock"

func newRunFlags(cfg *runConfig, stderr io.Writer) *flag.FlagSet {
	fl := flag.NewFlagSet("ftpalg run", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprint(fl.Output(), runUsage)
		fl.PrintDefaults()
	}
	fl.StringVar(&cfg.TaygaConf, "tayga-conf", "", "Tayga's configuration `file` (tayga.conf): translate for that Tayga")
	fl.StringVar(&cfg.JoolInstance, "jool-instance", "", "Jool instance `name`: translate for that Jool (its pool4 must be explicit)")
	fl.Func("jool-ports", "with --jool-instance: the pool4 port `range` (LO-HI) reserved for the ALG's static BIB entries;\nwithout it 46 passive and 64 active data channels are not mapped", func(s string) error {
		lo, hi, ok := strings.Cut(s, "-")
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b, err2 := strconv.ParseUint(hi, 10, 16)
		if !ok || err1 != nil || err2 != nil || a == 0 || a > b {
			return errors.New("want LO-HI, for example 61000-61999")
		}
		cfg.JoolPorts = [2]uint16{uint16(a), uint16(b)}
		return nil
	})
	fl.Func("queues", "`count` of NFQUEUE queues, one engine each (default: one per CPU, at most 4)", func(s string) error {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return errors.New("want a number from 1 to 65535")
		}
		cfg.Queues = uint16(n)
		return nil
	})
	fl.Func("queue-num", "first NFQUEUE `number` (default 0)", func(s string) error {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return errors.New("want a number from 0 to 65535")
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
	fl.BoolVar(&cfg.NoRules, "no-rules", false, "install no nftables rules (the operator installs them, see 'ftpalg rules')")
	fl.BoolVar(&cfg.NoPinholes, "no-pinholes", false, "Tayga: attach no conntrack helpers and create no expectations for data connections\n(the firewall pinholes, see rules/README.md)")
	fl.BoolVar(&cfg.FailOpen, "fail-open", true, "let FTP control packets pass unchanged while the queue is full or no daemon runs,\ninstead of dropping them (--fail-open=false)")
	fl.DurationVar(&cfg.HoldTimeout, "hold-timeout", 200*time.Millisecond, "longest a segment ending inside a command or reply is held, then it is sent unchanged")
	fl.IntVar(&cfg.MaxFlows, "max-flows", defaultMaxFlows, "`count` of control connections each queue follows; past it half-open ones are forgotten first,\nthose with rewritten state never (new ones then pass unchanged, counted as flows_refused)")
	fl.BoolVar(&cfg.Strict, "strict", false, "answer 425 to an IPv6 client when the IPv4 server's 227 names another address")
	fl.Func("log-level", "log `level`: debug (every rewritten line), info, warn or error (default info)", func(s string) error {
		return cfg.LogLevel.UnmarshalText([]byte(s))
	})
	fl.StringVar(&cfg.LogFormat, "log-format", "text", "log `format`: text or json")
	fl.StringVar(&cfg.StatusSocket, "status-socket", defaultStatusSocket, "unix socket `path` that 'ftpalg status' reads (empty: none)")
	fl.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://`address`/metrics (for example 127.0.0.1:9421; empty: none)")
	return fl
}

// parseRunFlags parses and checks the flags of "ftpalg run".
func parseRunFlags(args []string, stderr io.Writer) (*runConfig, error) {
	cfg := &runConfig{Ports: []uint16{21}}
	fl := newRunFlags(cfg, stderr)
	if err := fl.Parse(args); err != nil {
		return nil, err
	}
	if fl.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	if err := cfg.check(); err != nil {
		return nil, err
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

func (c *runConfig) rules() *rules.Config {
	return &rules.Config{
		Translator: c.translator(),
		Leg:        c.Leg,
		Ports:      c.Ports,
		QueueNum:   c.QueueNum,
		Queues:     c.Queues,
		Bypass:     c.FailOpen,
		Helper:     c.translator() == rules.Tayga && !c.NoPinholes,
	}
}

func newLogger(w io.Writer, cfg *runConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func runMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseRunFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ftpalg run: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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

	handlers := make([]*engineHandler, len(queues))
	for i, q := range queues {
		handlers[i] = newEngineHandler(q.Num(), &mangle.Config{
			Mapper:      mapper,
			Strict:      cfg.Strict,
			ServerPorts: cfg.Ports,
			MaxFlows:    cfg.MaxFlows,
		}, cfg.HoldTimeout, log)
	}
	started := time.Now()
	getReport := func() statusReport { return report(cfg, started, queues, handlers) }
	stopServers, err := serveReports(cfg, log, getReport)
	if err != nil {
		return err
	}
	defer stopServers()

	// Rules last: nothing can fail after them but the loops themselves.
	rc := cfg.rules()
	if !cfg.NoRules {
		if err := rules.Install(rc); err != nil {
			return err
		}
		// The queues close first (below, after the loops end): between
		// that and this, queued packets pass unchanged with the bypass
		// flag (--fail-open) or are dropped.
		defer func() {
			if rerr := rules.Remove(rc); rerr != nil {
				log.Error("remove rules", "err", rerr)
				if err == nil {
					err = rerr
				}
			}
		}()
	}
	log.Info("ftpalg running",
		"version", version, "translator", cfg.translator(), "conf", cfg.TaygaConf+cfg.JoolInstance,
		"leg", cfg.Leg, "ports", cfg.Ports, "queue_nums", queueRange(cfg), "rules", !cfg.NoRules,
		"fail_open", cfg.FailOpen, "status_socket", cfg.StatusSocket, "metrics_addr", cfg.MetricsAddr)

	loopErr := runLoops(ctx, log, queues, handlers, mapper.expire)
	// The loops gave every held packet its verdict; the kernel drops what
	// is still queued when a queue closes.
	closeQueues()

	sum := report(cfg, started, queues, handlers).total()
	log.Info("ftpalg stopped", "uptime", time.Since(started).Round(time.Millisecond).String(),
		"packets", sum.NFQ.Packets, "modified", sum.NFQ.Modified, "rewrites", sum.Engine.Rewrites,
		"flows", sum.Engine.Flows, "held_timeout", sum.Engine.HeldTimeout,
		"map_failed", sum.Engine.MapFailed, "enobufs", sum.NFQ.ENOBUFS,
		"verdict_errors", sum.NFQ.VerdictErrors, "half_open_evicted", sum.Engine.HalfOpenEvicted,
		"flows_evicted", sum.Engine.FlowsEvicted, "flows_refused", sum.Engine.FlowsRefused)
	return loopErr
}

// openQueues binds the configured queues. On an error it returns those
// already bound, for the caller to close.
func openQueues(cfg *runConfig) ([]*nfq.Queue, error) {
	queues := make([]*nfq.Queue, 0, cfg.Queues)
	for i := range cfg.Queues {
		q, err := nfq.Open(&nfq.Config{Queue: cfg.QueueNum + i, FailOpen: cfg.FailOpen})
		if err != nil {
			return queues, err
		}
		queues = append(queues, q)
	}
	return queues, nil
}

// serveReports starts the status socket and the metrics listener that
// cfg asks for; stop closes them.
func serveReports(cfg *runConfig, log *slog.Logger, get func() statusReport) (stop func(), err error) {
	var closers []func() error
	stop = func() {
		for _, c := range closers {
			c()
		}
	}
	if cfg.StatusSocket != "" {
		// Only a window on the daemon: translating matters more. Daemons
		// in several namespaces of one host share /run, for one.
		if status, err := listenStatus(cfg.StatusSocket, log); err != nil {
			log.Warn("no status socket: 'ftpalg status' cannot reach this daemon (see --status-socket)", "err", err)
		} else {
			closers = append(closers, status.Close)
			status.serve(get)
		}
	}
	if cfg.MetricsAddr != "" {
		ms, err := listenMetrics(cfg.MetricsAddr, log, get)
		if err != nil {
			stop()
			return nil, err
		}
		closers = append(closers, ms.Close)
	}
	return stop, nil
}

// runLoops runs one loop per queue, the warning loop and, if expire is
// not nil, the mapper's expiry loop, until ctx is done or a queue's loop
// fails (the first to fail stops the others).
func runLoops(ctx context.Context, log *slog.Logger, queues []*nfq.Queue, handlers []*engineHandler, expire func(time.Time) error) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
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
	hold  time.Duration
	log   *slog.Logger
	debug bool

	mu    sync.Mutex
	stats mangle.Stats // copied from the engine at every Tick
	flows int
}

func newEngineHandler(queue uint16, cfg *mangle.Config, hold time.Duration, log *slog.Logger) *engineHandler {
	return &engineHandler{
		queue: queue,
		eng:   mangle.New(cfg),
		hold:  hold,
		log:   log,
		debug: log.Enabled(context.Background(), slog.LevelDebug),
	}
}

func (h *engineHandler) Packet(id uint32, pkt []byte, v *nfq.Verdicts) {
	h.eng.Process(pkt, uint64(id), time.Now(), &h.res)
	h.emit(v)
}

func (h *engineHandler) Tick(now time.Time, v *nfq.Verdicts) {
	h.eng.Expire(now, h.hold, &h.res)
	h.emit(v)
	h.snapshot()
}

func (h *engineHandler) Close(v *nfq.Verdicts) {
	h.eng.Flush(&h.res)
	h.emit(v)
	h.snapshot()
}

// emit turns the engine's result into verdicts (the engine's packets are
// copied into the verdict buffer before its next call) and logs rewrites.
func (h *engineHandler) emit(v *nfq.Verdicts) {
	for i := range h.res.Emits {
		e := &h.res.Emits[i]
		if e.Modified {
			v.AcceptModified(uint32(e.Tag), e.Packet)
		} else {
			v.Accept(uint32(e.Tag))
		}
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
