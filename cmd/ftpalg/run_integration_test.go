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
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftpalg/ftpalg/test/ftpcap"
)

func needRootOrFail(t *testing.T, tools ...string) {
	t.Helper()
	ci := os.Getenv("CI") != ""
	if os.Geteuid() != 0 {
		if ci {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if ci {
				t.Fatalf("needs %s", tool)
			}
			t.Skipf("needs %s", tool)
		}
	}
}

// testNetNS makes a network namespace with loopback up, removed at cleanup.
func testNetNS(t *testing.T) (name string, fd int) {
	t.Helper()
	name = fmt.Sprintf("ftpalg-run-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	return name, fd
}

// inNetNS runs f on a goroutine locked to a thread inside the namespace;
// the thread exits with the goroutine and is never reused.
func inNetNS(fd int, f func() error) <-chan error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return errc
}

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
	needRootOrFail(t, "ip", "nft")
	ns, fd := testNetNS(t)
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
	done := inNetNS(fd, func() error { return run(ctx, cfg, log) })

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
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "ip", "ftpalg").CombinedOutput()
		return string(out), err
	}
	if out, err := nftList(); err != nil || !strings.Contains(out, "dport 21") {
		t.Fatalf("rules not installed: %v\n%s", err, out)
	}

	// A second daemon on the same queues stops with a clear error, and
	// leaves the first one's rules alone.
	cfg2 := *cfg
	cfg2.StatusSocket = filepath.Join(t.TempDir(), "second.sock")
	err = <-inNetNS(fd, func() error { return run(context.Background(), &cfg2, log) })
	if err == nil || !strings.Contains(err.Error(), "queue in use") {
		t.Errorf("second daemon: %v, want queue in use", err)
	}
	if out, err := nftList(); err != nil {
		t.Fatalf("second daemon removed the rules: %v\n%s", err, out)
	}

	// FTP-looking traffic on port 21 flows through the queues: 127.0.0.1
	// is not translated by this Tayga, so it passes unchanged.
	const conns = 8
	err = <-inNetNS(fd, func() error {
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
	time.Sleep(100 * time.Millisecond) // an engine tick
	if rep, err = readStatus(sock); err != nil {
		t.Fatal(err)
	}
	tot := rep.total()
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
