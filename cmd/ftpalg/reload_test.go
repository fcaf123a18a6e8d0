package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ftpalg/ftpalg/mangle"
)

// lockedBuffer is a bytes.Buffer for a logger other goroutines write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const reloadTayga = "tun-device nat64\nipv4-addr 192.168.255.1\nprefix 2001:db8:64::/96\nmap 203.0.113.10 2001:db8:1::10\n"

// reloadSetup writes a tayga.conf (without a dynamic pool: no conntrack
// needed) and a config file naming it, and returns the daemon's pieces
// as run builds them.
func reloadSetup(t *testing.T, conf string) (args []string, taygaConf, confFile string, cfg *runConfig, dm *daemonMapper, h *engineHandler, logs *lockedBuffer) {
	t.Helper()
	dir := t.TempDir()
	taygaConf = filepath.Join(dir, "tayga.conf")
	confFile = filepath.Join(dir, "ftpalg.conf")
	writeTo(t, taygaConf, reloadTayga)
	writeTo(t, confFile, "tayga-conf "+taygaConf+"\nno-pinholes\n"+conf)
	args = []string{"--config", confFile}
	cfg, err := parseRunFlags(args, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs = &lockedBuffer{}
	log := newLogger(logs, cfg)
	if dm, err = loadMapper(cfg, log); err != nil {
		t.Fatal(err)
	}
	h = newEngineHandler(0, &mangle.Config{Mapper: dm, ServerPorts: cfg.Ports}, cfg.HoldTimeout, log)
	return args, taygaConf, confFile, cfg, dm, h, logs
}

func writeTo(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A reload applies the log level, the hold timeout and the translator's
// new configuration, names the flags that need a restart, and keeps
// everything on a bad file.
func TestReload(t *testing.T) {
	args, taygaConf, confFile, cfg, dm, h, logs := reloadSetup(t, "hold-timeout 200ms\n")
	defer logLevel.Set(slog.LevelInfo)
	r := &reloader{args: args, cfg: cfg, mapper: dm, handlers: []*engineHandler{h}, log: newLogger(logs, cfg), notify: func(string) {}}

	server := netip.MustParseAddrPort("203.0.113.20:21")
	client := netip.MustParseAddrPort("192.168.255.7:40000")
	if _, ok := dm.Classify(client, server); ok {
		t.Fatal("203.0.113.20 is not mapped yet, but Classify knows it")
	}

	// The flags that may change, one that may not, and a new map.
	// (5: more than the default, which is at most 4.)
	oldQueues := r.cfg.Queues
	writeTo(t, confFile, "tayga-conf "+taygaConf+"\nno-pinholes\nhold-timeout 1s\nlog-level debug\nqueues 5\n")
	writeTo(t, taygaConf, reloadTayga+"map 203.0.113.20 2001:db8:1::20\n")
	if err := r.reload(); err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(h.hold.Load()); got != time.Second {
		t.Errorf("hold timeout %v after reload, want 1s", got)
	}
	if got := logLevel.Level(); got != slog.LevelDebug {
		t.Errorf("log level %v after reload, want debug", got)
	}
	if _, ok := dm.Classify(client, server); !ok {
		t.Error("the new map 203.0.113.20 is not used after the reload")
	}
	for _, want := range []string{
		`msg="configuration reloaded" changed="[hold-timeout log-level]" translator="tayga configuration re-read: maps 1 -> 2; the translator's addresses changed: the rules' scope (set translated) follows at the next restart"`,
		`msg="configuration reloaded, but these flags keep their old value until a restart" flags=[queues]`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
	if r.cfg.Queues != oldQueues {
		t.Errorf("queues %d in force after reload, want the old %d", r.cfg.Queues, oldQueues)
	}

	// A bad config file, then a bad tayga.conf: the old settings stay.
	writeTo(t, confFile, "tayga-conf "+taygaConf+"\nno-pinholes\nhold-timeout 0s\n")
	if err := r.reload(); err == nil || !strings.Contains(err.Error(), "--hold-timeout 0s: want a positive duration") {
		t.Errorf("reload with hold-timeout 0s: %v", err)
	}
	writeTo(t, confFile, "tayga-conf "+taygaConf+"\nno-pinholes\nports 0\n")
	if err := r.reload(); err == nil || !strings.Contains(err.Error(), `ports: bad port "0"`) {
		t.Errorf("reload with ports 0: %v", err)
	}
	writeTo(t, confFile, "tayga-conf "+taygaConf+"\nno-pinholes\nhold-timeout 2s\n")
	writeTo(t, taygaConf, "prefix 2001:db8:64::/129\n")
	if err := r.reload(); err == nil || !strings.Contains(err.Error(), "translator configuration not reloaded") {
		t.Errorf("reload with a bad tayga.conf: %v", err)
	}
	if got := time.Duration(h.hold.Load()); got != time.Second {
		t.Errorf("hold timeout %v after failed reloads, want the old 1s", got)
	}
	if _, ok := dm.Classify(client, server); !ok {
		t.Error("a failed reload dropped the mapping in force")
	}
}

// The systemd side: READY once, watchdog pings while the queue loops
// tick, RELOADING/READY around a SIGHUP reload, STOPPING at the end.
func TestServiceLoop(t *testing.T) {
	f := newFakeSystemd(t, filepath.Join(t.TempDir(), "notify"))
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", "")
	args, _, _, cfg, dm, h, _ := reloadSetup(t, "")
	hup := make(chan os.Signal, 1)
	cfg.Args, cfg.Reload = args, hup
	h.lastTick.Store(time.Now().Add(time.Hour).UnixNano()) // alive throughout
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		serviceLoop(ctx, cfg, dm, []*engineHandler{h}, slog.New(slog.DiscardHandler), nil)
	}()
	// With a watchdog, the first ping goes with READY=1: a daemon that took
	// over must not leave the watchdog waiting (handover.go).
	if got := f.next(); got != "READY=1\nSTATUS=running\nWATCHDOG=1" {
		t.Errorf("first notification %q, want READY=1 and WATCHDOG=1", got)
	}
	f.waitFor("WATCHDOG=1")
	hup <- os.Interrupt // any value: the channel is the SIGHUP one
	f.waitFor("RELOADING=1")
	f.waitFor("READY=1")
	cancel()
	<-done
	f.waitFor("STOPPING=1")
}

func TestAlive(t *testing.T) {
	now := time.Now()
	a, b := &engineHandler{}, &engineHandler{}
	a.lastTick.Store(now.UnixNano())
	b.lastTick.Store(now.Add(-time.Minute).UnixNano())
	if !alive([]*engineHandler{a}, now.Add(-time.Second)) || alive([]*engineHandler{a, b}, now.Add(-time.Second)) {
		t.Error("alive: want true for a loop that ticked, false when one has not")
	}
}

func TestConfigChanges(t *testing.T) {
	old := &runConfig{TaygaConf: "a", Queues: 1, Ports: []uint16{21}, HoldTimeout: time.Second}
	cur := &runConfig{TaygaConf: "b", Queues: 2, Ports: []uint16{21, 2121}, HoldTimeout: time.Second, Strict: true, LogLevel: slog.LevelDebug}
	apply, restart := configChanges(old, cur)
	if diff := cmp.Diff([]string{"tayga-conf", "log-level"}, apply); diff != "" {
		t.Errorf("apply (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"queues", "ports", "strict"}, restart); diff != "" {
		t.Errorf("restart (-want +got):\n%s", diff)
	}
	if flagName("HoldTimeout") != "hold-timeout" || flagName("Leg") != "leg" {
		t.Error("flagName")
	}
}
