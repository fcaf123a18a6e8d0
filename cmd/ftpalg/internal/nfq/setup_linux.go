//go:build linux

package nfq

// Binding and configuring a queue, and reading its kernel counters.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// socket opens the netlink socket, in namespace netns when it is not 0:
// from a goroutine locked to a thread that switches namespace and then
// exits still locked, so the thread is never reused. It also opens the
// namespace's /proc/net/netfilter/nfnetlink_queue (nil when absent), which
// stays bound to that namespace whatever thread reads it later.
func socket(netns int) (int, *os.File, error) {
	if netns == 0 {
		return newSocket()
	}
	type result struct {
		fd   int
		proc *os.File
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(netns, unix.CLONE_NEWNET); err != nil {
			ch <- result{-1, nil, fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		fd, proc, err := newSocket()
		ch <- result{fd, proc, err}
	}()
	r := <-ch
	return r.fd, r.proc, r.err
}

// newSocket runs on a thread in the queue's namespace (the caller's, or
// one locked there): /proc/thread-self/net is that namespace's.
func newSocket() (int, *os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return -1, nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("bind netlink socket: %w", err)
	}
	proc, err := os.Open("/proc/thread-self/net/netfilter/nfnetlink_queue")
	if err != nil {
		proc = nil
	}
	return fd, proc, nil
}

func (q *Queue) errorf(format string, a ...any) error {
	return fmt.Errorf("nfqueue %d: "+format, append([]any{q.cfg.Queue}, a...)...)
}

func (q *Queue) setup() error {
	fd := q.fd
	// A large receive buffer absorbs bursts; SO_RCVBUFFORCE needs
	// CAP_NET_ADMIN, which binding a queue needs anyway.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, q.cfg.RcvBuf); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, q.cfg.RcvBuf)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndBuf); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndBuf)
	}
	// Without NETLINK_NO_ENOBUFS an overrun is reported as ENOBUFS on the
	// next read; with it the kernel only drops (counted in
	// /proc/net/netfilter/nfnetlink_queue), and the loop never stalls.
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1); err != nil {
		return q.errorf("set NETLINK_NO_ENOBUFS: %w", err)
	}
	// Error acknowledgements without the request echoed back.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)

	var b []byte
	seq := uint32(1)
	exec := func(what string) error {
		err := q.request(b, seq)
		b = b[:0]
		seq++
		if err != nil {
			return q.configError(what, err)
		}
		return nil
	}
	// PF_BIND is a no-op since Linux 3.8; older kernels need it per family.
	b = appendConfigCmd(b, seq, q.cfg.Queue, cmdPfBind, unix.AF_INET)
	if err := exec("bind ipv4"); err != nil {
		return err
	}
	b = appendConfigCmd(b, seq, q.cfg.Queue, cmdPfBind, unix.AF_INET6)
	if err := exec("bind ipv6"); err != nil {
		return err
	}
	b = appendConfigCmd(b, seq, q.cfg.Queue, cmdBind, unix.AF_UNSPEC)
	if err := exec("bind"); err != nil {
		return err
	}
	var flags uint32
	if q.cfg.FailOpen {
		flags |= flagFailOpen
	}
	// Not NFQA_CFG_F_GSO: the kernel then segments GSO packets and hands
	// over complete checksums. Not NFQA_CFG_F_CONNTRACK: unsupported on
	// kernels without the nfqueue conntrack glue.
	b = appendConfigParams(b, seq, q.cfg.Queue, copyRange, q.cfg.MaxQueueLen, flags, flagFailOpen)
	if err := exec("configure"); err != nil {
		return err
	}
	// Reads time out so that Run can expire held packets and notice
	// shutdown without another goroutine.
	tv := unix.NsecToTimeval(q.cfg.RecvTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return q.errorf("set SO_RCVTIMEO: %w", err)
	}
	return nil
}

// configError turns a failed configuration request into a clear error.
func (q *Queue) configError(what string, err error) error {
	if errors.Is(err, unix.EPERM) {
		// The kernel answers EPERM both to a caller without CAP_NET_ADMIN
		// and for a queue bound by another socket.
		if port, ok := q.queueOwner(); ok {
			return q.errorf("queue in use by netlink port %d (another ftpalg running?)", port)
		}
		return q.errorf("permission denied (needs root or CAP_NET_ADMIN)")
	}
	if errors.Is(err, unix.EBUSY) {
		return q.errorf("queue in use (another ftpalg running?)")
	}
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ENOENT) && what == "bind" {
		return q.errorf("%s: %w (is nfnetlink_queue in the kernel?)", what, err)
	}
	if errors.Is(err, unix.EOPNOTSUPP) {
		return q.errorf("%s: flag not supported by this kernel: %w", what, err)
	}
	return q.errorf("%s: %w", what, err)
}

// queueLines reads the namespace's /proc/net/netfilter/nfnetlink_queue:
// one line per bound queue, "queue_number peer_portid queue_total
// copy_mode copy_range queue_dropped user_dropped id_sequence 1".
func (q *Queue) queueLines() [][]string {
	if q.proc == nil {
		return nil
	}
	q.procMu.Lock()
	defer q.procMu.Unlock()
	if _, err := q.proc.Seek(0, io.SeekStart); err != nil {
		return nil
	}
	var lines [][]string
	s := bufio.NewScanner(q.proc)
	for s.Scan() {
		lines = append(lines, strings.Fields(s.Text()))
	}
	return lines
}

// line returns the fields of queue's line, or nil.
func (q *Queue) line(queue uint16) []string {
	for _, fs := range q.queueLines() {
		if len(fs) < 7 {
			continue
		}
		if n, err := strconv.ParseUint(fs[0], 10, 16); err == nil && uint16(n) == queue {
			return fs
		}
	}
	return nil
}

// queueOwner is the netlink port bound to queue, if any.
func (q *Queue) queueOwner() (port uint32, ok bool) {
	fs := q.line(q.cfg.Queue)
	if fs == nil {
		return 0, false
	}
	p, err := strconv.ParseUint(fs[1], 10, 32)
	return uint32(p), err == nil
}

// KernelStats are a queue's counters as the kernel reports them.
type KernelStats struct {
	Waiting     uint32 // packets waiting for a verdict
	QueueDrops  uint32 // packets dropped (or bypassed) because the queue was full
	SocketDrops uint32 // packets the kernel failed to send to the socket
}

// KernelStats reads the queue's line of /proc/net/netfilter/nfnetlink_queue
// (of the queue's namespace). ok is false when the queue is not listed.
func (q *Queue) KernelStats() (ks KernelStats, ok bool) {
	fs := q.line(q.cfg.Queue)
	if fs == nil {
		return ks, false
	}
	u := func(s string) uint32 { v, _ := strconv.ParseUint(s, 10, 32); return uint32(v) }
	return KernelStats{Waiting: u(fs[2]), QueueDrops: u(fs[5]), SocketDrops: u(fs[6])}, true
}

// request sends one configuration message and reads its acknowledgement.
// Packets cannot arrive yet: the queue is bound by this very sequence.
func (q *Queue) request(b []byte, seq uint32) error {
	if _, err := unix.Write(q.fd, b); err != nil {
		return err
	}
	var rb [4096]byte
	tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
	_ = unix.SetsockoptTimeval(q.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	for {
		n, err := unix.Read(q.fd, rb[:])
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				return errors.New("no answer from the kernel")
			}
			return err
		}
		buf := rb[:n]
		for len(buf) > 0 {
			m, rest, err := nextMessage(buf)
			if err != nil {
				return err
			}
			buf = rest
			if m.typ == msgPacket {
				// Queued between the bind and the end of the
				// configuration: let it pass rather than strand it.
				var p packet
				if decodePacket(m.data, &p) {
					v := appendVerdict(nil, q.cfg.Queue, p.ID, verdictAccept, nil)
					if _, err := unix.Write(q.fd, v); err == nil {
						q.st.packets.Add(1)
						q.st.verdicts.Add(1)
					}
				}
				continue
			}
			if m.typ != nlmsgError {
				continue
			}
			errno, s, ok := errorCode(m.data)
			if !ok || s != seq {
				continue
			}
			if errno != 0 {
				return unix.Errno(errno)
			}
			return nil
		}
	}
}
