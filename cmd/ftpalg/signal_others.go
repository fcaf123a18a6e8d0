//go:build !linux

package main

import "os"

// upgradeSignal: none where the daemon does not run (windows has no
// SIGUSR2).
var upgradeSignal os.Signal
