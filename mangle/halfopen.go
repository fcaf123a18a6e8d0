package mangle

import (
	"hash/maphash"
	"math"
	"time"
)

// Half-open connections in a compact table.
//
// A connection that a client's SYN opens is kept, until its first payload,
// as an 80-byte record (hoRec) rather than a flow: its key, what the
// handshake tells the engine (initial sequence numbers, acknowledgements,
// the MSS each side announced) and its times. A SYN flood then costs about
// 100 bytes per spoofed connection (TestHalfOpenMemory) instead of a flow's
// 800. The record answers the packets of an ordinary handshake (the SYN
// again, the SYN-ACK, bare ACKs), none of which the engine changes; any
// other packet (payload, FIN, RST, a bare ACK beyond the numbers seen)
// first turns the record into the flow the engine would have built from
// the same packets (promote), which then takes the packet as before.
//
// The records have their own bound, Config.MaxFlows of them, apart from
// the flow table's: a new one past it evicts the oldest (counted in
// Stats.HalfOpenEvicted). A record never holds state a session needs: an
// evicted real session is picked up again at the server's greeting, like
// any flow met mid-connection.

// hoChunk is how many records are allocated at a time.
const hoChunk = 1024

// hoRec is a half-open connection. It holds no pointer, so the collector
// never scans the records.
type hoRec struct {
	key       FlowKey
	mss       [2]uint16 // by Dir: stream.mss
	flags     uint8
	next      [2]uint32 // by Dir: stream.next (valid once synced)
	acked     [2]uint32 // by Dir: stream.acked and stream.rcvAck (equal while no rewrite shifts them)
	prev, nxt int32     // the age list, oldest first (nxt also links free records)
	lastMs    uint32    // the last packet, in milliseconds after started (saturating)
	started   int64     // the first packet, Unix nanoseconds
}

const (
	hoUsed      = 1 << iota
	hoTranslate // the Mapper translates it
	hoSynced    // << Dir: stream.synced
	_
	hoAckSeen // << Dir: stream.ackSeen and stream.rcvSeen
)

func (r *hoRec) synced(d Dir) bool  { return r.flags&(hoSynced<<d) != 0 }
func (r *hoRec) ackSeen(d Dir) bool { return r.flags&(hoAckSeen<<d) != 0 }

func (r *hoRec) last() time.Time {
	return time.Unix(0, r.started+int64(r.lastMs)*int64(time.Millisecond))
}

func (r *hoRec) touch(now time.Time) {
	ms := (now.UnixNano() - r.started) / int64(time.Millisecond)
	r.lastMs = uint32(min(max(ms, 0), math.MaxUint32))
}

// hoTable holds the records: chunks of them, a free list, the age list,
// and an open-addressing index (linear probing, at most half full) keyed
// by a seeded hash, so that spoofed addresses cannot be chosen to collide.
type hoTable struct {
	chunks     []*[hoChunk]hoRec
	free       int32 // first free record, -1: none
	head, tail int32 // oldest and newest record, -1: none
	n          int
	idx        []uint32 // record number + 1, 0: empty
	seed       maphash.Seed
}

func (t *hoTable) init() {
	t.free, t.head, t.tail = -1, -1, -1
	t.seed = maphash.MakeSeed()
}

func (t *hoTable) rec(i int32) *hoRec { return &t.chunks[i/hoChunk][i%hoChunk] }

func (t *hoTable) hash(k *FlowKey) uint64 {
	var b [37]byte
	copy(b[:16], k.client[:])
	copy(b[16:32], k.server[:])
	b[32], b[33], b[34], b[35] = byte(k.cport), byte(k.cport>>8), byte(k.sport), byte(k.sport>>8)
	if k.v6 {
		b[36] = 1
	}
	return maphash.Bytes(t.seed, b[:])
}

// find returns the record of key k, or -1.
func (t *hoTable) find(k *FlowKey) int32 {
	if t.n == 0 {
		return -1
	}
	mask := uint64(len(t.idx) - 1)
	for j := t.hash(k) & mask; t.idx[j] != 0; j = (j + 1) & mask {
		if i := int32(t.idx[j] - 1); t.rec(i).key == *k {
			return i
		}
	}
	return -1
}

func (t *hoTable) place(i int32) {
	mask := uint64(len(t.idx) - 1)
	j := t.hash(&t.rec(i).key) & mask
	for t.idx[j] != 0 {
		j = (j + 1) & mask
	}
	t.idx[j] = uint32(i) + 1
}

// add makes a record for k (not in the table) as the newest.
func (t *hoTable) add(k FlowKey) int32 {
	if 2*(t.n+1) > len(t.idx) {
		old := t.idx
		t.idx = make([]uint32, max(2*len(old), 64))
		for _, v := range old {
			if v != 0 {
				t.place(int32(v - 1))
			}
		}
	}
	i := t.free
	if i >= 0 {
		t.free = t.rec(i).nxt
	} else {
		i = int32(len(t.chunks) * hoChunk)
		t.chunks = append(t.chunks, new([hoChunk]hoRec))
		// The new chunk's other records go on the free list, in order.
		for j := i + hoChunk - 1; j > i; j-- {
			t.rec(j).nxt = t.free
			t.free = j
		}
	}
	r := t.rec(i)
	*r = hoRec{key: k, flags: hoUsed, prev: t.tail, nxt: -1}
	if t.tail >= 0 {
		t.rec(t.tail).nxt = i
	} else {
		t.head = i
	}
	t.tail = i
	t.place(i)
	t.n++
	return i
}

// remove forgets record i.
func (t *hoTable) remove(i int32) {
	r := t.rec(i)
	if r.prev >= 0 {
		t.rec(r.prev).nxt = r.nxt
	} else {
		t.head = r.nxt
	}
	if r.nxt >= 0 {
		t.rec(r.nxt).prev = r.prev
	} else {
		t.tail = r.prev
	}
	// Take it out of the index, moving back the entries after it that
	// would no longer be found (backward-shift deletion).
	mask := uint64(len(t.idx) - 1)
	j := t.hash(&r.key) & mask
	for t.idx[j] != uint32(i)+1 {
		j = (j + 1) & mask
	}
	for {
		t.idx[j] = 0
		k := j
		for {
			k = (k + 1) & mask
			if t.idx[k] == 0 {
				goto done
			}
			h := t.hash(&t.rec(int32(t.idx[k]-1)).key) & mask
			// The entry at k stays if its home h lies cyclically in (j, k].
			if j <= k && j < h && h <= k || j > k && (j < h || h <= k) {
				continue
			}
			t.idx[j] = t.idx[k]
			j = k
			break
		}
	}
done:
	*r = hoRec{nxt: t.free}
	t.free = i
	if t.n--; t.n == 0 {
		t.shrink()
	}
}

// shrink gives back the memory of an empty table (a flood is over, or
// every session of a burst got its payload) but for one chunk and a small
// index, so that connections coming one at a time allocate nothing.
func (t *hoTable) shrink() {
	if len(t.idx) > 64 {
		t.idx = make([]uint32, 64) // the old one is all empty
	}
	if len(t.chunks) <= 1 {
		return
	}
	clear(t.chunks[1:])
	t.chunks = t.chunks[:1]
	t.free = -1
	for j := int32(hoChunk - 1); j >= 0; j-- {
		t.chunks[0][j].nxt = t.free
		t.free = j
	}
}

// isClientSYN reports whether the current packet opens a connection: a
// client's SYN without payload.
func (e *Engine) isClientSYN(d Dir) bool {
	p := &e.pkt
	return d == ToServer && p.flags&(tcpSYN|tcpACK|tcpFIN|tcpRST) == tcpSYN && len(p.data()) == 0
}

// startHalfOpen follows a connection from its client's SYN (the current
// packet, its checksum verified) as a record, the oldest record making
// room past the bound.
func (e *Engine) startHalfOpen(key FlowKey, tag uint64, b []byte, now time.Time) {
	if e.ho.n >= e.cfg.MaxFlows {
		e.stats.HalfOpenEvicted++
		e.ho.remove(e.ho.head)
	}
	i := e.ho.add(key)
	r := e.ho.rec(i)
	r.started = now.UnixNano()
	e.stats.Flows++
	if e.cfg.State != nil {
		// A client's SYN opens a new connection: a state saved under its
		// key is stale (restoreState).
		e.cfg.State.DropFlow(key)
	}
	if sess, ok := e.cfg.Mapper.Classify(key.Client(), key.Server()); !ok || sess.Kind == KindNone {
		e.stats.Untranslated++
		e.emitOrig(tag, b)
		return
	}
	r.flags |= hoTranslate
	e.halfOpenPacket(i, ToServer, tag, b, now, true)
}

// halfOpenPacket handles the current packet (direction d) of record i and
// reports true, or reports false, having done nothing, when the record
// cannot take it and must become a flow first. What it does to the record
// is what process does to the flow the record stands for: packets of an
// ordinary handshake leave unchanged.
// verified says the packet's checksum was verified.
func (e *Engine) halfOpenPacket(i int32, d Dir, tag uint64, b []byte, now time.Time, verified bool) bool {
	r := e.ho.rec(i)
	p := &e.pkt
	if r.flags&hoTranslate == 0 {
		e.stats.Untranslated++
		e.emitOrig(tag, b)
		return true
	}
	if len(p.data()) > 0 || p.flags&(tcpFIN|tcpRST) != 0 {
		return false
	}
	if !verified && !e.cfg.TrustChecksums && !p.checksumOK() {
		e.stats.BadChecksum++
		e.emitOrig(tag, b)
		return true
	}
	switch p.flags & (tcpSYN | tcpACK) {
	case tcpSYN:
		if d != ToServer {
			return false
		}
		if r.synced(ToServer) && p.seq+1 != r.next[ToServer] {
			// A new connection reusing the key.
			key := r.key
			e.ho.remove(i)
			e.startHalfOpen(key, tag, b, now)
			return true
		}
		r.mss[ToClient] = p.mss()
		if !r.synced(ToServer) {
			r.next[ToServer] = p.seq + 1
			r.flags |= hoSynced << ToServer
		}
	case tcpSYN | tcpACK:
		if d != ToClient {
			return false
		}
		r.mss[ToServer] = p.mss()
		if !r.synced(ToClient) {
			r.next[ToClient] = p.seq + 1
			r.flags |= hoSynced << ToClient
		}
	default:
		if !r.synced(d) {
			r.next[d] = p.seq
			r.flags |= hoSynced << d
		} else if seqLT(r.next[d], p.seq) {
			return false // process would send it at r.next[d]
		}
	}
	if p.flags&tcpACK != 0 {
		if o := 1 - d; !r.ackSeen(o) || seqLT(r.acked[o], p.ack) {
			r.acked[o] = p.ack
			r.flags |= hoAckSeen << o
		}
	}
	r.touch(now)
	e.emitOrig(tag, b)
	return true
}

// promote turns record i into the flow process would have built from the
// same packets, or forgets it and returns nil when the flow table has no
// room (evict.go).
func (e *Engine) promote(i int32) *flow {
	r := *e.ho.rec(i)
	e.ho.remove(i)
	f := e.allocFlow(r.key, time.Unix(0, r.started))
	if f == nil {
		return nil
	}
	f.last = r.last()
	// Its SYN went through process: the greeting is awaited.
	f.push(pendingCmd{kind: cmdGreeting})
	for d := range f.s {
		st := &f.s[d]
		st.mss = r.mss[d]
		st.next, st.synced = r.next[d], r.synced(Dir(d))
		st.acked, st.rcvAck = r.acked[d], r.acked[d]
		st.ackSeen, st.rcvSeen = r.ackSeen(Dir(d)), r.ackSeen(Dir(d))
	}
	return f
}

// expireHalfOpen forgets the records idle for longer than the idle
// timeout.
func (e *Engine) expireHalfOpen(now time.Time) {
	cut := now.Add(-e.cfg.IdleTimeout)
	for i := e.ho.head; i >= 0; {
		r := e.ho.rec(i)
		next := r.nxt
		if r.last().Before(cut) {
			e.ho.remove(i)
		}
		i = next
	}
}
