package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// startSuccessor starts the daemon's binary again with args and
// --takeover, for an upgrade without loss (SIGUSR2): the file on disk,
// which a package upgrade replaced, with the environment of this process
// (systemd's NOTIFY_SOCKET: the new daemon tells systemd it is the main
// process) and its standard output and error. The channel gets the new
// daemon's exit; it only matters while this daemon still runs, that is if
// the new one failed before it took over.
func startSuccessor(args []string) (<-chan error, error) {
	exe := os.Args[0]
	if !filepath.IsAbs(exe) {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find the binary: %w", err)
		}
		// A replaced binary shows as "PATH (deleted)": the new file is at PATH.
		exe = strings.TrimSuffix(exe, " (deleted)")
	}
	cmd := exec.Command(exe, append(append([]string{"run"}, args...), "--takeover")...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = successorEnv(os.Environ())
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return done, nil
}

// successorEnv is this daemon's environment without WATCHDOG_PID, which
// names this process: the new daemon pings systemd's watchdog itself.
func successorEnv(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, "WATCHDOG_PID=") {
			out = append(out, e)
		}
	}
	return out
}
