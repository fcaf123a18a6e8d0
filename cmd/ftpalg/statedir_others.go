//go:build !linux

package main

import "path/filepath"

// stateDir resolves --state-dir ("auto" has no namespace to name here).
func stateDir(flag, runDir string) (string, error) {
	if flag != "auto" {
		return flag, nil
	}
	return filepath.Join(runDir, "netns"), nil
}
