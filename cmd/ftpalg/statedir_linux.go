package main

import (
	"fmt"
	"syscall"
)

// stateDir resolves --state-dir: "auto" is a directory named after this
// process's network namespace.
func stateDir(flag string) (string, error) {
	if flag != "auto" {
		return flag, nil
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		return "", fmt.Errorf("--state-dir auto: %w", err)
	}
	return fmt.Sprintf("/run/ftpalg/netns-%d", st.Ino), nil
}
