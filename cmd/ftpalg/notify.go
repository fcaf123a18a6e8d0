package main

import (
	"net"
	"os"
	"strconv"
	"time"
)

// The systemd service notification protocol (sd_notify(3)): a service of
// Type=notify sends "READY=1" on the datagram socket NOTIFY_SOCKET names
// once it is up, "RELOADING=1"/"READY=1" around a reload, "STOPPING=1"
// when it shuts down, and "WATCHDOG=1" at least every WATCHDOG_USEC when
// the unit has WatchdogSec=. Without NOTIFY_SOCKET (not under systemd)
// every call does nothing.

// sdNotify sends state (lines "KEY=value") to NOTIFY_SOCKET. It reports
// whether a socket was there.
func sdNotify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	// A leading '@' names an abstract socket; the net package maps it.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return true, err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return true, err
}

// watchdogInterval is how often systemd wants a WATCHDOG=1 (WATCHDOG_USEC,
// for this process if WATCHDOG_PID says so); ok is false without one.
func watchdogInterval() (time.Duration, bool) {
	us, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || us == 0 {
		return 0, false
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(os.Getpid()) {
		return 0, false
	}
	return time.Duration(us) * time.Microsecond, true
}
