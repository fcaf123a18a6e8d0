// Command ftpalg is an FTP application layer gateway for NAT64
// translators (Jool, Tayga): it rewrites the addresses and ports inside
// FTP control connections so that data connections work across the
// translator, in both directions (IPv6 client to IPv4 server, RFC 6384, and
// IPv4 client to IPv6 server, draft-tsou-behave-ftp46).
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
	// linuxOnly commands talk to the kernel's netfilter (or to a daemon
	// that does): elsewhere they say so in one line.
	linuxOnly bool
}

// goos is runtime.GOOS, a variable for the tests.
var goos = runtime.GOOS

// needsLinux prints that what is one line and returns exit status 1.
func needsLinux(stderr io.Writer, what string) int {
	fmt.Fprintf(stderr, "ftpalg %s: needs Linux (on %s only 'ftpalg replay' runs)\n", what, goos)
	return 1
}

// commands is filled by the init functions of the files that implement them.
var commands []command

func usage(w io.Writer) {
	fmt.Fprintf(w, `ftpalg: FTP ALG for NAT64 (Jool, Tayga), both directions.

Usage:
  ftpalg <command> [flags]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'ftpalg <command> --help' for a command's flags.\n")
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	case "version", "--version":
		fmt.Fprintf(stdout, "ftpalg %s\n", version)
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			if c.linuxOnly && goos != "linux" {
				return needsLinux(stderr, c.name)
			}
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "ftpalg: unknown command %q (see 'ftpalg --help')\n", args[0])
	return 2
}

// parsePorts parses a comma-separated list of ports ("21" or "21,2121"),
// each 1-65535: the --ports flag of run, rules and replay.
func parsePorts(s string) ([]uint16, error) {
	var ports []uint16
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("bad port %q (want 1-65535)", f)
		}
		ports = append(ports, uint16(n))
	}
	return ports, nil
}
