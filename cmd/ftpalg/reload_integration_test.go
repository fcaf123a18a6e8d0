//go:build linux && integration

package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/test/ftpcap"
	"github.com/ftpalg/ftpalg/test/testenv"
)

// The daemon as systemd runs it: a process started with --config and
// NOTIFY_SOCKET, in a namespace of its own. READY once its table is in;
// SIGHUP reloads (the same process goes on, what changed is logged, a bad
// file is refused), SIGTERM ends it with status 0 and nothing left.
func TestIntegrationRunSIGHUP(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	ns := testenv.NewNetNS(t, "ftpalg-hup").Name
	dir := t.TempDir()
	tconf := filepath.Join(dir, "tayga.conf")
	writeTo(t, tconf, ftpcap.TaygaConf)
	sock := filepath.Join(dir, "ftpalg.sock")
	conf := filepath.Join(dir, "ftpalg.conf")
	base := "# test\ntayga-conf " + tconf + "\nqueue-num 31\nstatus-socket " + sock + "\n"
	writeTo(t, conf, base+"queues 1\n") // not the default (one queue per CPU), so that 2 is a change
	f := newFakeSystemd(t, filepath.Join(dir, "notify"))

	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestRulesHelperProcess$", "--", "run", "--config", conf)
	cmd.Env = append(os.Environ(), "FTPALG_RULES_HELPER=1")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
			exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "ip", "ftpalg").Run()
		}
	}()
	// The logs come through a pipe: poll (the deadline only ends a hang).
	waitLog := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("logs lack %q:\n%s", want, logs.String())
			}
		}
	}
	table := func() bool {
		return exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "ip", "ftpalg").Run() == nil
	}

	f.waitFor("READY=1")
	if !table() {
		t.Fatalf("READY=1 before the table is in; logs:\n%s", logs.String())
	}

	// A change that applies, one that needs a restart.
	writeTo(t, conf, base+"hold-timeout 1s\nqueues 2\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	f.waitFor("RELOADING=1")
	f.waitFor("READY=1")
	waitLog(`msg="configuration reloaded" changed=[hold-timeout] translator="tayga configuration re-read: unchanged"`)
	waitLog(`msg="configuration reloaded, but these flags keep their old value until a restart" flags=[queues]`)

	// A bad file: refused, the daemon goes on.
	writeTo(t, conf, base+"ports 0\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	f.waitFor("RELOADING=1")
	f.waitFor("READY=1")
	waitLog(`configuration not reloaded, the old one stays: --config ` + conf + `: ports: bad port \"0\"`)
	select {
	case err := <-exited:
		t.Fatalf("the daemon exited after SIGHUP: %v; logs:\n%s", err, logs.String())
	default:
	}
	if !table() {
		t.Error("the table is gone after the reloads")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	f.waitFor("STOPPING=1")
	if err := <-exited; err != nil {
		t.Errorf("exit after SIGTERM: %v; logs:\n%s", err, logs.String())
	}
	if table() {
		t.Error("the table is still there after SIGTERM")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("status socket left behind: %v", err)
	}
}
