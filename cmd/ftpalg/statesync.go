package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
)

// State replication for router failover (docs/STATE.md, "Failover"): each
// write and removal of the journal is sent as one UDP datagram to the
// peer router's daemon (--state-sync-peer), which applies it to its own
// journal and set of shifted connections (--state-sync-listen), so that
// after a switch the first packet of a flow it meets mid-connection finds
// the state there, as after a restart on one box.
//
// A record:
//
//	0   "FTSY"
//	4   version (1)
//	5   op: 1 save, 2 drop
//	6   epoch: the sender's start (ns since 1970), 8 bytes
//	14  sequence number of the sender's records, 8 bytes
//	22  client: family (4 or 16), address, port (2 bytes); then the server
//	    the state's length (2 bytes), the state (save only)
//	    with a key (--state-sync-key): HMAC-SHA256 of all of the above
//
// Records are taken only from the peer's address, checked as a whole
// (length, every field, the key's tag, the state as the engine would
// restore it) before anything is written, and applied only if newer than
// the last one of the connection from the same sender.

const (
	syncVersion = 1
	syncSave    = 1
	syncDrop    = 2
	syncHdrLen  = 22
	syncTagLen  = sha256.Size
	// syncMaxLen bounds a record: header, two endpoints, length, state,
	// tag.
	syncMaxLen = syncHdrLen + 2*(1+16+2) + 2 + mangle.MaxStateLen + syncTagLen
	// syncResend is how often the sender sends every open connection's
	// state again, for a peer that started late or lost a datagram.
	syncResend = 10 * time.Second
	// syncMaxTombs bounds the remembered removals (against a delayed save
	// arriving after its removal).
	syncMaxTombs = 4096
)

var syncMagic = [4]byte{'F', 'T', 'S', 'Y'}

// syncRecord is a decoded record.
type syncRecord struct {
	op         byte
	epoch, seq uint64
	key        mangle.FlowKey
	state      []byte
}

func appendEndpoint(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	if a.Is4() {
		v := a.As4()
		b = append(append(b, 4), v[:]...)
	} else {
		v := a.As16()
		b = append(append(b, 16), v[:]...)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// appendSyncRecord appends the encoded record to b; key, if not empty,
// adds the tag.
func appendSyncRecord(b []byte, r *syncRecord, key []byte) []byte {
	start := len(b)
	b = append(b, syncMagic[:]...)
	b = append(b, syncVersion, r.op)
	b = binary.BigEndian.AppendUint64(b, r.epoch)
	b = binary.BigEndian.AppendUint64(b, r.seq)
	b = appendEndpoint(b, r.key.Client())
	b = appendEndpoint(b, r.key.Server())
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.state)))
	b = append(b, r.state...)
	if len(key) > 0 {
		m := hmac.New(sha256.New, key)
		m.Write(b[start:])
		b = m.Sum(b)
	}
	return b
}

var errSyncRecord = errors.New("malformed record")

// decodeSyncRecord decodes and checks a record; its state aliases b.
func decodeSyncRecord(b []byte, key []byte) (*syncRecord, error) {
	if len(b) > syncMaxLen || len(b) < syncHdrLen || [4]byte(b[:4]) != syncMagic {
		return nil, errSyncRecord
	}
	if b[4] != syncVersion {
		return nil, fmt.Errorf("record version %d (want %d)", b[4], syncVersion)
	}
	if len(key) > 0 {
		if len(b) < syncHdrLen+syncTagLen {
			return nil, errSyncRecord
		}
		body, tag := b[:len(b)-syncTagLen], b[len(b)-syncTagLen:]
		m := hmac.New(sha256.New, key)
		m.Write(body)
		if !hmac.Equal(m.Sum(nil), tag) {
			return nil, errors.New("bad tag (another --state-sync-key?)")
		}
		b = body
	}
	r := &syncRecord{op: b[5], epoch: binary.BigEndian.Uint64(b[6:]), seq: binary.BigEndian.Uint64(b[14:])}
	rest := b[syncHdrLen:]
	endpoint := func() (netip.AddrPort, bool) {
		if len(rest) < 1 {
			return netip.AddrPort{}, false
		}
		n := int(rest[0])
		if n != 4 && n != 16 || len(rest) < 1+n+2 {
			return netip.AddrPort{}, false
		}
		a, _ := netip.AddrFromSlice(rest[1 : 1+n])
		port := binary.BigEndian.Uint16(rest[1+n:])
		rest = rest[1+n+2:]
		ok := port != 0 && !a.Is4In6() && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback()
		return netip.AddrPortFrom(a, port), ok
	}
	c, ok1 := endpoint()
	s, ok2 := endpoint()
	if !ok1 || !ok2 || c.Addr().Is4() != s.Addr().Is4() || len(rest) < 2 {
		return nil, errSyncRecord
	}
	n := int(binary.BigEndian.Uint16(rest))
	if len(rest) != 2+n {
		return nil, errSyncRecord
	}
	r.key, r.state = mangle.FlowKeyOf(c, s), rest[2:]
	switch r.op {
	case syncSave:
		if !mangle.StateValid(r.state) {
			return nil, errors.New("state the engine would not restore")
		}
	case syncDrop:
		if n != 0 {
			return nil, errSyncRecord
		}
	default:
		return nil, fmt.Errorf("unknown op %d", r.op)
	}
	return r, nil
}

// syncOrder keeps the receiver's ordering: per connection the sequence
// number of the last record applied, for the sender's current epoch.
type syncOrder struct {
	epoch, prev uint64 // the sender's epoch, and the one before it
	last        map[mangle.FlowKey]uint64
	tombs       map[mangle.FlowKey]uint64 // removals: a delayed older save must not bring the state back
}

// accept reports whether r is newer than what was applied for its
// connection, and records it.
func (o *syncOrder) accept(r *syncRecord) bool {
	switch {
	case o.last != nil && r.epoch == o.prev:
		return false // a delayed record of the previous sender process
	case r.epoch != o.epoch || o.last == nil:
		// A new sender process. Not "a later epoch": a router whose clock
		// was stepped back (at boot, before NTP) must not be ignored.
		o.prev, o.epoch, o.last, o.tombs = o.epoch, r.epoch, map[mangle.FlowKey]uint64{}, map[mangle.FlowKey]uint64{}
	}
	if s, ok := o.last[r.key]; ok && r.seq <= s {
		return false
	}
	if s, ok := o.tombs[r.key]; ok && r.seq <= s {
		return false
	}
	if r.op == syncDrop {
		delete(o.last, r.key)
		if len(o.tombs) >= syncMaxTombs {
			clear(o.tombs)
		}
		o.tombs[r.key] = r.seq
		return true
	}
	delete(o.tombs, r.key)
	o.last[r.key] = r.seq
	return true
}

// stateSync is the sender and the receiver of one daemon.
type stateSync struct {
	log  *slog.Logger
	j    *journal
	peer netip.AddrPort
	key  []byte
	conn *net.UDPConn // the listening socket (also sends), or an unbound one

	// Under j.mu (the journal calls send with it held).
	epoch, seq uint64
	buf        []byte

	order syncOrder // receiver goroutine only

	sent, sendErrs, received, applied, rejected, stale atomic.Uint64
}

// startStateSync hooks the journal to the peer and, with listen, starts
// applying the peer's records. keyFile may be empty.
func startStateSync(j *journal, peer, listen, keyFile string, log *slog.Logger) (*stateSync, error) {
	s := &stateSync{log: log, j: j, epoch: uint64(time.Now().UnixNano())}
	var err error
	if s.peer, err = netip.ParseAddrPort(peer); err != nil {
		return nil, fmt.Errorf("--state-sync-peer: %w", err)
	}
	s.peer = netip.AddrPortFrom(s.peer.Addr().Unmap(), s.peer.Port())
	if keyFile != "" {
		k, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, fmt.Errorf("--state-sync-key: %w", err)
		}
		if s.key = bytes.TrimSpace(k); len(s.key) < 16 {
			return nil, fmt.Errorf("--state-sync-key %s: want at least 16 bytes of secret", keyFile)
		}
	}
	var la *net.UDPAddr
	if listen != "" {
		ap, err := netip.ParseAddrPort(listen)
		if err != nil {
			return nil, fmt.Errorf("--state-sync-listen: %w", err)
		}
		la = net.UDPAddrFromAddrPort(ap)
	}
	if s.conn, err = net.ListenUDP("udp", la); err != nil {
		return nil, fmt.Errorf("state sync: %w", err)
	}
	j.mu.Lock()
	j.sync = s.send
	j.mu.Unlock()
	if listen != "" {
		go s.receive()
	}
	go s.resendLoop()
	return s, nil
}

// send sends one record; called by the journal with j.mu held, so the
// sequence numbers follow the order of the writes. It never blocks on the
// peer: a UDP send that fails is counted and forgotten (the next write of
// the connection, or the periodic resend, carries the whole state).
func (s *stateSync) send(op byte, k mangle.FlowKey, state []byte) {
	s.seq++
	s.buf = appendSyncRecord(s.buf[:0], &syncRecord{op: op, epoch: s.epoch, seq: s.seq, key: k, state: state}, s.key)
	s.conn.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := s.conn.WriteToUDPAddrPort(s.buf, s.peer); err != nil {
		if s.sendErrs.Add(1) <= 5 {
			s.log.Warn("state sync: send", "peer", s.peer, "err", err)
		}
		return
	}
	s.sent.Add(1)
}

// resendLoop sends every open connection's state again every syncResend.
func (s *stateSync) resendLoop() {
	t := time.NewTicker(syncResend)
	defer t.Stop()
	for range t.C {
		if !s.resend() {
			return
		}
	}
}

// resend sends the journal's open connections; false once closed.
func (s *stateSync) resend() bool {
	j := s.j
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.sync == nil {
		return false
	}
	for k := range j.known {
		if _, closed := j.closed[k]; closed {
			continue
		}
		b, err := os.ReadFile(filepath.Join(j.dir, journalName(k)))
		if err != nil || len(b) < 4 {
			continue
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(n) > uint64(len(b)-4) {
			continue
		}
		s.send(syncSave, k, b[4:4+n])
	}
	return true
}

// receive applies the peer's records until the socket is closed.
func (s *stateSync) receive() {
	buf := make([]byte, syncMaxLen+1)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.received.Add(1)
		if from.Addr().Unmap() != s.peer.Addr() {
			s.reject("not from the peer", from, nil)
			continue
		}
		r, err := decodeSyncRecord(buf[:n], s.key)
		if err != nil {
			s.reject("rejected record", from, err)
			continue
		}
		if !s.order.accept(r) {
			s.stale.Add(1)
			continue
		}
		if r.op == syncSave {
			s.j.save(r.key, r.state, false)
		} else {
			s.j.drop(r.key, false)
		}
		s.applied.Add(1)
	}
}

func (s *stateSync) reject(what string, from netip.AddrPort, err error) {
	if s.rejected.Add(1) <= 10 {
		s.log.Warn("state sync: "+what, "from", from, "err", err)
	}
}

// Close unhooks the journal and closes the socket; it logs the counters.
func (s *stateSync) Close() error {
	s.j.mu.Lock()
	s.j.sync = nil
	s.j.mu.Unlock()
	s.log.Info("state sync stopped", "peer", s.peer, "sent", s.sent.Load(), "send_errors", s.sendErrs.Load(),
		"received", s.received.Load(), "applied", s.applied.Load(), "rejected", s.rejected.Load(), "stale", s.stale.Load())
	return s.conn.Close()
}
