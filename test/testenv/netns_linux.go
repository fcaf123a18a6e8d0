package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// NetNS is a network namespace made for one test.
type NetNS struct {
	Name string
	FD   int // open on /run/netns/Name, for netlink's Config.NetNS
}

var nsSeq atomic.Int32

// NewNetNS makes a network namespace named prefix-PID-N with its loopback
// up, and removes it when the test ends (a failure to remove it fails the
// test). Names carry the process id so that parallel runs do not collide.
func NewNetNS(t testing.TB, prefix string) NetNS {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), nsSeq.Add(1))
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	ns := NetNS{Name: name, FD: fd}
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside the namespace (ip netns exec) and returns its
// combined output; it fails t if the command fails.
func (n NetNS) Run(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Do runs f on a thread inside the namespace and fails t if f fails. The
// thread stays locked and exits with its goroutine, so it is never reused
// outside the namespace.
func (n NetNS) Do(t testing.TB, f func() error) {
	t.Helper()
	if err := <-Go(n.FD, f); err != nil {
		t.Fatal(err)
	}
}

// Go starts f on a thread inside the namespace open as fd, as Do, and
// returns at once; f's error arrives on the channel.
func Go(fd int, f func() error) <-chan error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- f()
	}()
	return errc
}
