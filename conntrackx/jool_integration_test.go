package conntrackx

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
	"golang.org/x/sys/unix"
)

// joolLab sets up a Jool NAT64 instance in a network namespace of its own
// with the jool command, or skips when this machine cannot (no root, no
// jool module, no jool command). Under CI it fails instead of skipping when
// not root, and also when the module is missing if FTPALG_JOOL is set
// (the QEMU lab sets it; ordinary CI hosts cannot load modules).
func joolLab(t *testing.T) (ns string, nsFD int) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	need := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("FTPALG_JOOL") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + " (set FTPALG_JOOL where jool must be present)")
	}
	for _, cmd := range []string{"ip", "jool", "modprobe"} {
		if _, err := exec.LookPath(cmd); err != nil {
			need("no %s command", cmd)
		}
	}
	if out, err := exec.Command("modprobe", "jool").CombinedOutput(); err != nil {
		need("modprobe jool: %v: %s", err, strings.TrimSpace(string(out)))
	}
	ns = fmt.Sprintf("ftpalg-jool-%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	jool := func(args ...string) { run(append([]string{"ip", "netns", "exec", ns, "jool"}, args...)...) }
	jool("instance", "add", "it", "--netfilter", "--pool6", "2001:db8:64::/96")
	jool("-i", "it", "pool4", "add", "192.0.2.1", "21-21", "--tcp")
	jool("-i", "it", "pool4", "add", "192.0.2.1", "2000-3000", "--tcp")
	jool("-i", "it", "pool4", "add", "192.0.2.1", "61000-61999", "--tcp", "--mark", "4242")
	jool("-i", "it", "bib", "add", "2001:db8::10#21", "192.0.2.1#21", "--tcp")

	f, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return ns, int(f.Fd())
}

func TestIntegrationJoolClient(t *testing.T) {
	_, fd := joolLab(t)
	j, err := DialJool(&JoolConfig{Instance: "it", NetNS: fd})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()

	if p, ok, err := j.Pool6(); err != nil || !ok || p != netip.MustParsePrefix("2001:db8:64::/96") {
		t.Errorf("Pool6 = %v, %v, %v", p, ok, err)
	}
	pool4, err := j.Pool4List(ProtoTCP)
	if err != nil || len(pool4) != 3 {
		t.Errorf("Pool4List = %v, %v; want 3 ranges", pool4, err)
	}

	server := BIBEntry{Addr6: ap("[2001:db8::10]:21"), Addr4: ap("192.0.2.1:21"), Proto: ProtoTCP, Static: true}
	if err := j.BIBAdd(server); err != nil {
		t.Errorf("adding an existing entry again: %v", err)
	}
	clash := BIBEntry{Addr6: ap("[2001:db8::11]:21"), Addr4: ap("192.0.2.1:21"), Proto: ProtoTCP}
	if err := j.BIBAdd(clash); !errors.Is(err, unix.EEXIST) {
		t.Errorf("colliding add: %v, want EEXIST", err)
	}
	outside := BIBEntry{Addr6: ap("[2001:db8::11]:21"), Addr4: ap("198.51.100.1:21"), Proto: ProtoTCP}
	if err := j.BIBAdd(outside); !errors.Is(err, unix.EINVAL) {
		t.Errorf("add outside pool4: %v, want EINVAL", err)
	}

	// 130 entries: three pages or more.
	var added []BIBEntry
	for i := range 130 {
		e := BIBEntry{
			Addr6: netip.AddrPortFrom(netip.MustParseAddr("2001:db8::20"), uint16(1000+i)),
			Addr4: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(61000+i)),
			Proto: ProtoTCP, Static: true,
		}
		if err := j.BIBAdd(e); err != nil {
			t.Fatal(err)
		}
		added = append(added, e)
	}
	bib, err := j.BIBList(ProtoTCP)
	if err != nil {
		t.Fatal(err)
	}
	if len(bib) != 131 {
		t.Errorf("BIBList: %d entries, want 131", len(bib))
	}
	for _, e := range append([]BIBEntry{server}, added...) {
		found := false
		for _, b := range bib {
			found = found || b == e
		}
		if !found {
			t.Errorf("BIBList lacks %v", e)
		}
	}
	if err := j.BIBRemove(added[0]); err != nil {
		t.Errorf("BIBRemove: %v", err)
	}
	if err := j.BIBRemove(added[0]); !errors.Is(err, unix.ESRCH) {
		t.Errorf("removing twice: %v, want ESRCH", err)
	}
	if s, err := j.SessionList(ProtoTCP); err != nil || len(s) != 0 {
		t.Errorf("SessionList = %v, %v; want none", s, err)
	}
	if _, ok, err := j.SessionFind(ProtoTCP, ap("192.0.2.1:2000"), ap("198.51.100.7:21")); ok || err != nil {
		t.Errorf("SessionFind = %v, %v; want not found", ok, err)
	}

	// A version the module does not speak is refused by the module.
	old, err := DialJool(&JoolConfig{Instance: "it", NetNS: fd, Version: 4<<24 | 0<<16})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := old.Pool4List(ProtoTCP); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Jool 4.0 header: %v, want EINVAL", err)
	}
	if _, err := DialJool(&JoolConfig{Instance: "missing", NetNS: fd}); err != nil {
		t.Errorf("dial (the instance is only checked per request): %v", err)
	}
}

func TestIntegrationJoolMapper(t *testing.T) {
	_, fd := joolLab(t)
	j, err := DialJool(&JoolConfig{Instance: "it", NetNS: fd})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	// Leftovers of a killed daemon.
	for i := range 3 {
		e := BIBEntry{
			Addr6: netip.AddrPortFrom(netip.MustParseAddr("2001:db8::30"), uint16(2000+i)),
			Addr4: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(61900+i)),
			Proto: ProtoTCP,
		}
		if err := j.BIBAdd(e); err != nil {
			t.Fatal(err)
		}
	}
	m, err := NewJoolMapper(&JoolMapperConfig{Tables: j, ReservedPorts: [2]uint16{61000, 61999}, IdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := m.Cleanup(); n != 3 || err != nil {
		t.Errorf("Cleanup = %d, %v; want 3", n, err)
	}
	s, ok := m.Classify(ap("203.0.113.5:40000"), ap("192.0.2.1:21"))
	want := mangle.Session{
		Kind: mangle.Kind46, Client4: netip.MustParseAddr("203.0.113.5"), Client6: netip.MustParseAddr("2001:db8:64::cb00:7105"),
		Server4: netip.MustParseAddr("192.0.2.1"), Server6: netip.MustParseAddr("2001:db8::10"),
	}
	if !ok || s != want {
		t.Fatalf("Classify = %+v, %v; want %+v", s, ok, want)
	}
	got, err := m.MapData(mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:61005")})
	if err != nil || got != ap("192.0.2.1:61005") {
		t.Fatalf("MapData = %v, %v", got, err)
	}
	entry := BIBEntry{Addr6: ap("[2001:db8::10]:61005"), Addr4: got, Proto: ProtoTCP, Static: true}
	has := func() bool {
		bib, err := j.BIBList(ProtoTCP)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bib {
			if b == entry {
				return true
			}
		}
		return false
	}
	if !has() {
		t.Fatalf("jool lacks %v", entry)
	}
	if err := m.Expire(time.Now().Add(2 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	if has() {
		t.Errorf("%v kept after the idle timeout", entry)
	}
	if _, err := m.MapData(mangle.DataRequest{Session: s, Mode: mangle.Passive46, Target: ap("[2001:db8::10]:40000")}); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	bib, _ := j.BIBList(ProtoTCP)
	if len(bib) != 1 {
		t.Errorf("after Close the BIB holds %v, want only the server's entry", bib)
	}
}

// TestIntegrationJoolNetNSThread checks that requests with JoolConfig.NetNS
// run on a thread inside that namespace, where Jool looks its instance up.
func TestIntegrationJoolNetNSThread(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command")
	}
	ns := fmt.Sprintf("ftpalg-jt-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	f, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, err := os.Stat(f.Name())
	if err != nil {
		t.Fatal(err)
	}

	th, err := startNSThread(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer th.stop()
	for range 3 {
		err := th.run(func() error {
			got, err := os.Stat("/proc/thread-self/ns/net")
			if err != nil {
				return err
			}
			if !os.SameFile(got, want) {
				return errors.New("the thread is not in the namespace")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Stat("/proc/thread-self/ns/net")
	if err == nil && os.SameFile(self, want) {
		t.Error("the test's own thread moved into the namespace")
	}

	// The client dials from inside: without the module the family is
	// missing there as anywhere.
	j, err := DialJool(&JoolConfig{NetNS: int(f.Fd())})
	if errors.Is(err, ErrJoolNotLoaded) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Pool4List(ProtoTCP); !errors.Is(err, net.ErrClosed) {
		t.Errorf("request after Close: %v, want net.ErrClosed", err)
	}
}
