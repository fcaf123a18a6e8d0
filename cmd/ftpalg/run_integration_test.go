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

	// A second daemon on the same queues stops with a clear error, and
	// leaves the first one's rules alone.
	cfg2 := *cfg
	cfg2.StatusSocket = filepath.Join(t.TempDir(), "second.sock")
	err = <-testenv.Go(ns.FD, func() error { return run(context.Background(), &cfg2, log) })
	if err == nil || !strings.Contains(err.Error(), "queue in use") {
		t.Errorf("second daemon: %v, want queue in use", err)
	}
	if out, err := nftList(); err != nil {
		t.Fatalf("second daemon removed the rules: %v\n%s", err, out)
	}

	// FTP-looking traffic on port 21 flows through the queues: 127.0.0.1
	// is not translated by this Tayga, so it passes unchanged.
	const conns = 8
	err = <-testenv.Go(ns.FD, func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:21")
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
			c, err := net.DialTimeout("tcp", "127.0.0.1:21", 3*time.Second)
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
