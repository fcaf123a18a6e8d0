package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"
)

// The handover of a running daemon to its successor (run --takeover,
// docs/STATE.md), over an abstract unix socket per table,
// "@ftpalg/handover/TABLE" (it belongs to the network namespace, as the
// claims of instance_linux.go do):
//
//	old -> new: "ftpalg-handover 1 FIRST COUNT\n"  the old daemon's queues
//	            (the new one binds others and points the rules at them)
//	new -> old: "finish\n"                         the rules point at the new queues
//	old -> new: "done LEFT\n"                      the old daemon verdicted
//	            what it had queued (LEFT packets it could not, held ones) and
//	            saved its state; it exits
//
// A closed connection in place of "done" means the old daemon is gone.

const handoverVersion = 1

func handoverName(table string) string { return "@ftpalg/handover/" + table }

// handoverListener is the old daemon's side: requests delivers the
// connection of a successor that asked it to finish.
type handoverListener struct {
	l        *net.UnixListener
	requests chan *net.UnixConn
}

// listenHandover listens for a successor; first and count are the daemon's
// queues.
func listenHandover(table string, first, count uint16) (*handoverListener, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: handoverName(table), Net: "unix"})
	if err != nil {
		return nil, err
	}
	h := &handoverListener{l: l, requests: make(chan *net.UnixConn, 1)}
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			// One successor at a time; a second waits for the first to
			// finish or go.
			c.SetDeadline(time.Now().Add(2 * handoverTimeout))
			fmt.Fprintf(c, "ftpalg-handover %d %d %d\n", handoverVersion, first, count)
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || strings.TrimSpace(line) != "finish" {
				c.Close()
				continue
			}
			c.SetDeadline(time.Time{})
			h.requests <- c
			return
		}
	}()
	return h, nil
}

// Close stops listening (a connection already handed out stays open).
func (h *handoverListener) Close() error {
	if h == nil {
		return nil
	}
	return h.l.Close()
}

// handoverDone tells the successor the old daemon is done.
func handoverDone(c *net.UnixConn, left uint64) {
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "done %d\n", left)
	c.Close()
}

// handoverClient is the new daemon's side.
type handoverClient struct {
	c            *net.UnixConn
	r            *bufio.Reader
	first, count uint16 // the old daemon's queues
}

// dialHandover connects to the daemon of table in this network namespace
// and reads its queues; nil and no error when none listens.
func dialHandover(table string) (*handoverClient, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: handoverName(table), Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("takeover: %w", err)
	}
	h := &handoverClient{c: c, r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(handoverTimeout))
	line, err := h.r.ReadString('\n')
	var v int
	if err == nil {
		_, err = fmt.Sscanf(line, "ftpalg-handover %d %d %d\n", &v, &h.first, &h.count)
	}
	if err == nil && v != handoverVersion {
		err = fmt.Errorf("version %d, want %d", v, handoverVersion)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("takeover: the running daemon's greeting: %w", err)
	}
	return h, nil
}

// finish tells the old daemon to finish and waits, up to the deadline,
// until it is done or gone. left is what it reported it could not
// verdict; err says why the wait ended otherwise (a timeout).
func (h *handoverClient) finish(deadline time.Time) (left uint64, err error) {
	defer h.c.Close()
	h.c.SetDeadline(deadline)
	if _, err := h.c.Write([]byte("finish\n")); err != nil {
		return 0, err
	}
	line, err := h.r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil // gone without a word (killed meanwhile)
		}
		return 0, err
	}
	_, err = fmt.Sscanf(line, "done %d\n", &left)
	return left, err
}
