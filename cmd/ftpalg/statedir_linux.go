package main

import (
	"fmt"
	"path/filepath"
	"syscall"
)

// stateDir resolves --state-dir: "auto" is a directory of runDir named
// after this process's network namespace.
func stateDir(flag, runDir string) (string, error) {
	if flag != "auto" {
		return flag, nil
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		return "", fmt.Errorf("--state-dir auto: %w", err)
	}
	return filepath.Join(runDir, fmt.Sprintf("netns-%d", st.Ino)), nil
}
