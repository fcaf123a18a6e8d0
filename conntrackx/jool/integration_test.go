//go:build linux && integration

package jool

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
	"github.com/ftpalg/ftpalg/test/testenv"
	"golang.org/x/sys/unix"
)

// joolLab sets up a Jool NAT64 instance in a network namespace of its own
// with the jool command, or skips when this machine cannot (no root, no
// jool module, no jool command). Under CI it fails instead of skipping when
// not root, and also when the module is missing if FTPALG_JOOL is set
// (the QEMU lab sets it; ordinary CI hosts cannot load modules).
func joolLab(t *testing.T) (ns string, nsFD int) {
	t.Helper()
	testenv.NeedRoot(t)
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
	j, err := Dial(&Config{Instance: "it", NetNS: fd})
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
	old, err := Dial(&Config{Instance: "it", NetNS: fd, Version: 4<<24 | 0<<16})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := old.Pool4List(ProtoTCP); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Jool 4.0 header: %v, want EINVAL", err)
	}
	if _, err := Dial(&Config{Instance: "missing", NetNS: fd}); err != nil {
		t.Errorf("dial (the instance is only checked per request): %v", err)
	}
}

func TestIntegrationJoolMapper(t *testing.T) {
	_, fd := joolLab(t)
	j, err := Dial(&Config{Instance: "it", NetNS: fd})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	// Leftovers of a killed daemon, in its ledger.
	ledger := &FileLedger{Path: filepath.Join(t.TempDir(), "jool-bib")}
	var leftovers []BIBEntry
	for i := range 3 {
		e := BIBEntry{
			Addr6: netip.AddrPortFrom(netip.MustParseAddr("2001:db8::30"), uint16(2000+i)),
			Addr4: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(61900+i)),
			Proto: ProtoTCP,
		}
		if err := j.BIBAdd(e); err != nil {
			t.Fatal(err)
		}
		e.Static = true
		leftovers = append(leftovers, e)
	}
	if err := ledger.Store(leftovers); err != nil {
		t.Fatal(err)
	}
	m, err := NewMapper(&MapperConfig{Tables: j, ReservedPorts: [2]uint16{61000, 61999}, IdleTimeout: time.Minute, Ledger: ledger})
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
	// A port drawn from the free ones of the range, not the IPv6 port.
	if err != nil || got.Addr() != netip.MustParseAddr("192.0.2.1") || got.Port() < 61000 || got.Port() > 61999 {
		t.Fatalf("MapData = %v, %v; want 192.0.2.1 and a port in 61000-61999", got, err)
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

// TestIntegrationJoolNetNSThread checks that requests with Config.NetNS
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
	j, err := Dial(&Config{NetNS: int(f.Fd())})
	if errors.Is(err, ErrNotLoaded) {
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

// joolTopology builds c6 -- nat (Jool) -- s4 in three namespaces:
// c6 2001:db8:1::2/64, nat 2001:db8:1::1/64 and 192.0.2.1/24 (pool4),
// s4 192.0.2.2/24; pool6 64:ff9b::/96; pool4 192.0.2.1 ports 21,
// 2000-3000 and, for the ALG, 61000-61999 under mark 4242; the operator's
// entry 2001:db8:1::2#21 <-> 192.0.2.1#21 for an IPv6 FTP server.
// It returns a thread in c6, one in s4, and the nat namespace's fd.
func joolTopology(t *testing.T) (c6, s4 *nsThread, natFD int) {
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
	for _, cmd := range []string{"ip", "jool", "modprobe", "sysctl"} {
		if _, err := exec.LookPath(cmd); err != nil {
			need("no %s command", cmd)
		}
	}
	if out, err := exec.Command("modprobe", "jool").CombinedOutput(); err != nil {
		need("modprobe jool: %v: %s", err, strings.TrimSpace(string(out)))
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	id := os.Getpid()
	names := map[string]string{}
	for _, n := range []string{"c6", "nat", "s4"} {
		names[n] = fmt.Sprintf("ftpalg-%s-%d", n, id)
		run("ip", "netns", "add", names[n])
		name := names[n]
		t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
		run("ip", "netns", "exec", name, "sysctl", "-qw",
			"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	in := func(n string, args ...string) { run(append([]string{"ip", "netns", "exec", names[n]}, args...)...) }
	run("ip", "link", "add", "v6c", "netns", names["c6"], "type", "veth", "peer", "name", "v6n", "netns", names["nat"])
	run("ip", "link", "add", "v4n", "netns", names["nat"], "type", "veth", "peer", "name", "v4s", "netns", names["s4"])
	in("c6", "ip", "addr", "add", "2001:db8:1::2/64", "dev", "v6c")
	in("c6", "ip", "link", "set", "v6c", "up")
	in("c6", "ip", "link", "set", "lo", "up")
	in("c6", "ip", "route", "add", "default", "via", "2001:db8:1::1")
	in("nat", "ip", "addr", "add", "2001:db8:1::1/64", "dev", "v6n")
	in("nat", "ip", "addr", "add", "192.0.2.1/24", "dev", "v4n")
	in("nat", "ip", "link", "set", "v6n", "up")
	in("nat", "ip", "link", "set", "v4n", "up")
	in("nat", "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding=1")
	in("s4", "ip", "addr", "add", "192.0.2.2/24", "dev", "v4s")
	in("s4", "ip", "link", "set", "v4s", "up")
	in("s4", "ip", "link", "set", "lo", "up")
	in("nat", "jool", "instance", "add", "--netfilter", "--pool6", "64:ff9b::/96")
	in("nat", "jool", "pool4", "add", "192.0.2.1", "21-21", "--tcp")
	in("nat", "jool", "pool4", "add", "192.0.2.1", "2000-3000", "--tcp")
	in("nat", "jool", "pool4", "add", "192.0.2.1", "61000-61999", "--tcp", "--mark", "4242")
	in("nat", "jool", "bib", "add", "2001:db8:1::2#21", "192.0.2.1#21", "--tcp")

	thread := func(n string) (*nsThread, int) {
		f, err := os.Open(filepath.Join("/run/netns", names[n]))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		th, err := startNSThread(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(th.stop)
		return th, int(f.Fd())
	}
	c6, _ = thread("c6")
	s4, _ = thread("s4")
	_, natFD = thread("nat")
	return c6, s4, natFD
}

// listen opens a TCP listener inside th's namespace that accepts one
// connection and reports it.
func listen(t *testing.T, th *nsThread, addr string) <-chan net.Conn {
	t.Helper()
	var ln net.Listener
	if err := th.run(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(ch)
			return
		}
		t.Cleanup(func() { c.Close() })
		ch <- c
	}()
	return ch
}

func dial(t *testing.T, th *nsThread, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := th.run(func() (err error) { c, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func accepted(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("accept failed")
		}
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection arrived")
	}
	return nil
}

// TestIntegrationJoolMapperTraffic runs real connections through Jool: a
// 64 control connection is classified from Jool's session table, and the
// data-channel entries MapData adds carry connections in the direction
// FTP needs them.
func TestIntegrationJoolMapperTraffic(t *testing.T) {
	c6, s4, natFD := joolTopology(t)
	j, err := Dial(&Config{NetNS: natFD})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	m, err := NewMapper(&MapperConfig{Tables: j, ReservedPorts: [2]uint16{61000, 61999}})
	if err != nil {
		t.Fatal(err)
	}

	// 64: an IPv6 client's control connection to an IPv4 server.
	ctrl := listen(t, s4, "192.0.2.2:2121")
	dial(t, c6, "[64:ff9b::192.0.2.2]:2121")
	server := accepted(t, ctrl)
	client4 := netip.MustParseAddrPort(server.RemoteAddr().String())
	s, ok := m.Classify(client4, ap("192.0.2.2:2121"))
	if !ok || s.Kind != mangle.Kind64 || s.Client6 != netip.MustParseAddr("2001:db8:1::2") ||
		s.Server6 != netip.MustParseAddr("64:ff9b::c000:202") || s.Client4 != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("Classify(%v) = %+v, %v", client4, s, ok)
	}

	// 64 active: the client listens on 50000 and says EPRT; the server
	// connects to what MapData returns.
	data := listen(t, c6, "[2001:db8:1::2]:50000")
	p4, err := m.MapData(mangle.DataRequest{Session: s, Mode: mangle.Active64, Target: ap("[2001:db8:1::2]:50000")})
	if err != nil {
		t.Fatal(err)
	}
	if p4.Addr() != netip.MustParseAddr("192.0.2.1") || p4.Port() < 61000 || p4.Port() > 61999 {
		t.Errorf("active64 mapping %v, want 192.0.2.1 and a port in 61000-61999", p4)
	}
	dial(t, s4, p4.String())
	got := accepted(t, data)
	t.Logf("active64 data connection %v -> %v", got.RemoteAddr(), got.LocalAddr())
	if ss, err := j.BIBSessions(ProtoTCP, p4); err != nil || len(ss) != 1 || ss[0].Src6 != ap("[2001:db8:1::2]:50000") || ss[0].Finished() {
		t.Errorf("BIBSessions(%v) = %+v, %v; want the live data connection", p4, ss, err)
	}

	// 46 passive: an IPv4 client's control connection to the IPv6 server
	// behind the operator's entry; the server announces port 61005.
	s46, ok := m.Classify(ap("192.0.2.2:40000"), ap("192.0.2.1:21"))
	if !ok || s46.Kind != mangle.Kind46 || s46.Server6 != netip.MustParseAddr("2001:db8:1::2") {
		t.Fatalf("Classify 46 = %+v, %v", s46, ok)
	}
	pasv := listen(t, c6, "[2001:db8:1::2]:61005")
	p46, err := m.MapData(mangle.DataRequest{Session: s46, Mode: mangle.Passive46, Target: ap("[2001:db8:1::2]:61005")})
	if err != nil || p46.Addr() != netip.MustParseAddr("192.0.2.1") || p46.Port() < 61000 || p46.Port() > 61999 {
		t.Fatalf("passive46 mapping %v, %v; want 192.0.2.1 and a port in 61000-61999", p46, err)
	}
	c := dial(t, s4, p46.String())
	got = accepted(t, pasv)
	if want := netip.MustParseAddr("64:ff9b::c000:202"); netip.MustParseAddrPort(got.RemoteAddr().String()).Addr() != want {
		t.Errorf("the IPv6 server sees %v, want %v", got.RemoteAddr(), want)
	}

	// Live connections keep their entries; finished ones let them go.
	if err := m.Expire(time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := len(m.Mappings()); n != 2 {
		t.Errorf("%d mappings while both data connections are open, want 2", n)
	}
	c.Close()
	got.Close()
	testenv.Eventually(t, 10*time.Second, "Jool sees both FINs of the passive data connection", func() bool {
		ss, err := j.BIBSessions(ProtoTCP, p46)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			if !s.Finished() {
				return false
			}
		}
		return true
	})
	if err := m.Expire(time.Now().Add(joolFinishedGrace)); err != nil {
		t.Fatal(err)
	}
	if ms := m.Mappings(); len(ms) != 1 || ms[0].Addr4 != p4 {
		t.Errorf("mappings after the passive connection closed: %v, want only %v", ms, p4)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	bib, err := j.BIBList(ProtoTCP)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range bib {
		if e.Static && e.Addr4.Port() >= 61000 {
			t.Errorf("left behind: %v", e)
		}
	}
}

// TestIntegrationJoolPool4Origin adds and removes a pool4 range under a
// mark of its own through the client, on a range the operator's mark 4242
// also holds, as the mapper's origin does: the removal must keep the BIB
// entries of the range (quick), and must take the ports out of Jool's
// per-address table, where the mapper then puts the operator's range back
// (a static entry in the range works again).
func TestIntegrationJoolPool4Origin(t *testing.T) {
	_, fd := joolLab(t)
	j, err := Dial(&Config{Instance: "it", NetNS: fd})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ours := Pool4Entry{Mark: 46000, Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.1/32"), PortMin: 61000, PortMax: 61999}
	if err := j.Pool4Add(ours); err != nil {
		t.Fatal(err)
	}
	pool, err := j.Pool4List(ProtoTCP)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range pool {
		found = found || p.Mark == 46000 && p.PortMin == 61000 && p.PortMax == 61999
	}
	if !found {
		t.Fatalf("pool4 after the add: %+v", pool)
	}
	static := BIBEntry{Addr6: netip.MustParseAddrPort("[2001:db8::10]:4444"), Addr4: netip.MustParseAddrPort("192.0.2.1:61500"), Proto: ProtoTCP}
	if err := j.BIBAdd(static); err != nil {
		t.Fatal(err)
	}
	if err := j.Pool4Remove(ours); err != nil {
		t.Fatal(err)
	}
	bib, err := j.BIBList(ProtoTCP)
	if err != nil {
		t.Fatal(err)
	}
	kept := false
	for _, b := range bib {
		kept = kept || b.Addr4 == static.Addr4
	}
	if !kept {
		t.Error("the removal (quick) took the BIB entry of the range")
	}
	other := BIBEntry{Addr6: netip.MustParseAddrPort("[2001:db8::10]:4445"), Addr4: netip.MustParseAddrPort("192.0.2.1:61501"), Proto: ProtoTCP}
	if err := j.BIBAdd(other); err == nil {
		t.Log("Jool kept the ports in its per-address table after removing another mark's range (the restore is not needed on this version)")
		j.BIBRemove(other)
	}
	// What removeOrigins does: the operator's range again.
	if err := j.Pool4Add(Pool4Entry{Mark: 4242, Proto: ProtoTCP, Prefix: netip.MustParsePrefix("192.0.2.1/32"), PortMin: 61000, PortMax: 61999}); err != nil {
		t.Fatal(err)
	}
	if err := j.BIBAdd(other); err != nil {
		t.Errorf("a static entry in the operator's range after the restore: %v", err)
	}
	after, err := j.Pool4List(ProtoTCP)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range after {
		if p.Mark == 46000 {
			t.Errorf("pool4 still holds %+v", p)
		}
	}
	if len(after) != len(pool)-1 {
		t.Errorf("pool4 after: %+v, want the one before without mark 46000: %+v", after, pool)
	}
}
