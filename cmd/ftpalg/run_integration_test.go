//go:build linux && integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/internal/testenv"
	"github.com/ftpalg/ftpalg/test/ftpcap"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The daemon's whole life in a namespace: rules installed, packets through
// two queues, status answered, a second daemon refused without touching the
// first one's rules, and on shutdown the rules and the socket removed.
func TestIntegrationRun(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	ns := testenv.NewNetNS(t, "ftpalg-run")
	conf := writeFile(t, "tayga.conf", ftpcap.TaygaConf)
	sock := filepath.Join(t.TempDir(), "ftpalg.sock")
	cfg, err := parseRunFlags([]string{"--tayga-conf", conf, "--queues", "2", "--queue-num", "20",
		"--status-socket", sock, "--log-level", "debug"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := testenv.Go(ns.FD, func() error { return run(ctx, cfg, log) })

	var rep *statusReport
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if rep, err = readStatus(sock); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run ended early: %v\n%s", err, logs.String())
		default:
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("daemon did not come up: %v\n%s", err, logs.String())
		}
	}
	if len(rep.Queues) != 2 || rep.Queues[0].Queue != 20 || rep.Queues[1].Queue != 21 {
		t.Errorf("status queues %+v, want 20 and 21", rep.Queues)
	}
	nftList := func() (string, error) {
		out, err := exec.Command("ip", "netns", "exec", ns.Name, "nft", "list", "table", "ip", "ftpalg").CombinedOutput()
		return string(out), err
	}
	if out, err := nftList(); err != nil || !strings.Contains(out, "dport 21") {
		t.Fatalf("rules not installed: %v\n%s", err, out)
	}

	// A second daemon on the same table, then one on another table but
	// the same queues, stops with one clear line, and leaves the first
	// one's rules alone.
	for _, tc := range []struct{ table, want string }{
		{"ftpalg", "uses table/ftpalg in this network namespace"},
		{"other", "uses queue/20 in this network namespace"},
	} {
		cfg2 := *cfg
		cfg2.Table = tc.table
		cfg2.StatusSocket = filepath.Join(t.TempDir(), "second.sock")
		err = <-testenv.Go(ns.FD, func() error { return run(context.Background(), &cfg2, log) })
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), fmt.Sprintf("(pid %d)", os.Getpid())) ||
			strings.Contains(err.Error(), "\n") {
			t.Errorf("second daemon on table %s: %v, want one line with %q and the first one's pid", tc.table, err, tc.want)
		}
		if out, err := nftList(); err != nil {
			t.Fatalf("second daemon removed the rules: %v\n%s", err, out)
		}
	}

	// A second instance with its own table and queues runs beside the
	// first; when it stops, it removes its own table only.
	{
		cfg3 := *cfg
		cfg3.Table, cfg3.QueueNum, cfg3.Queues = "second", 30, 1
		cfg3.StatusSocket = filepath.Join(t.TempDir(), "third.sock")
		ctx3, cancel3 := context.WithCancel(context.Background())
		done3 := testenv.Go(ns.FD, func() error { return run(ctx3, &cfg3, log) })
		testenv.Eventually(t, 10*time.Second, "the second instance's status socket", func() bool {
			r, err := readStatus(cfg3.StatusSocket)
			return err == nil && r.Rules
		})
		tables := testenv.Run(t, "ip", "netns", "exec", ns.Name, "nft", "list", "tables")
		if !strings.Contains(tables, "table ip ftpalg\n") || !strings.Contains(tables, "table ip second\n") {
			t.Errorf("two instances: tables\n%s", tables)
		}
		cancel3()
		if err := <-done3; err != nil {
			t.Errorf("second instance: %v", err)
		}
		tables = testenv.Run(t, "ip", "netns", "exec", ns.Name, "nft", "list", "tables")
		if !strings.Contains(tables, "table ip ftpalg\n") || strings.Contains(tables, "second") {
			t.Errorf("after the second instance stopped: tables\n%s", tables)
		}
	}

	// FTP-looking traffic on port 21 flows through the queues: Tayga's
	// own address is in the rules' scope, and a connection from it to
	// itself is not translated, so it passes unchanged.
	const conns = 8
	const self = "192.168.255.1"
	if out, err := exec.Command("ip", "-n", ns.Name, "addr", "add", self+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	err = <-testenv.Go(ns.FD, func() error {
		ln, err := net.Listen("tcp", self+":21")
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					r := bufio.NewReader(c)
					c.Write([]byte("220 ready\r\n"))
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							return
						}
						fmt.Fprintf(c, "500 echo %s", line)
					}
				}()
			}
		}()
		for i := range conns {
			c, err := net.DialTimeout("tcp", self+":21", 3*time.Second)
			if err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			r := bufio.NewReader(c)
			if l, err := r.ReadString('\n'); err != nil || l != "220 ready\r\n" {
				return fmt.Errorf("greeting %q, %v", l, err)
			}
			want := fmt.Sprintf("PASV %d\r\n", i)
			c.Write([]byte(want))
			if l, err := r.ReadString('\n'); err != nil || l != "500 echo "+want {
				return fmt.Errorf("echo %q, %v", l, err)
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("traffic through the daemon: %v\n%s", err, logs.String())
	}
	// The counters settle within an engine tick: poll the status.
	var tot queueStatus
	testenv.Eventually(t, 10*time.Second, "every packet through the queues has its verdict and went through the engine", func() bool {
		if rep, err = readStatus(sock); err != nil {
			t.Fatal(err)
		}
		tot = rep.total()
		return tot.NFQ.Packets >= conns*6 && tot.NFQ.Verdicts == tot.NFQ.Packets && tot.Engine.Packets == tot.NFQ.Packets
	})
	t.Logf("after %d connections: nfqueue %+v", conns, tot.NFQ)
	if tot.NFQ.Packets < conns*6 || tot.NFQ.Verdicts != tot.NFQ.Packets || tot.Engine.Packets != tot.NFQ.Packets {
		t.Errorf("counters %+v / engine %+v: want >= %d packets, each with a verdict and through the engine",
			tot.NFQ, tot.Engine, conns*6)
	}
	if tot.Engine.Untranslated == 0 {
		t.Errorf("engine %+v: want the loopback flows counted untranslated", tot.Engine)
	}

	// 'ftpalg sessions' lists a control connection while it is open.
	err = <-testenv.Go(ns.FD, func() error {
		ln, err := net.Listen("tcp", self+":21")
		if err != nil {
			return err
		}
		defer ln.Close()
		listed := make(chan struct{})
		defer close(listed)
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("220 ready\r\n"))
				<-listed // held open while listed
				c.Close()
			}
		}()
		c, err := net.DialTimeout("tcp", self+":21", 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			return err
		}
		var sr sessionsReport
		if err := askDaemon(sock, "sessions", &sr); err != nil {
			return err
		}
		for _, s := range sr.Sessions {
			if s.Client.String() == c.LocalAddr().String() && s.Server.String() == self+":21" && !s.Translated && s.State == "open" {
				return nil
			}
		}
		return fmt.Errorf("sessions %+v: want the open connection from %v", sr, c.LocalAddr())
	})
	if err != nil {
		t.Errorf("ftpalg sessions: %v", err)
	}

	// An operator flushes the ruleset (systemctl reload nftables on
	// Debian): the table is back within a second, status says so, and
	// packets are queued again.
	if out, err := exec.Command("ip", "netns", "exec", ns.Name, "nft", "flush", "ruleset").CombinedOutput(); err != nil {
		t.Fatalf("nft flush ruleset: %v: %s", err, out)
	}
	flushed := time.Now()
	for {
		if rep, err = readStatus(sock); err != nil {
			t.Fatal(err)
		}
		if rep.Restores == 1 && rep.Rules {
			break
		}
		if time.Since(flushed) > 5*time.Second {
			t.Fatalf("rules not restored after nft flush ruleset: %+v\n%s", rep, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("restored and reported within %v of nft flush ruleset", time.Since(flushed))
	if d := time.Since(flushed); d > time.Second {
		t.Errorf("restored after %v, want within a second", d)
	}
	if out, err := nftList(); err != nil || !strings.Contains(out, "dport 21") {
		t.Fatalf("rules not back: %v\n%s", err, out)
	}
	before := rep.total().NFQ.Packets
	err = <-testenv.Go(ns.FD, func() error {
		ln, err := net.Listen("tcp", self+":21")
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("220 ready\r\n"))
				c.Close()
			}
		}()
		c, err := net.DialTimeout("tcp", self+":21", 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		_, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		t.Fatalf("connection after the restore: %v", err)
	}
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if rep, err = readStatus(sock); err != nil {
			t.Fatal(err)
		}
		if rep.total().NFQ.Packets > before {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("no packet queued after the restore (%d before, %d now)", before, rep.total().NFQ.Packets)
		}
	}
	if !strings.Contains(logs.String(), "restored") {
		t.Errorf("the restore was not logged:\n%s", logs.String())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
	if out, err := nftList(); err == nil {
		t.Errorf("rules left after shutdown:\n%s", out)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("status socket left after shutdown: %v", err)
	}
	if !strings.Contains(logs.String(), "ftpalg stopped") {
		t.Errorf("no summary line in the logs:\n%s", logs.String())
	}
}
