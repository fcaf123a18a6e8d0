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
	"runtime/debug"
	"strconv"
	"strings"
)

// version and commit are set at build time (the Makefile's -ldflags "-X
// main.version=... -X main.commit=...", from git describe); a build
// without them (go install, go build) takes the commit from the module's
// build information where there is one.
var (
	version = "dev"
	commit  = ""
)

// versionText is what "ftpalg version" prints.
func versionText() string {
	c := commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
			if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
				return fmt.Sprintf("ftpalg %s (%s)\n", bi.Main.Version, runtime.Version())
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("ftpalg %s (commit %s, %s)\n", version, c, runtime.Version())
}

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
	fmt.Fprintf(w, `  %-9s %s
  %-9s %s

Run 'ftpalg <command> --help' (or 'ftpalg help <command>') for a command's
flags and exit statuses.

Exit status: 0 success, 1 failure, 2 usage error; each command's --help
says more.
`, "help", "print this help, or a command's (ftpalg help run)", "version", "print the version and the commit it was built from")
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "ftpalg: missing command\nRun 'ftpalg --help' for usage.\n")
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		if len(args) == 2 && args[1] != "help" && args[1] != "version" {
			// The command's own --help (all of them print it and exit 0).
			return dispatch([]string{args[1], "--help"}, stdout, stderr)
		}
		if len(args) == 2 {
			usage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "ftpalg help: want one command, got %q\nRun 'ftpalg --help' for usage.\n", args[1:])
		return 2
	case "version", "--version":
		if len(args) > 1 {
			fmt.Fprintf(stderr, "ftpalg version: unexpected argument %q\nRun 'ftpalg --help' for usage.\n", args[1])
			return 2
		}
		fmt.Fprint(stdout, versionText())
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
	fmt.Fprintf(stderr, "ftpalg: unknown command %q\nRun 'ftpalg --help' for usage.\n", args[0])
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
