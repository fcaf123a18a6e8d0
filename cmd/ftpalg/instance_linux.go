//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// claimInstance makes sure no other ftpalg in this network namespace uses
// the table or one of the queues: it binds an abstract unix socket per
// resource ("@ftpalg/table/NAME", "@ftpalg/queue/N"). Abstract sockets
// belong to a network namespace and vanish with their process, so a
// crashed daemon never blocks its successor, and daemons in other
// namespaces never collide. release closes them.
func claimInstance(table string, queues []uint16) (release func(), err error) {
	var held []*net.UnixListener
	release = func() {
		for _, l := range held {
			l.Close()
		}
	}
	var names []string
	if table != "" { // a daemon that takes over claims the table last (run.go)
		names = append(names, "table/"+table)
	}
	for _, q := range queues {
		names = append(names, fmt.Sprintf("queue/%d", q))
	}
	for _, n := range names {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: "@ftpalg/" + n, Net: "unix"})
		if err != nil {
			release()
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("%w: another ftpalg %s uses %s in this network namespace (give this one another --table and --queue-num)", errInstance, holder(n), n)
			}
			return nil, fmt.Errorf("claim %s: %w", n, err)
		}
		go func() {
			// Accept and close, so a later daemon can ask who holds it.
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		held = append(held, l)
	}
	return release, nil
}

// holder names the process that holds the abstract socket of n ("(pid
// 123)"), or "" if it cannot tell.
func holder(n string) string {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: "@ftpalg/" + n, Net: "unix"})
	if err != nil {
		return ""
	}
	defer c.Close()
	raw, err := c.SyscallConn()
	if err != nil {
		return ""
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return ""
	}
	return fmt.Sprintf("(pid %d)", cred.Pid)
}
