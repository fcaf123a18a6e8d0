package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/ftpalg/ftpalg/rules"
)

// journal is the daemon's mangle.StateStore (docs/STATE.md): one file per
// control connection in a directory on tmpfs (/run), rewritten in place
// with a single pwrite each time the engine saves the connection's state,
// never synced (it has to survive the daemon, not the machine). A
// connection's first save also puts it in the ruleset's set of shifted
// connections, before the packet that needs the state is sent, so that
// while no daemon runs its packets are dropped instead of passing
// unshifted.
//
// A file holds a 4-byte length, then the engine's encoded state (which
// carries its own checksum); a longer earlier state may follow and is
// ignored. Names are "client_server" (netip.AddrPort text).
type journal struct {
	dir string
	set *rules.Shifted // nil: no set (rules without bypass, or --no-rules)
	log *slog.Logger

	mu     sync.Mutex
	known  map[mangle.FlowKey]struct{}
	closed map[mangle.FlowKey]struct{} // FIN both ways: kept for late retransmissions, but not waited for
	files  map[mangle.FlowKey]*os.File // open files, at most maxOpenFiles

	saves, errs atomic.Uint64

	// sync, when set, gets each write and removal as it happens, under
	// mu (so in the order of the writes): the sender of --state-sync-peer
	// (statesync.go). Records applied from the peer are not passed on.
	sync func(op byte, k mangle.FlowKey, state []byte)
}

// openJournal opens (creating) dir and lists the connections a previous
// daemon left in it. Files not written for longer than maxAge belong to
// connections that are over: they are removed.
func openJournal(dir string, maxAge time.Duration, log *slog.Logger) (*journal, []rules.Conn, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("--state-dir: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("--state-dir: %w", err)
	}
	j := &journal{dir: dir, log: log, known: map[mangle.FlowKey]struct{}{}, closed: map[mangle.FlowKey]struct{}{},
		files: map[mangle.FlowKey]*os.File{}}
	var conns []rules.Conn
	for _, e := range ents {
		c, ok := parseJournalName(e.Name())
		info, err := e.Info()
		if !ok || err != nil || !info.Mode().IsRegular() {
			continue
		}
		age := time.Since(info.ModTime())
		closed := journalClosed(filepath.Join(dir, e.Name()))
		if age > maxAge || closed && age > closedAge {
			os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		k := mangle.FlowKeyOf(c.Client, c.Server)
		j.known[k] = struct{}{}
		if closed {
			j.closed[k] = struct{}{}
		}
		conns = append(conns, c)
	}
	return j, conns, nil
}

// openInJournal counts the connections a journal holds that are still
// open and recent (as openJournal would resume them), without changing
// it; 0 when there is none or no journal.
func openInJournal(stateFlag, runDir string) int {
	if stateFlag == "" {
		return 0
	}
	dir, err := stateDir(stateFlag, runDir)
	if err != nil {
		return 0
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		info, err := e.Info()
		if _, ok := parseJournalName(e.Name()); !ok || err != nil || !info.Mode().IsRegular() {
			continue
		}
		if time.Since(info.ModTime()) < journalMaxAge && !journalClosed(filepath.Join(dir, e.Name())) {
			n++
		}
	}
	return n
}

// journalMaxAge is how long an unchanged state is kept: a connection idle
// that long is over.
const journalMaxAge = 2 * time.Hour

// closedAge is how long the state of a connection closed both ways is
// kept: as long as the engine keeps such a flow, for late retransmissions
// of its last segments.
const closedAge = 2 * time.Minute

// journalClosed reports whether the file holds the state of a connection
// closed both ways.
func journalClosed(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [4 + 8]byte
	n, _ := f.ReadAt(b[:], 0)
	return n == len(b) && mangle.StateClosed(b[4:])
}

func journalName(k mangle.FlowKey) string {
	return k.Client().String() + "_" + k.Server().String()
}

func parseJournalName(s string) (rules.Conn, bool) {
	a, b, ok := strings.Cut(s, "_")
	if !ok {
		return rules.Conn{}, false
	}
	c, err1 := netip.ParseAddrPort(a)
	v, err2 := netip.ParseAddrPort(b)
	return rules.Conn{Client: c, Server: v}, err1 == nil && err2 == nil
}

// SaveFlow writes the state; the first save of a connection adds it to
// the set of shifted connections first.
func (j *journal) SaveFlow(k mangle.FlowKey, state []byte) { j.save(k, state, true) }

// save is SaveFlow; replicate passes the write on to j.sync.
func (j *journal) save(k mangle.FlowKey, state []byte, replicate bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.known[k]; !ok {
		if err := j.set.Add(rules.Conn{Client: k.Client(), Server: k.Server()}); err != nil {
			j.fail("add to the set of shifted connections", k, err)
		}
		j.known[k] = struct{}{}
	}
	if mangle.StateClosed(state) {
		j.closed[k] = struct{}{}
	}
	var buf [4 + mangle.MaxStateLen]byte
	binary.BigEndian.PutUint32(buf[:], uint32(len(state)))
	n := copy(buf[4:], state)
	// A file stays open while the connection lives (a pwrite costs a few
	// µs, open and close ten times more: docs/STATE.md), up to
	// maxOpenFiles; past that each write opens and closes its file.
	f, ok := j.files[k]
	var err error
	if !ok {
		f, err = os.OpenFile(filepath.Join(j.dir, journalName(k)), os.O_WRONLY|os.O_CREATE, 0o600)
		if err == nil && len(j.files) < maxOpenFiles {
			j.files[k] = f
			ok = true
		}
	}
	if err == nil {
		_, err = f.WriteAt(buf[:4+n], 0)
		if !ok {
			err = errors.Join(err, f.Close())
		}
	}
	if err != nil {
		j.fail("save state", k, err)
		return
	}
	j.saves.Add(1)
	if replicate && j.sync != nil {
		j.sync(syncSave, k, state)
	}
}

// LoadFlow reads the state of a connection the journal knows.
func (j *journal) LoadFlow(k mangle.FlowKey, buf []byte) []byte {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.known[k]; !ok {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(j.dir, journalName(k)))
	if err != nil || len(b) < 4 {
		j.fail("load state", k, err)
		return nil
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		j.fail("load state", k, errors.New("truncated"))
		return nil
	}
	return append(buf, b[4:4+n]...)
}

// DropFlow removes the connection's file and its set elements.
func (j *journal) DropFlow(k mangle.FlowKey) { j.drop(k, true) }

// drop is DropFlow; replicate passes the removal on to j.sync.
func (j *journal) drop(k mangle.FlowKey, replicate bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.known[k]; !ok {
		return
	}
	if replicate && j.sync != nil {
		j.sync(syncDrop, k, nil)
	}
	delete(j.known, k)
	delete(j.closed, k)
	if f, ok := j.files[k]; ok {
		f.Close()
		delete(j.files, k)
	}
	if err := os.Remove(filepath.Join(j.dir, journalName(k))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		j.fail("remove state", k, err)
	}
	if err := j.set.Delete(rules.Conn{Client: k.Client(), Server: k.Server()}); err != nil {
		j.fail("delete from the set of shifted connections", k, err)
	}
}

// maxOpenFiles bounds the journal files kept open.
const maxOpenFiles = 4096

// Close closes the open files (the journal stays for the next daemon).
func (j *journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for k, f := range j.files {
		f.Close()
		delete(j.files, k)
	}
	return nil
}

// open is the number of connections the journal holds that this daemon
// did not see closed.
func (j *journal) open() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.known) - len(j.closed)
}

// conns lists the connections the journal holds that this daemon did not
// see closed, for the ruleset's set of shifted connections.
func (j *journal) conns() []rules.Conn {
	j.mu.Lock()
	defer j.mu.Unlock()
	var cs []rules.Conn
	for k := range j.known {
		if _, closed := j.closed[k]; closed {
			continue
		}
		if c, ok := parseJournalName(journalName(k)); ok {
			cs = append(cs, c)
		}
	}
	return cs
}

func (j *journal) fail(what string, k mangle.FlowKey, err error) {
	if j.errs.Add(1) <= 10 {
		j.log.Warn("state journal: "+what, "flow", k.String(), "err", err)
	}
}

// rescan lists the directory again, for a daemon that took over from a
// running one (handover.go): the connections the old daemon saved or
// dropped after openJournal listed them. It returns how many it holds.
func (j *journal) rescan() int {
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		j.log.Warn("state journal: list again after the handover", "err", err)
		return j.open()
	}
	known, closed := map[mangle.FlowKey]struct{}{}, map[mangle.FlowKey]struct{}{}
	for _, e := range ents {
		c, ok := parseJournalName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		k := mangle.FlowKeyOf(c.Client, c.Server)
		known[k] = struct{}{}
		if journalClosed(filepath.Join(j.dir, e.Name())) {
			closed[k] = struct{}{}
		}
	}
	j.mu.Lock()
	j.known, j.closed = known, closed
	j.mu.Unlock()
	return j.open()
}
