// Command nfqbench is the traffic side of test/bench/nfqueue.sh: a TCP
// server, a round-trip timer and a flood of small segments, so that the
// cost of an NFQUEUE consumer can be measured on the path between them.
//
//	nfqbench serve ADDR...            echo ("E") or discard ("F") per connection;
//	                                  ftp=ADDR: an FTP-like server (a 220
//	                                  greeting, then "200" for every line)
//	nfqbench rtt ADDR N               N one-byte round trips on one connection:
//	                                  prints "median_us p90_us p99_us"
//	nfqbench flood ADDR SECONDS CONNS MSS
//	                                  CONNS connections with TCP_MAXSEG=MSS write
//	                                  64-byte chunks for SECONDS: prints bytes sent
//	nfqbench ftpflood ADDR SECONDS CONNS MSS
//	                                  CONNS control connections to an ftp=
//	                                  server send PORT commands (at most
//	                                  ftpWindow awaiting their reply) for
//	                                  SECONDS: prints commands answered
//	nfqbench blast ADDR SECONDS PPS   open loop: PPS TCP ACK segments a second
//	                                  (40 bytes of payload, random numbers) to
//	                                  ADDR from a raw socket, from the
//	                                  NFQBENCH_SRC addresses in turn, over
//	                                  NFQBENCH_FLOWS source ports in turn
//	                                  (default 1024; 0: a random port each):
//	                                  prints packets sent
//
// NFQBENCH_SRC (a comma-separated list of local addresses) spreads the
// connections of flood and ftpflood over those source addresses, round
// robin: the kernel balances queues by a hash of the addresses.
package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "rtt":
		if len(os.Args) != 4 {
			usage()
		}
		err = rtt(os.Args[2], atoi(os.Args[3]))
	case "flood":
		if len(os.Args) != 6 {
			usage()
		}
		err = flood(os.Args[2], atoi(os.Args[3]), atoi(os.Args[4]), atoi(os.Args[5]))
	case "blast":
		if len(os.Args) != 5 {
			usage()
		}
		err = blast(os.Args[2], atoi(os.Args[3]), atoi(os.Args[4]))
	case "ftpflood":
		if len(os.Args) != 6 {
			usage()
		}
		err = ftpFlood(os.Args[2], atoi(os.Args[3]), atoi(os.Args[4]), atoi(os.Args[5]))
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nfqbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: nfqbench serve [ftp=]ADDR... | rtt ADDR N | flood ADDR SECONDS CONNS MSS | ftpflood ADDR SECONDS CONNS MSS | blast ADDR SECONDS PPS")
	os.Exit(2)
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		usage()
	}
	return n
}

func serve(addrs []string) error {
	errc := make(chan error, len(addrs))
	for _, a := range addrs {
		h := handle
		if rest, ok := strings.CutPrefix(a, "ftp="); ok {
			a, h = rest, handleFTP
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				go h(c.(*net.TCPConn))
			}
		}()
	}
	return <-errc
}

func handle(c *net.TCPConn) {
	defer c.Close()
	c.SetNoDelay(true)
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	if mode[0] == 'F' {
		io.Copy(io.Discard, c)
		return
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func rtt(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	if _, err := c.Write([]byte("E")); err != nil {
		return err
	}
	const warmup = 100
	samples := make([]time.Duration, 0, n)
	b := []byte{'x'}
	for i := 0; i < n+warmup; i++ {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if i >= warmup {
			samples = append(samples, time.Since(start))
		}
	}
	slices.Sort(samples)
	q := func(f float64) float64 { return float64(samples[int(f*float64(len(samples)-1))].Nanoseconds()) / 1e3 }
	fmt.Printf("%.1f %.1f %.1f\n", q(0.5), q(0.9), q(0.99))
	return nil
}

func flood(addr string, seconds, conns, mss int) error {
	var sent atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	errc := make(chan error, conns)
	for range conns {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: nextSource(), Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, mss)
			})
			return serr
		}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		c.(*net.TCPConn).SetNoDelay(true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			chunk := make([]byte, 64)
			chunk[0] = 'F'
			for time.Now().Before(end) {
				c.SetWriteDeadline(end.Add(time.Second))
				n, err := c.Write(chunk)
				sent.Add(int64(n))
				if err != nil {
					if !time.Now().Before(end) {
						return
					}
					errc <- err
					return
				}
				chunk[0] = 'x'
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	fmt.Println(sent.Load())
	return nil
}

// handleFTP greets, then answers every line with a 200 reply.
func handleFTP(c *net.TCPConn) {
	defer c.Close()
	c.SetNoDelay(true)
	if _, err := c.Write([]byte("220 nfqbench\r\n")); err != nil {
		return
	}
	r := bufio.NewReader(c)
	for {
		if _, err := r.ReadSlice('\n'); err != nil {
			return
		}
		if _, err := c.Write([]byte("200 Command okay.\r\n")); err != nil {
			return
		}
	}
}

// ftpWindow bounds the commands a connection of ftpflood has sent without
// their reply: the ALG follows at most 32 (beyond, it stops translating
// the session), as a real client waits for each reply.
const ftpWindow = 8

// ftpFlood keeps conns control connections busy with PORT commands naming
// the client's own address, each of which an ALG rewrites.
func ftpFlood(addr string, seconds, conns, mss int) error {
	var answered atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	errc := make(chan error, 2*conns)
	for range conns {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: nextSource(), Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, mss)
			})
			return serr
		}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		tc := c.(*net.TCPConn)
		tc.SetNoDelay(true)
		la := tc.LocalAddr().(*net.TCPAddr).IP.To4()
		if la == nil {
			return fmt.Errorf("ftpflood: IPv4 only")
		}
		cmd := []byte(fmt.Sprintf("PORT %d,%d,%d,%d,7,208\r\n", la[0], la[1], la[2], la[3]))
		r := bufio.NewReader(c)
		c.SetDeadline(end.Add(5 * time.Second))
		if _, err := r.ReadSlice('\n'); err != nil { // the greeting
			return err
		}
		window := make(chan struct{}, ftpWindow)
		wg.Add(2)
		go func() { // replies
			defer wg.Done()
			defer c.Close()
			for {
				if _, err := r.ReadSlice('\n'); err != nil {
					return
				}
				answered.Add(1)
				<-window
			}
		}()
		go func() { // commands
			defer wg.Done()
			defer tc.CloseWrite()
			stop := time.After(time.Until(end))
			for {
				select {
				case window <- struct{}{}:
				case <-stop:
					return
				}
				if _, err := c.Write(cmd); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	fmt.Println(answered.Load())
	return nil
}

var sources struct {
	sync.Mutex
	addrs []net.IP
	next  int
}

// nextSource returns the next address of NFQBENCH_SRC (nil: the kernel
// picks).
func nextSource() net.Addr {
	sources.Lock()
	defer sources.Unlock()
	if sources.addrs == nil {
		for _, a := range strings.Split(os.Getenv("NFQBENCH_SRC"), ",") {
			if ip := net.ParseIP(strings.TrimSpace(a)); ip != nil {
				sources.addrs = append(sources.addrs, ip)
			}
		}
	}
	if len(sources.addrs) == 0 {
		return nil
	}
	ip := sources.addrs[sources.next%len(sources.addrs)]
	sources.next++
	return &net.TCPAddr{IP: ip}
}

// blast sends pps TCP segments a second to addr (IPv4) for seconds, not
// waiting for anything: the queue's capacity is what its consumer verdicts
// before the kernel's queue overflows (fail-open off: the rest is dropped
// and counted).
func blast(addr string, seconds, pps int) error {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return err
	}
	var srcs [][4]byte
	for {
		a, ok := nextSource().(*net.TCPAddr)
		if !ok || a == nil {
			break
		}
		var b [4]byte
		copy(b[:], a.IP.To4())
		if len(srcs) > 0 && b == srcs[0] {
			break
		}
		srcs = append(srcs, b)
	}
	if len(srcs) == 0 {
		return fmt.Errorf("blast: set NFQBENCH_SRC")
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var dst [4]byte
	copy(dst[:], ap.IP.To4())
	to := &syscall.SockaddrInet4{Addr: dst}
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 20+20+40)
	ports := 1024
	if v := os.Getenv("NFQBENCH_FLOWS"); v != "" {
		if ports, err = strconv.Atoi(v); err != nil || ports < 0 {
			return fmt.Errorf("NFQBENCH_FLOWS=%q", v)
		}
	}
	ports /= len(srcs)
	var sent int
	start := time.Now()
	end := start.Add(time.Duration(seconds) * time.Second)
	for now := start; now.Before(end); now = time.Now() {
		due := int(now.Sub(start).Seconds() * float64(pps))
		if sent >= due {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		for ; sent < due; sent++ {
			clear(b[:40])
			b[0], b[8], b[9] = 0x45, 64, syscall.IPPROTO_TCP
			binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
			copy(b[12:], srcs[sent%len(srcs)][:])
			copy(b[16:], dst[:])
			binary.BigEndian.PutUint16(b[10:], csum(0, b[:20]))
			t := b[20:]
			if ports > 0 {
				binary.BigEndian.PutUint16(t[0:], uint16(1024+sent/len(srcs)%ports))
			} else {
				binary.BigEndian.PutUint16(t[0:], uint16(1024+r.IntN(60000)))
			}
			binary.BigEndian.PutUint16(t[2:], uint16(ap.Port))
			binary.BigEndian.PutUint32(t[4:], r.Uint32())
			binary.BigEndian.PutUint32(t[8:], r.Uint32())
			t[12], t[13] = 5<<4, 0x18
			binary.BigEndian.PutUint16(t[14:], 65535)
			var ph [12]byte
			copy(ph[:8], b[12:20])
			ph[9] = syscall.IPPROTO_TCP
			binary.BigEndian.PutUint16(ph[10:], uint16(len(t)))
			binary.BigEndian.PutUint16(t[16:], csum(sum16(0, ph[:]), t))
			// A full device queue loses the packet, as a flood does.
			if err := syscall.Sendto(fd, b, 0, to); err != nil && err != syscall.ENOBUFS {
				return err
			}
		}
	}
	fmt.Println(sent)
	return nil
}

func sum16(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func csum(s uint32, b []byte) uint16 {
	s = sum16(s, b)
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
