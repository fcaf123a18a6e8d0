//go:build linux && integration

package nfq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftpalg/ftpalg/test/testenv"
)

// testHandler rewrites, holds and accepts UDP datagrams by their payload:
// "modify" becomes "MODIFY", "hold" waits for a Tick past holdFor,
// "forever" waits for Close, anything else passes.
type testHandler struct {
	holdFor time.Duration

	mu      sync.Mutex
	held    map[uint32]time.Time
	forever []uint32
	seen    int
	closed  bool
	buf     []byte
}

func udpPayload(pkt []byte) (payload []byte, csumOff int) {
	if len(pkt) < 1 {
		return nil, 0
	}
	switch pkt[0] >> 4 {
	case 4:
		ihl := int(pkt[0]&0xf) * 4
		if len(pkt) < ihl+8 {
			return nil, 0
		}
		return pkt[ihl+8:], ihl + 6
	case 6:
		if len(pkt) < 48 || pkt[6] != unix.IPPROTO_UDP {
			return nil, 0
		}
		return pkt[48:], 46
	}
	return nil, 0
}

func (h *testHandler) Packet(id uint32, pkt []byte, v *Verdicts) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen++
	p, csum := udpPayload(pkt)
	switch string(p) {
	case "modify":
		h.buf = append(h.buf[:0], pkt...)
		copy(h.buf[len(pkt)-len(p):], "MODIFY")
		if h.buf[0]>>4 == 4 {
			h.buf[csum], h.buf[csum+1] = 0, 0 // IPv4 UDP: no checksum
		} else {
			fixUDP6Checksum(h.buf)
		}
		v.AcceptModified(id, h.buf)
	case "hold":
		h.held[id] = time.Now()
	case "forever":
		h.forever = append(h.forever, id)
	default:
		v.Accept(id)
	}
}

func (h *testHandler) Tick(now time.Time, v *Verdicts) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, t := range h.held {
		if now.Sub(t) >= h.holdFor {
			v.Accept(id)
			delete(h.held, id)
		}
	}
}

func (h *testHandler) Close(v *Verdicts) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for id := range h.held {
		v.Accept(id)
	}
	for _, id := range h.forever {
		v.Accept(id)
	}
	h.held, h.forever = nil, nil
}

// fixUDP6Checksum recomputes the UDP checksum of an IPv6 packet without
// extension headers (RFC 8200 section 8.1 pseudo-header).
func fixUDP6Checksum(p []byte) {
	udp := p[40:]
	udp[6], udp[7] = 0, 0
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(p[8:40])
	sum += uint32(len(udp)) + unix.IPPROTO_UDP
	add(udp)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	udp[6], udp[7] = byte(c>>8), byte(c)
}

func TestIntegrationQueue(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedTools(t, "ip")
	testenv.NeedTools(t, "iptables-nft")
	testenv.NeedTools(t, "ip6tables-nft")
	ns := testenv.NewNetNS(t, "ftpalg-nfq")
	const queueNum = 7
	for _, tool := range []string{"iptables-nft", "ip6tables-nft"} {
		ns.Run(t, tool, "-A", "OUTPUT", "-p", "udp", "--dport", "10000",
			"-j", "NFQUEUE", "--queue-num", fmt.Sprint(queueNum))
	}

	q, err := Open(&Config{Queue: queueNum, NetNS: ns.FD, FailOpen: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()

	// A second program on the same queue gets a clear error.
	if q2, err := Open(&Config{Queue: queueNum, NetNS: ns.FD}); err == nil {
		q2.Close()
		t.Error("second Open of the same queue succeeded")
	} else if !strings.Contains(err.Error(), "queue in use") {
		t.Errorf("second Open: %v, want \"queue in use\"", err)
	}

	h := &testHandler{holdFor: 60 * time.Millisecond, held: map[uint32]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- q.Run(ctx, h) }()

	for _, addr := range []string{"127.0.0.1:10000", "[::1]:10000"} {
		t.Run(addr, func(t *testing.T) {
			var srv, cli *net.UDPConn
			ns.Do(t, func() (err error) {
				ua, _ := net.ResolveUDPAddr("udp", addr)
				if srv, err = net.ListenUDP("udp", ua); err != nil {
					return err
				}
				cli, err = net.DialUDP("udp", nil, ua)
				return err
			})
			defer srv.Close()
			defer cli.Close()
			recv := func(want string, minDelay time.Duration) {
				t.Helper()
				start := time.Now()
				srv.SetReadDeadline(time.Now().Add(2 * time.Second))
				b := make([]byte, 100)
				n, _, err := srv.ReadFromUDP(b)
				if err != nil {
					t.Fatalf("waiting for %q: %v", want, err)
				}
				if got := string(b[:n]); got != want {
					t.Errorf("received %q, want %q", got, want)
				}
				if d := time.Since(start); d < minDelay {
					t.Errorf("%q arrived after %v, want it held >= %v", want, d, minDelay)
				}
			}
			for _, c := range []struct {
				send, want string
				held       time.Duration
			}{
				{"plain", "plain", 0},
				{"modify", "MODIFY", 0},
				{"hold", "hold", 40 * time.Millisecond},
				{"plain", "plain", 0},
			} {
				if _, err := cli.Write([]byte(c.send)); err != nil {
					t.Fatal(err)
				}
				recv(c.want, c.held)
			}
		})
	}

	// The loop allocates nothing per packet: count the whole process's
	// allocations over a burst (the sockets here allocate nothing per
	// datagram either).
	t.Run("allocs", func(t *testing.T) {
		var srv, cli *net.UDPConn
		ns.Do(t, func() (err error) {
			ua, _ := net.ResolveUDPAddr("udp", "127.0.0.1:10000")
			if srv, err = net.ListenUDP("udp", ua); err != nil {
				return err
			}
			cli, err = net.DialUDP("udp", nil, ua)
			return err
		})
		defer srv.Close()
		defer cli.Close()
		const n = 2000
		msg, buf := []byte("burst"), make([]byte, 64)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := 0; i < n; i++ {
			cli.Write(msg)
			srv.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := srv.Read(buf); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
		per := float64(after.Mallocs-before.Mallocs) / n
		t.Logf("%.3f allocations per packet (whole process)", per)
		if per > 0.1 {
			t.Errorf("%.3f allocations per packet, want 0", per)
		}
	})
	before := q.Stats()

	// Shutdown: held packets get their verdicts from Close.
	var srv, cli *net.UDPConn
	ns.Do(t, func() (err error) {
		ua, _ := net.ResolveUDPAddr("udp", "127.0.0.1:10000")
		if srv, err = net.ListenUDP("udp", ua); err != nil {
			return err
		}
		cli, err = net.DialUDP("udp", nil, ua)
		return err
	})
	defer srv.Close()
	defer cli.Close()
	cli.Write([]byte("forever"))
	testenv.Eventually(t, 10*time.Second, "the queue reads the packet", func() bool { return q.Stats().Packets > before.Packets })
	cancel()
	if err := <-runErr; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 100)
	if n, _, err := srv.ReadFromUDP(b); err != nil || !bytes.Equal(b[:n], []byte("forever")) {
		t.Errorf("packet held at shutdown: %q, %v", b[:n], err)
	}

	st := q.Stats()
	t.Logf("stats: %+v", st)
	st.Packets -= before.Packets - 8 // count the burst out
	st.Verdicts -= before.Verdicts - 8
	if st.Packets != 9 || st.Verdicts != 9 || st.Modified != 2 || st.VerdictErrors != 0 {
		t.Errorf("stats %+v: want 9 packets, 9 verdicts, 2 modified, no errors", st)
	}
	if ks, ok := q.KernelStats(); !ok || ks.Waiting != 0 {
		t.Errorf("kernel stats %+v, %v: want the queue listed, nothing waiting", ks, ok)
	}

	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Run(context.Background(), h); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Run after Close: %v, want net.ErrClosed", err)
	}
}

// Close from another goroutine ends Run with net.ErrClosed.
func TestIntegrationClose(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedTools(t, "ip")
	ns := testenv.NewNetNS(t, "ftpalg-nfq")
	q, err := Open(&Config{Queue: 8, NetNS: ns.FD})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	h := &testHandler{held: map[uint32]time.Time{}}
	go func() { runErr <- q.Run(context.Background(), h) }()
	// The loop blocks in a raw system call holding its P: a GC's stop of
	// the world must still get through (it would hang here otherwise).
	// How long it takes is logged, not asserted: on a loaded machine any
	// bound would flake.
	for range 3 {
		start := time.Now()
		runtime.GC()
		t.Logf("GC with the loop blocked in a read: %v", time.Since(start))
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-runErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Run: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running 10 s after Close")
	}
	if !h.closed {
		t.Error("Handler.Close was not called")
	}
	// The queue is free again.
	q2, err := Open(&Config{Queue: 8, NetNS: ns.FD})
	if err != nil {
		t.Fatalf("reopen after Close: %v", err)
	}
	q2.Close()
}
