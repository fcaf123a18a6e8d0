//go:build linux

package main

import (
	"os"
	"syscall"
)

// upgradeSignal starts the binary anew, which takes over (upgrade.go).
var upgradeSignal os.Signal = syscall.SIGUSR2
