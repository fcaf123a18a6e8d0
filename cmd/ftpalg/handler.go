package main

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/internal/nfq"
	"github.com/ftpalg/ftpalg/mangle"
)

// engineHandler runs one mangle.Engine on one queue. Its methods run on the
// queue's loop goroutine; stats is the only state other goroutines read.
type engineHandler struct {
	queue uint16
	eng   *mangle.Engine
	res   mangle.Result
	hold  atomic.Int64 // time.Duration; a reload may change it
	log   *slog.Logger
	debug bool

	// lastTick is the time of the last Tick (UnixNano): the watchdog
	// pings systemd only while every queue loop ticks.
	lastTick atomic.Int64

	mu    sync.Mutex
	stats mangle.Stats // copied from the engine at every Tick
	flows int

	dropHeld func() bool // at Close, leave held packets without a verdict (nil: never)

	// listReq carries requests for the engine's flows ('ftpalg
	// sessions'), answered at the next Tick on the loop goroutine.
	listReq chan chan []mangle.FlowInfo
}

// Flows returns the engine's flows, as listed by the queue's loop at its
// next Tick; ok is false if the loop did not answer within timeout.
func (h *engineHandler) Flows(timeout time.Duration) ([]mangle.FlowInfo, bool) {
	reply := make(chan []mangle.FlowInfo, 1)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case h.listReq <- reply:
	case <-t.C:
		return nil, false
	}
	select {
	case f := <-reply:
		return f, true
	case <-t.C:
		return nil, false
	}
}

func newEngineHandler(queue uint16, cfg *mangle.Config, hold time.Duration, log *slog.Logger) *engineHandler {
	h := &engineHandler{
		listReq: make(chan chan []mangle.FlowInfo),
		queue:   queue,
		eng:     mangle.New(cfg),
		log:     log,
		debug:   log.Enabled(context.Background(), slog.LevelDebug),
	}
	h.setHold(hold)
	h.lastTick.Store(time.Now().UnixNano())
	return h
}

func (h *engineHandler) setHold(d time.Duration) { h.hold.Store(int64(d)) }

func (h *engineHandler) Packet(id uint32, pkt []byte, v *nfq.Verdicts) {
	h.eng.Process(pkt, uint64(id), time.Now(), &h.res)
	h.emit(v)
}

func (h *engineHandler) Tick(now time.Time, v *nfq.Verdicts) {
	h.lastTick.Store(now.UnixNano())
	h.eng.Expire(now, time.Duration(h.hold.Load()), &h.res)
	h.emit(v)
	h.snapshot()
	select {
	case reply := <-h.listReq:
		reply <- h.eng.AppendFlows(nil)
	default:
	}
}

// LeaveQueued tells the queue loop to leave what is still queued at
// shutdown, under the same condition as Close leaves held packets.
func (h *engineHandler) LeaveQueued() bool { return h.dropHeld != nil && h.dropHeld() }

func (h *engineHandler) Close(v *nfq.Verdicts) {
	if h.dropHeld != nil && h.dropHeld() {
		h.snapshot()
		return
	}
	h.eng.Flush(&h.res)
	h.emit(v)
	h.snapshot()
}

// emit turns the engine's result into verdicts (the engine's packets are
// copied into the verdict buffer before its next call) and logs rewrites.
func (h *engineHandler) emit(v *nfq.Verdicts) {
	for i := range h.res.Emits {
		e := &h.res.Emits[i]
		if e.Drop {
			v.Drop(uint32(e.Tag))
			continue
		}
		if e.Extra {
			// The second part of a split segment: a verdict carries one
			// packet, and the daemon sends none of its own. The part is
			// lost on the wire; the receiver acknowledges the first part
			// only, and the engine sends the rest when the sender
			// retransmits (see mangle.Emit); Stats.Split counts them.
			continue
		}
		if e.Modified {
			v.AcceptModified(uint32(e.Tag), e.Packet)
		} else {
			v.Accept(uint32(e.Tag))
		}
	}
	for i := range h.res.Alerts {
		a := &h.res.Alerts[i]
		h.log.Error("control connection", "queue", h.queue, "flow", a.Flow.String(), "kind", a.Kind.String(), "error", a.Text)
	}
	if h.debug {
		for i := range h.res.Rewrites {
			r := &h.res.Rewrites[i]
			h.log.Debug("rewrite", "queue", h.queue, "flow", r.Flow.String(), "kind", r.Kind.String(),
				"dir", r.Dir.String(), "before", string(r.Before), "after", string(r.After))
		}
	}
}

func (h *engineHandler) snapshot() {
	st, n := h.eng.Stats(), h.eng.Flows()
	h.mu.Lock()
	h.stats, h.flows = st, n
	h.mu.Unlock()
}

// Stats returns the engine's counters as of its last Tick.
func (h *engineHandler) Stats() (mangle.Stats, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats, h.flows
}
