package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/internal/nfq"
	"github.com/ftpalg/ftpalg/mangle"
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
	Rules      bool          `json:"rules_installed"`
	Queues     []queueStatus `json:"queues"`
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

func report(cfg *runConfig, started time.Time, queues []*nfq.Queue, hs []*engineHandler) statusReport {
	r := statusReport{
		Version:    version,
		PID:        os.Getpid(),
		Started:    started.UTC().Truncate(time.Second),
		Uptime:     time.Since(started).Round(time.Second).String(),
		Translator: cfg.translator(),
		Conf:       cfg.TaygaConf + cfg.JoolInstance,
		Leg:        cfg.Leg,
		Ports:      cfg.Ports,
		Rules:      !cfg.NoRules,
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

func (s *statusServer) serve(get func() statusReport) {
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
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if err := json.NewEncoder(c).Encode(get()); err != nil {
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
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("no daemon answers on %s (is 'ftpalg run' running?)", path)
		}
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var r statusReport
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return &r, nil
}

func statusMain(args []string, stdout, stderr io.Writer) int {
	fl := newCmdFlags("status", "Usage: ftpalg status [--socket PATH] [--json]\n\nPrints the counters of a running 'ftpalg run', per queue.\n",
		exitStatus("the daemon could not be reached (not running, another --socket, permissions)"))
	path := fl.String("socket", defaultStatusSocket, "the daemon's status socket `path` (ftpalg run --status-socket)")
	asJSON := fl.Bool("json", false, "print the report as JSON")
	if err := fl.parse(args, stdout); err != nil {
		return usageExit("status", err, stderr)
	}
	if fl.NArg() > 0 {
		return usageExit("status", usagef("unexpected argument %q", fl.Arg(0)), stderr)
	}
	r, err := readStatus(*path)
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
	return 0
}

// printStatus prints a report as text: a header, then one column of
// counters per queue (and a total when there are several).
func printStatus(w io.Writer, r *statusReport) {
	fmt.Fprintf(w, "ftpalg %s, pid %d, up %s (since %s)\n", r.Version, r.PID, r.Uptime, r.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "translator %s (%s), leg %s, ports %v, rules installed: %v\n\n", r.Translator, r.Conf, r.Leg, r.Ports, r.Rules)
	cols := r.Queues
	head := []string{"counter"}
	for _, q := range r.Queues {
		head = append(head, fmt.Sprintf("queue %d", q.Queue))
	}
	if len(r.Queues) > 1 {
		cols = append(cols, r.total())
		head = append(head, "total")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	row := func(name string, get func(q queueStatus) string) {
		cells := []string{name}
		for _, q := range cols {
			cells = append(cells, get(q))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	row("flows", func(q queueStatus) string { return fmt.Sprint(q.Flows) })
	counterRows(row, "nfqueue.", func(q queueStatus) reflect.Value { return reflect.ValueOf(q.NFQ) })
	if len(r.Queues) > 0 && r.Queues[0].Kernel != nil {
		row("kernel.Waiting", func(q queueStatus) string {
			return kernelField(q, func(k *nfq.KernelStats) uint32 { return k.Waiting })
		})
		row("kernel.QueueDrops", func(q queueStatus) string {
			return kernelField(q, func(k *nfq.KernelStats) uint32 { return k.QueueDrops })
		})
		row("kernel.SocketDrops", func(q queueStatus) string {
			return kernelField(q, func(k *nfq.KernelStats) uint32 { return k.SocketDrops })
		})
	}
	counterRows(row, "engine.", func(q queueStatus) reflect.Value { return reflect.ValueOf(q.Engine) })
	tw.Flush()
}

func kernelField(q queueStatus, f func(*nfq.KernelStats) uint32) string {
	if q.Kernel == nil {
		return "-"
	}
	return fmt.Sprint(f(q.Kernel))
}

// counterRows adds one row per field of the counters struct get returns.
func counterRows(row func(string, func(queueStatus) string), prefix string, get func(queueStatus) reflect.Value) {
	t := get(queueStatus{}).Type()
	for i := range t.NumField() {
		row(prefix+t.Field(i).Name, func(q queueStatus) string { return fmt.Sprint(get(q).Field(i).Interface()) })
	}
}

// metricsServer serves the daemon's report in the Prometheus text
// exposition format (version 0.0.4) on /metrics, with the standard library
// only.
type metricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

func listenMetrics(addr string, log *slog.Logger, get func() statusReport) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writeMetrics(w, get())
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

// writeMetrics writes every counter of the report, one family per field:
// ftpalg_nfqueue_<field>_total, ftpalg_engine_<field>_total and
// ftpalg_kernel_* with a queue label, ftpalg_flows as a gauge.
func writeMetrics(w io.Writer, r statusReport) {
	fmt.Fprintf(w, "# HELP ftpalg_info The running daemon.\n# TYPE ftpalg_info gauge\n")
	fmt.Fprintf(w, "ftpalg_info{version=%q,translator=%q,leg=%q} 1\n", r.Version, r.Translator, r.Leg)
	fmt.Fprintf(w, "# HELP ftpalg_start_time_seconds When the daemon started.\n# TYPE ftpalg_start_time_seconds gauge\n")
	fmt.Fprintf(w, "ftpalg_start_time_seconds %d\n", r.Started.Unix())
	family := func(name, typ, help string, value func(q queueStatus) (uint64, bool)) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, q := range r.Queues {
			if v, ok := value(q); ok {
				fmt.Fprintf(w, "%s{queue=\"%d\"} %d\n", name, q.Queue, v)
			}
		}
	}
	family("ftpalg_flows", "gauge", "Control connections the engine follows.",
		func(q queueStatus) (uint64, bool) { return uint64(q.Flows), true })
	counters := func(prefix, what string, get func(q queueStatus) reflect.Value) {
		t := get(queueStatus{}).Type()
		for i := range t.NumField() {
			f := t.Field(i)
			family(prefix+snake(f.Name)+"_total", "counter", what+" counter "+f.Name+".",
				func(q queueStatus) (uint64, bool) { return get(q).Field(i).Uint(), true })
		}
	}
	counters("ftpalg_nfqueue_", "Queue loop", func(q queueStatus) reflect.Value { return reflect.ValueOf(q.NFQ) })
	counters("ftpalg_engine_", "Engine", func(q queueStatus) reflect.Value { return reflect.ValueOf(q.Engine) })
	kernel := func(f func(*nfq.KernelStats) uint32) func(q queueStatus) (uint64, bool) {
		return func(q queueStatus) (uint64, bool) {
			if q.Kernel == nil {
				return 0, false
			}
			return uint64(f(q.Kernel)), true
		}
	}
	family("ftpalg_kernel_waiting", "gauge", "Packets waiting in the kernel for a verdict.",
		kernel(func(k *nfq.KernelStats) uint32 { return k.Waiting }))
	family("ftpalg_kernel_queue_drops_total", "counter", "Packets the kernel dropped or bypassed because the queue was full.",
		kernel(func(k *nfq.KernelStats) uint32 { return k.QueueDrops }))
	family("ftpalg_kernel_socket_drops_total", "counter", "Packets the kernel could not hand to the daemon.",
		kernel(func(k *nfq.KernelStats) uint32 { return k.SocketDrops }))
}

// snake turns a Go field name into a metric name part: "VerdictErrors" ->
// "verdict_errors", "ENOBUFS" -> "enobufs", "NotTCP" -> "not_tcp".
func snake(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		upper := unicode.IsUpper(r)
		if upper && i > 0 && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
