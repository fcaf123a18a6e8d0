//go:build linux

package nfq

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxQueueLen = 4096
	DefaultRecvTimeout = 20 * time.Millisecond
	DefaultRcvBuf      = 8 << 20
	sndBuf             = 1 << 20
	copyRange          = 0xffff
	// readBuf holds the largest packet the kernel copies (copyRange) with
	// its netlink headers and attributes.
	readBuf = copyRange + 4096
)

// Config configures a Queue. The zero value of every field means its
// default.
type Config struct {
	// Queue is the NFQUEUE number to bind.
	Queue uint16
	// FailOpen lets the kernel accept packets, instead of dropping them,
	// while the queue is full (NFQA_CFG_F_FAIL_OPEN). Packets queued when
	// no program is bound at all pass only with the rule's own bypass flag.
	FailOpen bool
	// MaxQueueLen bounds the packets waiting in the kernel for a verdict,
	// held ones included (default DefaultMaxQueueLen).
	MaxQueueLen uint32
	// RecvTimeout bounds how long a read blocks (SO_RCVTIMEO), and so how
	// late Tick runs and shutdown is noticed (default DefaultRecvTimeout).
	RecvTimeout time.Duration
	// TickInterval is the period of Handler.Tick while packets keep
	// arriving (default RecvTimeout).
	TickInterval time.Duration
	// RcvBuf is the socket's receive buffer in bytes (default
	// DefaultRcvBuf; set with SO_RCVBUFFORCE, so past net.core.rmem_max).
	RcvBuf int
	// NetNS, when not 0, is a file descriptor of the network namespace to
	// open the socket in (no goroutine of the caller switches namespace).
	NetNS int
}

// Handler decides on packets. The queue calls it from one goroutine only.
type Handler interface {
	// Packet is one queued packet. pkt aliases the read buffer: it is valid
	// only during the call. Add a verdict to v now, or none to hold the
	// packet (then give its verdict from a later call by id).
	Packet(id uint32, pkt []byte, v *Verdicts)
	// Tick runs at least every TickInterval (and after each read timeout):
	// release held packets that waited too long.
	Tick(now time.Time, v *Verdicts)
	// Close runs once at shutdown: give a verdict to every held packet
	// (the kernel drops those still queued when the socket closes).
	Close(v *Verdicts)
}

// Leaver is an optional interface of a Handler. When LeaveQueued, asked
// at shutdown after Close, reports true, Run does not accept the packets
// still queued: they get no verdict and the kernel drops them when the
// socket closes (TCP resends them, to the next daemon). A daemon whose
// successor resumes shifted connections wants that: accepted unchanged,
// their packets would reach the peer unshifted.
type Leaver interface {
	LeaveQueued() bool
}

// Stats are a queue's counters. All only grow.
type Stats struct {
	Reads         uint64 // reads (recvmmsg calls) that returned packets
	Packets       uint64 // packets received
	Verdicts      uint64 // verdicts sent
	Modified      uint64 // verdicts that replaced the packet
	Oversize      uint64 // modified packets too long for a verdict (sent unchanged)
	Writes        uint64 // verdict batches written
	ENOBUFS       uint64 // reads that failed with ENOBUFS (the kernel dropped messages)
	Truncated     uint64 // packets cut by the copy range or the read buffer (passed unchanged)
	BadMessages   uint64 // messages that did not decode
	VerdictErrors uint64 // errors the kernel returned for verdicts
	WriteErrors   uint64 // verdict writes that failed
	ReadErrors    uint64 // other read errors
}

// Queue is one bound NFQUEUE.
type Queue struct {
	cfg Config
	fd  int

	procMu sync.Mutex
	proc   *os.File // this namespace's /proc/net/netfilter/nfnetlink_queue

	closing atomic.Bool
	mu      sync.Mutex
	running bool
	closed  bool
	done    chan struct{}

	st struct {
		reads, packets, verdicts, modified, oversize, writes, enobufs,
		truncated, bad, verdictErrors, writeErrors, readErrors atomic.Uint64
	}
	lastVerdictErrno atomic.Int32
}

// Open binds queue cfg.Queue on a new netlink socket and configures it to
// copy whole packets. Errors name the queue: "nfqueue 0: permission
// denied", "nfqueue 0: queue in use by netlink port 1234 (another ftpalg
// running?)".
func Open(cfg *Config) (*Queue, error) {
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	if c.MaxQueueLen == 0 {
		c.MaxQueueLen = DefaultMaxQueueLen
	}
	if c.RecvTimeout <= 0 {
		c.RecvTimeout = DefaultRecvTimeout
	}
	if c.TickInterval <= 0 {
		c.TickInterval = c.RecvTimeout
	}
	if c.RcvBuf <= 0 {
		c.RcvBuf = DefaultRcvBuf
	}
	fd, proc, err := socket(c.NetNS)
	if err != nil {
		return nil, fmt.Errorf("nfqueue %d: %w", c.Queue, err)
	}
	q := &Queue{cfg: c, fd: fd, proc: proc}
	if err := q.setup(); err != nil {
		unix.Close(fd)
		if proc != nil {
			proc.Close()
		}
		return nil, err
	}
	return q, nil
}

// loops counts the running loops of the process.
var loops atomic.Int32

// ErrClosed is returned by Run on a closed queue; it is net.ErrClosed, so
// errors.Is(err, net.ErrClosed) detects it.
var ErrClosed = net.ErrClosed

// Run reads packets and gives them to h until ctx is done or the queue is
// closed, then calls h.Close and sends its verdicts. It returns nil when
// ctx ended it, an error wrapping net.ErrClosed when Close did, or the
// error that stopped the loop. The loop runs on a goroutine of its own
// that is locked to its OS thread and exits locked. While it waits for
// packets it holds a P (see reader.read), so Run raises GOMAXPROCS to one
// more than the number of running loops if it is lower.
func (q *Queue) Run(ctx context.Context, h Handler) error {
	q.mu.Lock()
	if q.closed || q.closing.Load() {
		q.mu.Unlock()
		return q.errorf("run: %w", ErrClosed)
	}
	if q.running {
		q.mu.Unlock()
		return q.errorf("run: already running")
	}
	q.running = true
	q.done = make(chan struct{})
	q.mu.Unlock()

	// Each loop holds a P while it waits for packets (see reader.read):
	// leave at least one for everything else.
	if need := int(loops.Add(1)) + 1; runtime.GOMAXPROCS(0) < need {
		runtime.GOMAXPROCS(need)
	}
	defer loops.Add(-1)

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- q.loop(ctx, h)
	}()
	err := <-errc

	q.mu.Lock()
	q.running = false
	close(q.done)
	q.mu.Unlock()
	return err
}

func (q *Queue) loop(ctx context.Context, h Handler) error {
	rd := newReader()
	v := &Verdicts{queue: q.cfg.Queue, buf: make([]byte, 0, 2*readBuf)}
	v.send = q.send
	var p packet
	tick := q.cfg.TickInterval
	lastTick := time.Now()
	done := ctx.Done()

	// stop gives held packets their verdicts before the loop ends, then
	// accepts what is already queued: the kernel drops whatever is still
	// queued when the socket closes.
	stop := func(err error) error {
		h.Close(v)
		q.sendVerdicts(v)
		if l, ok := h.(Leaver); !ok || !l.LeaveQueued() {
			q.drain(rd, &p, v)
		}
		return err
	}
	for {
		select {
		case <-done:
			return stop(nil)
		default:
		}
		if q.closing.Load() {
			return stop(q.errorf("run: %w", ErrClosed))
		}
		n, err := rd.read(q.fd)
		if err != nil {
			switch {
			case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			case errors.Is(err, unix.ENOBUFS):
				q.st.enobufs.Add(1)
			case errors.Is(err, unix.EBADF):
				return stop(q.errorf("run: %w", ErrClosed))
			default:
				q.st.readErrors.Add(1)
				return stop(q.errorf("read: %w", err))
			}
		} else {
			q.st.reads.Add(1)
			for i := range n {
				q.dispatch(rd.msg(i), &p, h, v)
			}
		}
		if now := time.Now(); err != nil || now.Sub(lastTick) >= tick {
			lastTick = now
			h.Tick(now, v)
		}
		q.sendVerdicts(v)
	}
}

// readBatch is how many netlink messages one read takes at most.
const readBatch = 16

// reader reads up to readBatch netlink messages with one recvmmsg(2) into
// buffers allocated once: MSG_WAITFORONE blocks (up to SO_RCVTIMEO) for
// the first message and takes the others already queued, so a burst of
// packets costs one read and, their verdicts batched, one write.
type reader struct {
	bufs [readBatch][]byte
	iovs [readBatch]unix.Iovec
	hdrs [readBatch]unix.Mmsghdr
}

func newReader() *reader {
	r := &reader{}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, readBuf)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(readBuf)
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
	}
	return r
}

// read returns the number of messages read.
//
// It blocks in a raw system call: the goroutine keeps its P instead of
// handing it off and taking one back on return, which measured ~15 us per
// packet on a busy 2-core machine (see test/bench/RESULTS.md). This does
// not starve the runtime: its preemption signal (for a GC stop or after
// 10 ms of holding the P) interrupts the read with EINTR, because Linux
// never restarts socket reads that have SO_RCVTIMEO set (signal(7)), and
// the loop then yields at its next function call. A daemon should still
// give GOMAXPROCS at least one more P than it runs queues.
func (r *reader) read(fd int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.hdrs[0])),
		readBatch, unix.MSG_WAITFORONE, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// msg returns the bytes of message i of the last read. A message cut by a
// full buffer shows as a netlink length past its end (see dispatch).
func (r *reader) msg(i int) []byte {
	return r.bufs[i][:min(int(r.hdrs[i].Len), readBuf)]
}

// acceptAll is the handler of the shutdown drain.
type acceptAll struct{}

func (acceptAll) Packet(id uint32, _ []byte, v *Verdicts) { v.Accept(id) }

func (acceptAll) Tick(time.Time, *Verdicts) {}

func (acceptAll) Close(*Verdicts) {}

// drainLimit bounds the shutdown drain under a flood of packets.
const drainLimit = time.Second

// drain accepts, unchanged, the packets already queued, until a read finds
// none (or drainLimit passes).
func (q *Queue) drain(rd *reader, p *packet, v *Verdicts) {
	end := time.Now().Add(drainLimit)
	for time.Now().Before(end) {
		n, err := rd.read(q.fd)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOBUFS) {
				continue
			}
			return
		}
		for i := range n {
			q.dispatch(rd.msg(i), p, acceptAll{}, v)
		}
		q.sendVerdicts(v)
	}
}

// dispatch handles every netlink message of one read.
func (q *Queue) dispatch(b []byte, p *packet, h Handler, v *Verdicts) {
	for len(b) > 0 {
		m, rest, err := nextMessage(b)
		if err != nil {
			if err != errTruncated {
				q.st.bad.Add(1)
				return
			}
			// Cut by the read buffer: the packet header comes first, so
			// the packet can still be let go unchanged.
			q.st.truncated.Add(1)
			if binary.NativeEndian.Uint16(b[4:6]) == msgPacket && decodePacket(b[nlmsgHdrLen:], p) {
				q.st.packets.Add(1)
				v.Accept(p.ID)
			}
			return
		}
		b = rest
		switch m.typ {
		case msgPacket:
			if !decodePacket(m.data, p) {
				q.st.bad.Add(1)
				continue
			}
			q.st.packets.Add(1)
			if p.Payload == nil || p.CapLen > uint32(len(p.Payload)) {
				// Nothing to inspect, or only the start of a packet
				// longer than the copy range: let it go unchanged.
				if p.Payload != nil {
					q.st.truncated.Add(1)
				}
				v.Accept(p.ID)
				continue
			}
			h.Packet(p.ID, p.Payload, v)
		case nlmsgError:
			// Verdicts are sent without NLM_F_ACK: only failures come back
			// (ENOENT: no such packet id, one verdict too many).
			if errno, _, ok := errorCode(m.data); ok && errno != 0 {
				q.st.verdictErrors.Add(1)
				q.lastVerdictErrno.Store(errno)
			}
		case nlmsgNoop, nlmsgDone:
		default:
			q.st.bad.Add(1)
		}
	}
}

// sendVerdicts writes the collected verdicts, if any.
func (q *Queue) sendVerdicts(v *Verdicts) {
	q.st.verdicts.Add(v.accepted + v.dropped)
	q.st.modified.Add(v.modified)
	q.st.oversize.Add(v.oversize)
	v.accepted, v.modified, v.oversize, v.dropped = 0, 0, 0, 0
	v.flush()
}

// send writes one batch of verdict messages.
func (q *Queue) send(b []byte) {
	for {
		_, err := unix.Write(q.fd, b)
		if err == nil {
			q.st.writes.Add(1)
			return
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		// Lost verdicts leave packets queued until the socket closes; the
		// counter and LastVerdictError show it.
		q.st.writeErrors.Add(1)
		if en, ok := err.(unix.Errno); ok {
			q.lastVerdictErrno.Store(int32(en))
		}
		return
	}
}

// Stats returns the queue's counters; safe to call from any goroutine.
func (q *Queue) Stats() Stats {
	return Stats{
		Reads:         q.st.reads.Load(),
		Packets:       q.st.packets.Load(),
		Verdicts:      q.st.verdicts.Load(),
		Modified:      q.st.modified.Load(),
		Oversize:      q.st.oversize.Load(),
		Writes:        q.st.writes.Load(),
		ENOBUFS:       q.st.enobufs.Load(),
		Truncated:     q.st.truncated.Load(),
		BadMessages:   q.st.bad.Load(),
		VerdictErrors: q.st.verdictErrors.Load(),
		WriteErrors:   q.st.writeErrors.Load(),
		ReadErrors:    q.st.readErrors.Load(),
	}
}

// LastVerdictError is the last error the kernel returned for a verdict,
// or nil.
func (q *Queue) LastVerdictError() error {
	if e := q.lastVerdictErrno.Load(); e != 0 {
		return unix.Errno(e)
	}
	return nil
}

// Num is the queue's number.
func (q *Queue) Num() uint16 { return q.cfg.Queue }

// Close stops Run (within RecvTimeout; Run first gives held packets their
// verdicts) and closes the socket, which unbinds the queue. Safe to call
// more than once and from any goroutine.
func (q *Queue) Close() error {
	q.closing.Store(true)
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	done, running := q.done, q.running
	q.mu.Unlock()
	if running {
		<-done
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	if q.proc != nil {
		q.procMu.Lock()
		q.proc.Close()
		q.proc = nil
		q.procMu.Unlock()
	}
	// Closing the socket unbinds the queue in the kernel.
	if err := unix.Close(q.fd); err != nil {
		return q.errorf("close: %w", err)
	}
	return nil
}
