package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/internal/nfq"
	"github.com/ftpalg/ftpalg/mangle"
	"github.com/ftpalg/ftpalg/rules"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func init() {
	commands = append(commands, command{
		name:    "status",
		summary: "print the counters of a running daemon",
		run:     statusMain,

		linuxOnly: true,
	})
}

// statusReport is what the daemon answers on its status socket, as JSON.
type statusReport struct {
	Version    string        `json:"version"`
	PID        int           `json:"pid"`
	Started    time.Time     `json:"started"`
	Uptime     string        `json:"uptime"`
	Translator string        `json:"translator"`
	Conf       string        `json:"conf"`
	Leg        string        `json:"leg"`
	Ports      []uint16      `json:"ports"`
	Table      string        `json:"table"`
	Rules      bool          `json:"rules_installed"`
	Restores   uint64        `json:"rules_restored"`
	Queues     []queueStatus `json:"queues"`
	Pinholes   *pinholeStats `json:"pinholes,omitempty"` // Tayga with pinholes only
}

// queueStatus is one queue's counters: the packet loop's, the kernel's
// (from /proc/net/netfilter/nfnetlink_queue) and its engine's (as of the
// engine's last tick, at most a few tens of milliseconds old).
type queueStatus struct {
	Queue  uint16           `json:"queue"`
	NFQ    nfq.Stats        `json:"nfqueue"`
	Kernel *nfq.KernelStats `json:"kernel,omitempty"`
	Engine mangle.Stats     `json:"engine"`
	Flows  int              `json:"flows"`
}

// report is the daemon's state; keeper is nil with --no-rules.
// pinholeStats are the pinhole decorator's counters
// (conntrackx.PinholeStats, copied so this file builds on every system).
type pinholeStats struct {
	Created uint64 `json:"created"` // expectations created
	Failed  uint64 `json:"failed"`  // requests the kernel refused (expectation or liberal tracking)
	Refused uint64 `json:"refused"` // requests that named no end of their control connection
}

// pinholes is nil without the pinhole decorator.
func report(cfg *runConfig, started time.Time, queues []*nfq.Queue, hs []*engineHandler, keeper *rules.Keeper, pinholes func() pinholeStats) statusReport {
	r := statusReport{
		Version:    version,
		PID:        os.Getpid(),
		Started:    started.UTC().Truncate(time.Second),
		Uptime:     time.Since(started).Round(time.Second).String(),
		Translator: cfg.translator(),
		Conf:       cfg.TaygaConf + cfg.JoolInstance,
		Leg:        cfg.Leg,
		Ports:      cfg.Ports,
		Table:      cfg.Table,
	}
	if keeper != nil {
		r.Rules, r.Restores = keeper.Installed(), keeper.Restores()
	}
	if pinholes != nil {
		ps := pinholes()
		r.Pinholes = &ps
	}
	for i, q := range queues {
		qs := queueStatus{Queue: q.Num(), NFQ: q.Stats()}
		qs.Engine, qs.Flows = hs[i].Stats()
		if ks, ok := q.KernelStats(); ok {
			qs.Kernel = &ks
		}
		r.Queues = append(r.Queues, qs)
	}
	return r
}

// total sums the counters of every queue.
func (r statusReport) total() queueStatus {
	var t queueStatus
	for _, q := range r.Queues {
		addCounters(reflect.ValueOf(&t.NFQ).Elem(), reflect.ValueOf(q.NFQ))
		addCounters(reflect.ValueOf(&t.Engine).Elem(), reflect.ValueOf(q.Engine))
		t.Flows += q.Flows
		if q.Kernel != nil {
			if t.Kernel == nil {
				t.Kernel = &nfq.KernelStats{}
			}
			t.Kernel.Waiting += q.Kernel.Waiting
			t.Kernel.QueueDrops += q.Kernel.QueueDrops
			t.Kernel.SocketDrops += q.Kernel.SocketDrops
		}
	}
	return t
}

// addCounters adds every unsigned field of src to dst's (structs of
// counters only).
func addCounters(dst, src reflect.Value) {
	for i := range dst.NumField() {
		if f := dst.Field(i); f.CanUint() {
			f.SetUint(f.Uint() + src.Field(i).Uint())
		}
	}
}

// statusServer answers every connection on a unix socket with the
// daemon's report, then closes it.
type statusServer struct {
	ln   *net.UnixListener
	path string
	log  *slog.Logger
	done chan struct{} // closed when serve's loop ends; nil before serve
}

func listenStatus(path string, log *slog.Logger) (*statusServer, error) {
	if _, err := os.Lstat(path); err == nil {
		// A socket left by a daemon that died, or one in use?
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("status socket %s in use (another ftpalg running?)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("status socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	// Counters only, but nobody else's business: root (or the owner) only.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("status socket: %w", err)
	}
	return &statusServer{ln: ln, path: path, log: log}, nil
}

// serve answers each connection: a client that sends "sessions\n" gets
// sessions' report, any other (or one that sends nothing for half a
// second) the status report. sessions may be nil.
func (s *statusServer) serve(get func() statusReport, sessions func() sessionsReport) {
	done := make(chan struct{})
	s.done = done
	go func() {
		defer close(done)
		for {
			c, err := s.ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					s.log.Warn("status socket", "err", err)
				}
				return
			}
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			line, _ := bufio.NewReader(io.LimitReader(c, 64)).ReadString('\n')
			c.SetDeadline(time.Now().Add(2 * time.Second))
			var answer any = get()
			if strings.TrimSpace(line) == "sessions" && sessions != nil {
				answer = sessions()
			}
			if err := json.NewEncoder(c).Encode(answer); err != nil {
				s.log.Debug("status socket", "err", err)
			}
			c.Close()
		}
	}()
}

// Close stops answering and removes the socket file.
func (s *statusServer) Close() error {
	err := s.ln.Close() // unlinks the socket file
	if s.done != nil {
		select {
		case <-s.done:
		case <-time.After(3 * time.Second): // a client that does not read
		}
	}
	return err
}

func readStatus(path string) (*statusReport, error) {
	var r statusReport
	return &r, askDaemon(path, "status", &r)
}

// askDaemon sends a request line to the daemon's status socket and decodes
// its JSON answer into v.
func askDaemon(path, request string, v any) error {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("no daemon answers on %s (is 'ftpalg run' running?)", path)
		}
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, request+"\n"); err != nil {
		return fmt.Errorf("ask %s: %w", path, err)
	}
	if err := json.NewDecoder(c).Decode(v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

func statusMain(args []string, stdout, stderr io.Writer) int {
	fl := newCmdFlags("status", "Usage: ftpalg status [--socket PATH] [--json | --explain]\n\nPrints the counters of a running 'ftpalg run', per queue.\n",
		exitStatus("the daemon could not be reached (not running, another --socket, permissions)"))
	path := fl.String("socket", defaultStatusSocket, "the daemon's status socket `path` (ftpalg run --status-socket)")
	asJSON := fl.Bool("json", false, "print the report as JSON")
	explain := fl.Bool("explain", false, "also say what each counter means and what to do when it grows\n(without a running daemon: only that)")
	if err := fl.parse(args, stdout); err != nil {
		return usageExit("status", err, stderr)
	}
	if fl.NArg() > 0 {
		return usageExit("status", usagef("unexpected argument %q", fl.Arg(0)), stderr)
	}
	r, err := readStatus(*path)
	if err != nil && *explain && !*asJSON {
		printExplain(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ftpalg status: %v\n", err)
		return 1
	}
	if *asJSON {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		if err := e.Encode(r); err != nil {
			fmt.Fprintf(stderr, "ftpalg status: %v\n", err)
			return 1
		}
		return 0
	}
	printStatus(stdout, r)
	if *explain {
		fmt.Fprintln(stdout)
		printExplain(stdout)
	}
	return 0
}

// printStatus prints a report as text: a header, then one column of
// counters per queue (and a total when there are several).
func printStatus(w io.Writer, r *statusReport) {
	fmt.Fprintf(w, "ftpalg %s, pid %d, up %s (since %s)\n", r.Version, r.PID, r.Uptime, r.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "translator %s (%s), leg %s, ports %v, table %s, rules installed: %v, restored %d times\n\n",
		r.Translator, r.Conf, r.Leg, r.Ports, r.Table, r.Rules, r.Restores)
	cols := r.Queues
	head := []string{"counter"}
	for _, q := range r.Queues {
		head = append(head, fmt.Sprintf("queue %d", q.Queue))
	}
	if len(r.Queues) > 1 {
		cols = append(cols, r.total())
		head = append(head, "total")
	}
	// Labels left, numbers right: the labels are padded to one width.
	width := len(head[0])
	for _, c := range queueCounters {
		width = max(width, len(c.label))
	}
	head[0] = fmt.Sprintf("%-*s", width, head[0])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, c := range queueCounters {
		cells := []string{fmt.Sprintf("%-*s", width, c.label)}
		known := false
		for _, q := range cols {
			v, ok := c.get(q)
			if !ok {
				cells = append(cells, "-")
				continue
			}
			known = true
			cells = append(cells, strconv.FormatUint(v, 10))
		}
		if known {
			fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
		}
	}
	tw.Flush()
	if p := r.Pinholes; p != nil {
		fmt.Fprintf(w, "\npinholes: %d created, %d failed, %d refused\n", p.Created, p.Failed, p.Refused)
	}
}

// printExplain prints what every row of the status means and, for those
// that signal trouble, what to do.
func printExplain(w io.Writer) {
	fmt.Fprintln(w, "What the counters mean (the metric of each in brackets):")
	for _, c := range queueCounters {
		fmt.Fprintf(w, "\n%s (%s)\n  %s\n", c.label, c.metric(), c.help)
		if c.explain != "" {
			fmt.Fprintf(w, "  When it grows: %s\n", c.explain)
		}
	}
	fmt.Fprintln(w, "\nrules installed / restored (ftpalg_rules_installed, ftpalg_rules_restored_total)")
	fmt.Fprintln(w, "  Whether the daemon's nftables table is in place, and how often it was put back after an")
	fmt.Fprintln(w, "  'nft flush ruleset' or 'systemctl reload nftables'. When restores grow: the operator's")
	fmt.Fprintln(w, "  firewall reloads flush the ruleset; harmless, but include rules/tayga.nft or jool.nft there.")
	fmt.Fprintln(w, "\npinholes (ftpalg_pinholes_*_total)")
	fmt.Fprintln(w, "  Conntrack expectations for data connections (Tayga). When failed grows: see rules/README.md, Pinholes.")
}

// metricsServer serves the daemon's metrics on /metrics (Prometheus,
// through client_golang), and /healthz and /readyz.
type metricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// listenMetrics serves the metrics of get's reports. ready tells /readyz
// whether the daemon translates (nil) or why not.
func listenMetrics(addr string, log *slog.Logger, get func() statusReport, ready func() error) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(newRegistry(get), promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	m := &metricsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics", "err", err)
		}
	}()
	return m, nil
}

// Addr is the address the server listens on.
func (m *metricsServer) Close() error {
	err := m.srv.Close()
	<-m.done
	return err
}

// newRegistry registers the daemon's metrics and the standard Go runtime
// and process collectors.
func newRegistry(get func() statusReport) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newReportCollector(get),
	)
	return reg
}

// reportCollector turns a status report into metrics at every scrape.
type reportCollector struct {
	get    func() statusReport
	queue  []*prometheus.Desc // one per queueCounters entry
	daemon map[string]*prometheus.Desc
}

func newReportCollector(get func() statusReport) *reportCollector {
	c := &reportCollector{get: get, daemon: map[string]*prometheus.Desc{}}
	for _, qc := range queueCounters {
		c.queue = append(c.queue, prometheus.NewDesc(qc.metric(), qc.help, []string{"queue"}, nil))
	}
	labels := map[string][]string{
		"ftpalg_build_info": {"version", "revision", "goversion"},
		"ftpalg_info":       {"translator", "leg", "table"},
	}
	for _, d := range daemonMetrics {
		c.daemon[d.name] = prometheus.NewDesc(d.name, d.help, labels[d.name], nil)
	}
	return c
}

func (c *reportCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.queue {
		ch <- d
	}
	for _, d := range c.daemon {
		ch <- d
	}
}

func (c *reportCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.get()
	one := func(name string, typ prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.daemon[name], typ, v, labels...)
	}
	one("ftpalg_build_info", prometheus.GaugeValue, 1, version, buildRevision(), runtime.Version())
	one("ftpalg_info", prometheus.GaugeValue, 1, r.Translator, r.Leg, r.Table)
	one("ftpalg_start_time_seconds", prometheus.GaugeValue, float64(r.Started.Unix()))
	installed := 0.0
	if r.Rules {
		installed = 1
	}
	one("ftpalg_rules_installed", prometheus.GaugeValue, installed)
	one("ftpalg_rules_restored_total", prometheus.CounterValue, float64(r.Restores))
	if p := r.Pinholes; p != nil {
		one("ftpalg_pinholes_created_total", prometheus.CounterValue, float64(p.Created))
		one("ftpalg_pinholes_failed_total", prometheus.CounterValue, float64(p.Failed))
		one("ftpalg_pinholes_refused_total", prometheus.CounterValue, float64(p.Refused))
	}
	for i, qc := range queueCounters {
		typ := prometheus.CounterValue
		if qc.gauge {
			typ = prometheus.GaugeValue
		}
		for _, q := range r.Queues {
			if v, ok := qc.get(q); ok {
				ch <- prometheus.MustNewConstMetric(c.queue[i], typ, float64(v), strconv.Itoa(int(q.Queue)))
			}
		}
	}
}

// buildRevision is the VCS commit the binary was built from, or "".
func buildRevision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}
