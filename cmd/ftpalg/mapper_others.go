//go:build !linux

package main

import (
	"errors"
	"log/slog"
)

// errNeedsLinux is what the subcommands that talk to the kernel's netfilter
// (run, rules install/remove) say elsewhere; replay runs everywhere.
var errNeedsLinux = errors.New("needs Linux (netfilter queues, conntrack, the translator's kernel state)")

func loadMapper(*runConfig, *slog.Logger) (*daemonMapper, error) { return nil, errNeedsLinux }
