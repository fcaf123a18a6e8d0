//go:build !linux

package nfq

import (
	"context"
	"errors"
	"time"
)

// Config configures a Queue (Linux only).
type Config struct {
	Queue        uint16
	FailOpen     bool
	MaxQueueLen  uint32
	RecvTimeout  time.Duration
	TickInterval time.Duration
	RcvBuf       int
	NetNS        int
}

// Handler decides on packets (see the Linux documentation).
type Handler interface {
	Packet(id uint32, pkt []byte, v *Verdicts)
	Tick(now time.Time, v *Verdicts)
	Close(v *Verdicts)
}

// Stats are a queue's counters.
type Stats struct {
	Reads, Packets, Verdicts, Modified, Oversize, Writes, ENOBUFS, Truncated,
	BadMessages, VerdictErrors, WriteErrors, ReadErrors uint64
}

// KernelStats are a queue's counters as the kernel reports them.
type KernelStats struct{ Waiting, QueueDrops, SocketDrops uint32 }

// Queue is an NFQUEUE; only Linux has them.
type Queue struct{}

var errNotLinux = errors.New("nfqueue: only supported on Linux")

// Open fails: NFQUEUE is Linux only.
func Open(*Config) (*Queue, error) { return nil, errNotLinux }

// Run fails: NFQUEUE is Linux only.
func (*Queue) Run(context.Context, Handler) error { return errNotLinux }

// Close does nothing.
func (*Queue) Close() error { return nil }

// Stats returns zero counters.
func (*Queue) Stats() Stats { return Stats{} }

// KernelStats reports nothing.
func (*Queue) KernelStats() (KernelStats, bool) { return KernelStats{}, false }

// LastVerdictError returns nil.
func (*Queue) LastVerdictError() error { return nil }

// Num is 0.
func (*Queue) Num() uint16 { return 0 }
