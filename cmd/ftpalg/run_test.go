package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/internal/nfq"
	"github.com/ftpalg/ftpalg/mangle"
	"github.com/ftpalg/ftpalg/mangle/tayga"
	"github.com/ftpalg/ftpalg/test/ftpcap"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseRunFlags(t *testing.T) {
	defaults := runConfig{
		TaygaConf: "t.conf", Queues: uint16(defaultQueues()), Ports: []uint16{21}, Leg: "ipv4", FailOpen: true,
		HoldTimeout: 200 * time.Millisecond, LogFormat: "text", StatusSocket: "/run/ftpalg/ftpalg.sock", Table: "ftpalg",
		StateDir: "auto", KeepRules: "auto", RunDir: "/run/ftpalg",
		JoolIdle: 30 * time.Second, MaxFlows: 131072, JoolOriginMarks: [2]uint32{46000, 46063},
	}
	with := func(f func(c *runConfig)) *runConfig {
		c := defaults
		f(&c)
		return &c
	}
	for _, tc := range []struct {
		args    string
		want    *runConfig
		wantErr string
	}{
		{args: "--tayga-conf t.conf", want: &defaults},
		{args: "--tayga-conf t.conf --queues 4 --queue-num 10 --ports 21,2121 --leg ipv6 --no-rules --fail-open=false --hold-timeout 1s --max-flows 100 --strict --log-level debug --log-format json --status-socket= --table nat64b",
			want: with(func(c *runConfig) {
				c.Table = "nat64b"
				c.Queues, c.QueueNum, c.Ports, c.Leg, c.NoRules, c.FailOpen = 4, 10, []uint16{21, 2121}, "ipv6", true, false
				c.HoldTimeout, c.Strict, c.LogLevel, c.LogFormat, c.StatusSocket = time.Second, true, slog.LevelDebug, "json", ""
				c.MaxFlows = 100
			})},
		{args: "", wantErr: "one of --tayga-conf or --jool-instance is required"},
		{args: "--tayga-conf a --jool-instance b", wantErr: "exclude each other"},
		{args: "--jool-instance j --jool-ports 61000-61999", want: &runConfig{JoolInstance: "j", JoolPorts: [2]uint16{61000, 61999},
			Queues: uint16(defaultQueues()), Ports: []uint16{21}, Leg: "ipv4", FailOpen: true, HoldTimeout: 200 * time.Millisecond, LogFormat: "text",
			StatusSocket: "/run/ftpalg/ftpalg.sock", Table: "ftpalg", StateDir: "auto", KeepRules: "auto", RunDir: "/run/ftpalg", JoolIdle: 30 * time.Second, MaxFlows: 131072,
			JoolOriginMarks: [2]uint32{46000, 46063}}},
		{args: "--tayga-conf t.conf --state-dir= --keep-rules no", want: with(func(c *runConfig) { c.StateDir, c.KeepRules = "", "no" })},
		{args: "--tayga-conf a --keep-rules maybe", wantErr: `--keep-rules "maybe"`},
		{args: "--jool-instance j --jool-ports 61000-61999 --jool-idle-timeout 45s", want: &runConfig{JoolInstance: "j", JoolPorts: [2]uint16{61000, 61999},
			Queues: uint16(defaultQueues()), Ports: []uint16{21}, Leg: "ipv4", FailOpen: true, HoldTimeout: 200 * time.Millisecond, LogFormat: "text",
			StatusSocket: "/run/ftpalg/ftpalg.sock", Table: "ftpalg", StateDir: "auto", KeepRules: "auto", RunDir: "/run/ftpalg", JoolIdle: 45 * time.Second, MaxFlows: 131072,
			JoolOriginMarks: [2]uint32{46000, 46063}}},
		{args: "--tayga-conf t.conf --jool-origin-marks off", want: with(func(c *runConfig) { c.JoolOriginMarks = [2]uint32{} })},
		{args: "--tayga-conf t.conf --jool-origin-marks 0x464600-0x4646ff", want: with(func(c *runConfig) { c.JoolOriginMarks = [2]uint32{0x464600, 0x4646ff} })},
		{args: "--tayga-conf t.conf --jool-origin-marks 7-7", want: with(func(c *runConfig) { c.JoolOriginMarks = [2]uint32{7, 7} })},
		{args: "--tayga-conf a --jool-origin-marks 0-10", wantErr: "mark 0 is Jool's default pool4"},
		{args: "--tayga-conf a --jool-origin-marks 10-9", wantErr: "want LO-HI"},
		{args: "--tayga-conf a --jool-origin-marks 1-4294967296", wantErr: "want LO-HI"},
		{args: "--tayga-conf a --jool-origin-marks 46", wantErr: "want LO-HI"},
		{args: "--jool-instance j --jool-idle-timeout 0s", wantErr: "--jool-idle-timeout 0s: want a positive duration"},
		{args: "--jool-instance j --jool-ports 62000-61999", wantErr: "want LO-HI"},
		{args: "--jool-instance j --jool-ports 2000-3000 --ports 21,2121", wantErr: "--jool-ports 2000-3000 holds FTP control port 2121 (--ports): choose a range without it"},
		{args: "--tayga-conf a --jool-ports 61000-61999", wantErr: "--jool-ports needs --jool-instance"},
		{args: "--tayga-conf a --leg ipv5", wantErr: `--leg "ipv5": want ipv4 or ipv6`},
		{args: "--tayga-conf a --ports 21,0", wantErr: `--ports: bad port "0" (want 1-65535)`},
		{args: "--tayga-conf a --ports 70000", wantErr: `bad port "70000"`},
		{args: "--tayga-conf a --queues 0", wantErr: `--queues: bad count "0" (want 1-65535)`},
		{args: "--tayga-conf a --queue-num 65535 --queues 2", wantErr: "goes past queue 65535"},
		{args: "--tayga-conf t.conf --queue-num 65535", want: with(func(c *runConfig) { c.QueueNum, c.Queues = 65535, 1 })},
		{args: "--tayga-conf a --hold-timeout 0s", wantErr: "want a positive duration"},
		{args: "--tayga-conf a --max-flows 0", wantErr: "--max-flows 0: want a positive number"},
		{args: "--tayga-conf a --log-level loud", wantErr: `--log-level: bad level "loud" (want debug, info, warn or error)`},
		{args: "--tayga-conf a --log-format xml", wantErr: `--log-format "xml"`},
		{args: "--tayga-conf a extra", wantErr: `unexpected argument "extra"`},
		{args: "--bogus", wantErr: "unknown flag --bogus"},
	} {
		t.Run(tc.args, func(t *testing.T) {
			got, err := parseRunFlags(strings.Fields(tc.args), io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

// The daemon's rules carry the peer filter exactly when it maps Jool data
// channels (--jool-ports).
func TestRunConfigPeerFilter(t *testing.T) {
	for _, tc := range []struct {
		args string
		want [2]uint16
	}{
		{"--jool-instance j --jool-ports 61000-61999", [2]uint16{61000, 61999}},
		{"--jool-instance j", [2]uint16{}},
		{"--tayga-conf t.conf", [2]uint16{}},
	} {
		cfg, err := parseRunFlags(strings.Fields(tc.args), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.rules(nil).PeerFilter; got != tc.want {
			t.Errorf("%s: rules PeerFilter %v, want %v", tc.args, got, tc.want)
		}
	}
}

// --help is true: it names every flag, and it is not an error.
func TestRunHelp(t *testing.T) {
	var out bytes.Buffer
	if code := runMain([]string{"--help"}, &out, &out); code != 0 {
		t.Errorf("run --help exited %d", code)
	}
	var cfg runConfig
	n := 0
	newRunFlags(&cfg).VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(out.String(), "\n  --"+f.Name+" ") && !strings.Contains(out.String(), "\n  --"+f.Name+"\n") {
			t.Errorf("help does not mention --%s", f.Name)
		}
	})
	if n < 14 {
		t.Errorf("%d flags, want at least 14", n)
	}
}

// Configuration errors come before anything that needs root, as one line.
func TestRunConfigErrors(t *testing.T) {
	bad := writeFile(t, "tayga.conf", "# lab\nipv4-addr 192.0.2.1\nprefix 2001:db8:64::/129\n")
	for _, tc := range []struct {
		cfg  runConfig
		want string
	}{
		{runConfig{TaygaConf: filepath.Join(t.TempDir(), "missing.conf")}, "--tayga-conf: open "},
		{runConfig{TaygaConf: bad}, bad + ":3: prefix: "},
		// No Jool module on the development machines and in CI.
		{runConfig{JoolInstance: "default"}, "--jool-instance default: "},
	} {
		var logs bytes.Buffer
		err := run(context.Background(), &tc.cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("run(%+v) = %v, want one line starting with %q", tc.cfg, err, tc.want)
		}
	}
	// And runMain prints it once, prefixed, with exit status 1.
	var stderr bytes.Buffer
	if code := runMain([]string{"--tayga-conf", bad}, io.Discard, &stderr); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if got := stderr.String(); !strings.HasPrefix(got, "ftpalg run: "+bad+":3: prefix: ") || strings.Count(got, "\n") != 1 {
		t.Errorf("stderr = %q", got)
	}
}

func TestCapEffHas(t *testing.T) {
	for _, tc := range []struct {
		status    string
		ok, known bool
	}{
		{"Name:\tftpalg\nCapEff:\t000001ffffffffff\n", true, true},
		{"CapEff:\t0000000000001000\n", true, true},
		{"CapEff:\t0000000000000000\n", false, true},
		{"CapEff:\t00000000a80425fb\n", false, true}, // docker's default set
		{"Name:\tx\n", false, false},
		{"CapEff:\tzz\n", false, false},
	} {
		ok, known := capEffHas(tc.status, 12)
		if ok != tc.ok || known != tc.known {
			t.Errorf("capEffHas(%q) = %v, %v; want %v, %v", tc.status, ok, known, tc.ok, tc.known)
		}
	}
}

// The engine handler turns the engine's results into verdicts: every
// packet exactly one, rewritten ones carrying the new bytes. Here an IPv4
// client's PASV to an IPv6 server behind Tayga, on the IPv4 leg.
func TestEngineHandler(t *testing.T) {
	tc, err := tayga.ParseConfig(strings.NewReader(ftpcap.TaygaConf))
	if err != nil {
		t.Fatal(err)
	}
	m := tayga.NewMapper(tc, nil)
	h := newEngineHandler(0, &mangle.Config{Mapper: m}, 200*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))

	c := ftpcap.New(ftpcap.Config{})
	c.Handshake()
	c.Reply("220 ready\r\n", "")
	c.Send(ftpcap.Write{From: ftpcap.Client, Data: "PA", NoAck: true}) // split: held until the line ends
	c.Command("SV\r\n", "")
	c.Reply("229 Entering Extended Passive Mode (|||2000|)\r\n", "")
	pkts := ftpcap.Raw(c.Packets(ftpcap.Session46(40000).V4))

	var got []nfq.Verdict
	v := nfq.NewVerdicts(0, func(b []byte) {
		vs, err := nfq.DecodeVerdicts(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range vs {
			x.Packet = bytes.Clone(x.Packet)
			got = append(got, x)
		}
	})
	for i, p := range pkts {
		h.Packet(uint32(i+1), p, v)
		v.Flush()
	}
	h.Tick(time.Now().Add(time.Hour), v)
	h.Close(v)
	v.Flush()

	seen := map[uint32]int{}
	var modified []string
	for _, x := range got {
		seen[x.ID]++
		if x.Verdict != 1 {
			t.Errorf("verdict %d for packet %d, want accept", x.Verdict, x.ID)
		}
		if x.Packet != nil {
			modified = append(modified, string(tcpPayload4(x.Packet)))
		}
	}
	for i := range pkts {
		if seen[uint32(i+1)] != 1 {
			t.Errorf("packet %d got %d verdicts, want 1", i+1, seen[uint32(i+1)])
		}
	}
	all := strings.Join(modified, "")
	if !strings.Contains(all, "EPSV 2\r\n") || !strings.Contains(all, "227 Entering Passive Mode (203,0,113,10,") {
		t.Errorf("rewritten packets %q: want the PASV as EPSV and the 229 as a 227", modified)
	}
	st, _ := h.Stats()
	if st.Packets != uint64(len(pkts)) || st.Rewrites < 2 {
		t.Errorf("engine stats %+v: want %d packets, 2 rewrites", st, len(pkts))
	}
}

// The daemon's glue around the engine allocates nothing per packet (the
// engine's own steady state is tested in package mangle).
func TestEngineHandlerAllocs(t *testing.T) {
	tc, err := tayga.ParseConfig(strings.NewReader(ftpcap.TaygaConf))
	if err != nil {
		t.Fatal(err)
	}
	h := newEngineHandler(0, &mangle.Config{Mapper: tayga.NewMapper(tc, nil)}, 200*time.Millisecond,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	c := ftpcap.New(ftpcap.Config{})
	c.Handshake()
	c.Reply("220 ready\r\n", "")
	c.Command("NOOP\r\n", "")
	c.Reply("200 ok\r\n", "")
	pkts := ftpcap.Raw(c.Packets(ftpcap.Session46(40000).V4))
	v := nfq.NewVerdicts(0, func([]byte) {})
	for i, p := range pkts {
		h.Packet(uint32(i), p, v)
	}
	v.Flush()
	last := pkts[len(pkts)-1]
	id := uint32(100)
	allocs := testing.AllocsPerRun(200, func() {
		id++
		h.Packet(id, last, v)
		v.Flush()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per packet, want 0", allocs)
	}
}

// tcpPayload4 is the TCP payload of an IPv4 packet.
func tcpPayload4(p []byte) []byte {
	ihl := int(p[0]&0xf) * 4
	return p[ihl+int(p[ihl+12]>>4)*4:]
}

func TestStatusSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ftpalg.sock")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := listenStatus(path, log)
	if err != nil {
		t.Fatal(err)
	}
	rep := statusReport{Version: "test", PID: 1, Translator: "tayga", Leg: "ipv4", Ports: []uint16{21},
		Queues: []queueStatus{
			{Queue: 0, NFQ: nfq.Stats{Packets: 10, Verdicts: 10}, Engine: mangle.Stats{Packets: 10, Rewrites: 2}, Flows: 1},
			{Queue: 1, NFQ: nfq.Stats{Packets: 5, Verdicts: 5, ENOBUFS: 1}, Kernel: &nfq.KernelStats{QueueDrops: 3}},
		}}
	s.serve(func() statusReport { return rep }, nil)

	if _, err := listenStatus(path, log); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second listener: %v, want in use", err)
	}

	var out, errOut bytes.Buffer
	if code := statusMain([]string{"--socket", path}, &out, &errOut); code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut.String())
	}
	text := out.String()
	for _, want := range []string{"queue 0", "queue 1", "total", "packets queued", "lines rewritten", "receive buffer overruns", "dropped: queue full"} {
		if !strings.Contains(text, want) {
			t.Errorf("status text lacks %q:\n%s", want, text)
		}
	}
	if !strings.Contains(text, "15") {
		t.Errorf("status text lacks the total of 15 packets:\n%s", text)
	}
	if strings.Contains(text, "nfqueue.") || strings.Contains(text, "ENOBUFS") || strings.Contains(text, "engine.") {
		t.Errorf("status text shows Go field names:\n%s", text)
	}

	out.Reset()
	if code := statusMain([]string{"--socket", path, "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("status --json: exit %d", code)
	}
	var back statusReport
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rep, back); diff != "" {
		t.Errorf("json round trip (-want +got):\n%s", diff)
	}
	if tot := rep.total(); tot.NFQ.Packets != 15 || tot.NFQ.ENOBUFS != 1 || tot.Engine.Rewrites != 2 || tot.Flows != 1 {
		t.Errorf("total %+v", tot)
	}

	s.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}
	errOut.Reset()
	if code := statusMain([]string{"--socket", path}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "no daemon answers") {
		t.Errorf("status without daemon: exit %d, %q", code, errOut.String())
	}
}

func TestMetrics(t *testing.T) {
	rep := statusReport{Version: "v1", Translator: "tayga", Leg: "ipv4", Started: time.Unix(1700000000, 0),
		Queues: []queueStatus{
			{Queue: 0, NFQ: nfq.Stats{Packets: 10, ENOBUFS: 2}, Engine: mangle.Stats{NotTCP: 3}, Flows: 4},
			{Queue: 1, Kernel: &nfq.KernelStats{QueueDrops: 5}},
		}}
	rep.Table, rep.Rules, rep.Restores = "ftpalg", true, 2
	rep.Pinholes = &pinholeStats{Created: 7, Failed: 1}
	var notReady error
	m, err := listenMetrics("127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)), func() statusReport { return rep },
		func() error { return notReady })
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + m.ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	notReady = errors.New("rules not installed")
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "rules not installed") {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	resp, err := http.Get("http://" + m.ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`ftpalg_info{leg="ipv4",table="ftpalg",translator="tayga"} 1`,
		"ftpalg_start_time_seconds 1.7e+09",
		"ftpalg_rules_installed 1",
		"ftpalg_rules_restored_total 2",
		"ftpalg_pinholes_created_total 7",
		"ftpalg_pinholes_failed_total 1",
		"# HELP ftpalg_kernel_queue_drops_total Packets the kernel dropped, or accepted unchanged with fail-open, because the queue was full.",
		"# TYPE go_goroutines gauge",
		"# TYPE process_cpu_seconds_total counter",
		"# TYPE ftpalg_nfqueue_packets_total counter",
		`ftpalg_nfqueue_packets_total{queue="0"} 10`,
		`ftpalg_nfqueue_enobufs_total{queue="0"} 2`,
		`ftpalg_engine_not_tcp_total{queue="0"} 3`,
		`ftpalg_flows{queue="0"} 4`,
		`ftpalg_kernel_queue_drops_total{queue="1"} 5`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(text, `ftpalg_kernel_waiting{queue="0"}`) {
		t.Error("kernel counters of a queue the kernel did not list")
	}
	if t.Failed() {
		t.Log(text)
	}
}

// A socket file left by a daemon that died is replaced.
func TestStatusSocketStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := listenStatus(path, log)
	if err != nil {
		t.Fatal(err)
	}
	s.ln.SetUnlinkOnClose(false)
	s.Close()
	s2, err := listenStatus(path, log)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	s2.Close()
}

func TestDefaultQueues(t *testing.T) {
	if n := defaultQueues(); n < 1 || n > 4 || n > runtime.NumCPU() {
		t.Errorf("defaultQueues() = %d with %d CPUs", n, runtime.NumCPU())
	}
}

// A takeover binds the queue range the running daemon does not use.
func TestPickQueues(t *testing.T) {
	for _, tc := range []struct {
		num, n       uint16 // --queue-num, --queues
		first, count uint16 // the running daemon's
		want         uint16
		wantErr      bool
	}{
		{num: 0, n: 2, first: 0, count: 2, want: 2},
		{num: 0, n: 2, first: 2, count: 2, want: 0},
		{num: 10, n: 1, first: 10, count: 1, want: 11},
		{num: 10, n: 1, first: 11, count: 1, want: 10},
		{num: 0, n: 2, first: 5, count: 1, want: 0},       // another range: ours is free
		{num: 0, n: 2, first: 1, count: 2, wantErr: true}, // 1-2 overlaps 0-1 and 2-3
		{num: 0, n: 2, first: 0, count: 4, wantErr: true},
	} {
		cfg := &runConfig{QueueNum: tc.num, Queues: tc.n}
		err := cfg.pickQueues(tc.first, tc.count)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%+v: got queues %d onwards, want an error", tc, cfg.firstQueue())
			}
			continue
		}
		if err != nil || cfg.firstQueue() != tc.want {
			t.Errorf("%+v: got %d, %v; want %d", tc, cfg.firstQueue(), err, tc.want)
		}
	}
}
