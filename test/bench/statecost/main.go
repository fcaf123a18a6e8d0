//go:build linux

// Command statecost measures what keeping a control connection's state
// outside the daemon costs per write (docs/STATE.md): a ctnetlink update
// of a conntrack entry's mark and labels, a write to a journal file
// (open+pwrite+close, and pwrite on an open file), and adding and deleting
// an element of the rules' set of shifted connections. Run it as root in a
// scratch network namespace:
//
//	ip netns add sc
//	ip netns exec sc ip link set lo up
//	ip netns exec sc nft 'table ip ct_on { chain c { type filter hook output priority 0; ct state new counter; }; }'
//	ip netns exec sc go run ./test/bench/statecost -dir /dev/shm/ftpalg-statecost
//	ip netns del sc
package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/ftpalg/ftpalg/rules"
	"github.com/ti-mo/conntrack"
)

func main() {
	n := flag.Int("n", 20000, "writes per measurement")
	dir := flag.String("dir", "/run/ftpalg-statecost", "journal directory (tmpfs)")
	flag.Parse()
	state := make([]byte, 4+120) // a typical state: one rewrite per direction is ~100-200 bytes
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fail(err)
	}
	defer os.RemoveAll(*dir)

	// Journal: open+pwrite+close per write (what the daemon does).
	p := filepath.Join(*dir, "192.0.2.10:40000_198.51.100.1:21")
	report("journal open+pwrite+close", *n, func(i int) error {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		state[0] = byte(i)
		_, err = f.WriteAt(state, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		fail(err)
	}
	report("journal pwrite on an open file", *n, func(i int) error {
		state[0] = byte(i)
		_, err := f.WriteAt(state, 0)
		return err
	})
	f.Close()

	// conntrack: one entry, its mark and labels updated (ctnetlink).
	c, err := conntrack.Dial(nil)
	if err != nil {
		fail(err)
	}
	defer c.Close()
	// A real connection over loopback gives the entry (ctnetlink's
	// create refuses entries in a namespace without conntrack users).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	defer ln.Close()
	go func() {
		if a, err := ln.Accept(); err == nil {
			defer a.Close()
			time.Sleep(time.Hour)
		}
	}()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		fail(err)
	}
	defer cl.Close()
	src := cl.LocalAddr().(*net.TCPAddr).AddrPort()
	dst := cl.RemoteAddr().(*net.TCPAddr).AddrPort()
	upd := conntrack.NewFlow(6, 0, src.Addr(), dst.Addr(), src.Port(), dst.Port(), 0, 0)
	if _, err := c.Get(upd); err != nil {
		fail(fmt.Errorf("no conntrack entry for the loopback connection (is conntrack on in this namespace?): %w", err))
	}
	report("ctnetlink update (mark)", *n, func(i int) error {
		upd.Mark = uint32(i) | 1
		return c.Update(upd)
	})
	upd.Mark = 0
	labels := make([]byte, 16)
	upd.Labels, upd.LabelsMask = labels, make([]byte, 16)
	for i := range upd.LabelsMask {
		upd.LabelsMask[i] = 0xff
	}
	err = c.Update(upd)
	if err != nil {
		fmt.Printf("ctnetlink update (labels): %v (labels need a ct label user: the daemon's rules would have to use one)\n", err)
	} else {
		report("ctnetlink update (128-bit labels)", *n, func(i int) error {
			labels[0] = byte(i)
			return c.Update(upd)
		})
	}
	got, err := c.Get(upd)
	if err == nil {
		fmt.Printf("  entry now: mark %#x labels % x\n", got.Mark, got.Labels)
	}

	// The set of shifted connections: add and delete one element (both
	// directions), each its own netlink transaction, as the daemon does.
	cfg := &rules.Config{Translator: rules.Tayga, Bypass: true, Table: "ftpalg_statecost"}
	if err := rules.Install(cfg); err != nil {
		fail(err)
	}
	defer rules.Remove(cfg)
	s, err := rules.OpenShifted(cfg)
	if err != nil {
		fail(err)
	}
	defer s.Close()
	m := min(*n, 5000)
	conn := func(i int) rules.Conn {
		return rules.Conn{Client: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), uint16(1024+i)),
			Server: netip.MustParseAddrPort("198.51.100.1:21")}
	}
	report("nft set add (2 elements)", m, func(i int) error { return s.Add(conn(i)) })
	report("nft set delete (2 elements)", m, func(i int) error { return s.Delete(conn(i)) })
}

func report(what string, n int, f func(i int) error) {
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := f(i); err != nil {
			fail(fmt.Errorf("%s: %w", what, err))
		}
	}
	d := time.Since(start)
	fmt.Printf("%-36s %7d ops  %8.2f µs/op\n", what, n, float64(d.Microseconds())/float64(n))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "statecost:", err)
	os.Exit(1)
}
