//go:build !linux

package main

// stateDir resolves --state-dir ("auto" has no namespace to name here).
func stateDir(flag string) (string, error) {
	if flag != "auto" {
		return flag, nil
	}
	return "/run/ftpalg/netns", nil
}
