package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// Elsewhere than Linux, replay and rules print work; the subcommands that
// need the kernel's netfilter say so in one line.
func TestDispatchNotLinux(t *testing.T) {
	defer func(g string) { goos = g }(goos)
	goos = "darwin"
	for _, args := range [][]string{
		{"run", "--tayga-conf", "/etc/tayga.conf"},
		{"status"},
		{"rules", "install", "--translator", "tayga"},
		{"rules", "remove"},
	} {
		var stdout, stderr bytes.Buffer
		code := dispatch(args, &stdout, &stderr)
		want := "ftpalg " + strings.Join(args[:1+min(len(args)-1, 1)], " ")
		if args[0] != "rules" {
			want = "ftpalg " + args[0]
		}
		want += ": needs Linux (on darwin only 'ftpalg replay' runs)\n"
		if code != 1 || stderr.String() != want || stdout.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1 and %q", args, code, stdout.String(), stderr.String(), want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"rules", "print", "--translator", "tayga"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "table") {
		t.Errorf("rules print: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	if code := dispatch([]string{"replay", "--help"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "Usage: ftpalg replay") {
		t.Errorf("replay --help: exit %d, stdout %q", code, stdout.String())
	}
}

// Every command: --help, -h and 'ftpalg help CMD' print the same help on
// stdout, once, with the flags spelled --flag and the exit statuses, and
// exit 0.
func TestHelpEverywhere(t *testing.T) {
	for _, c := range commands {
		var want string
		for i, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			var stdout, stderr bytes.Buffer
			code := dispatch(args, &stdout, &stderr)
			if code != 0 || stderr.Len() != 0 {
				t.Errorf("%q: exit %d, stderr %q; want 0 and nothing", args, code, stderr.String())
			}
			out := stdout.String()
			if i == 0 {
				want = out
			} else if out != want {
				t.Errorf("%q prints another help than %s --help", args, c.name)
			}
			if n := strings.Count(out, "Usage: ftpalg "+c.name); n != 1 {
				t.Errorf("%q: %d usage lines, want 1:\n%s", args, n, out)
			}
			if !strings.Contains(out, "\nFlags:\n  --") || !strings.Contains(out, "\nExit status:\n  0  ") {
				t.Errorf("%q: no --flags or no exit statuses:\n%s", args, out)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "  -") && !strings.HasPrefix(line, "  --") {
					t.Errorf("%q: flag spelled with one dash: %q", args, line)
				}
			}
		}
	}
}

// A bad flag or value: one line naming it, then the pointer to --help, on
// stderr; exit 2; nothing on stdout.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--ports", "0"}, `ftpalg run: --ports: bad port "0" (want 1-65535)`},
		{[]string{"run", "--tayga-conf", "t", "--queues", "x"}, `ftpalg run: --queues: bad count "x" (want 1-65535)`},
		{[]string{"run", "--fail-open=no"}, `ftpalg run: --fail-open: bad value "no" (want true or false)`},
		{[]string{"run", "--hold-timeout", "soon"}, `ftpalg run: --hold-timeout: bad value "soon"`},
		{[]string{"run", "--nope"}, `ftpalg run: unknown flag --nope`},
		{[]string{"run", "--tayga-conf"}, `ftpalg run: --tayga-conf needs a value`},
		{[]string{"run"}, `ftpalg run: one of --tayga-conf or --jool-instance is required`},
		{[]string{"rules", "print", "--queue-num", "70000"}, `ftpalg rules print: --queue-num: bad number "70000" (want 0-65535)`},
		{[]string{"status", "--json=2"}, `ftpalg status: --json: bad value "2" (want true or false)`},
		{[]string{"status", "extra"}, `ftpalg status: unexpected argument "extra"`},
		{[]string{"replay", "--leg", "ipv5", "--tayga-conf", "t", "x.pcap"}, `ftpalg replay: --leg "ipv5": want ipv4 or ipv6`},
		{[]string{"help", "run", "rules"}, `ftpalg help: want one command, got ["run" "rules"]`},
		{[]string{"version", "x"}, `ftpalg version: unexpected argument "x"`},
		{[]string{"nosuch"}, `ftpalg: unknown command "nosuch"`},
		{nil, `ftpalg: missing command`},
	} {
		var stdout, stderr bytes.Buffer
		code := dispatch(tc.args, &stdout, &stderr)
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if code != 2 || stdout.Len() != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], tc.want) ||
			!strings.HasPrefix(lines[1], "Run 'ftpalg ") || !strings.HasSuffix(lines[1], " --help' for usage.") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and %q then the pointer to --help", tc.args, code, stdout.String(), stderr.String(), tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "v0.1.0-3-gabcdef0", "abcdef0"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var stdout bytes.Buffer
		if code := dispatch(args, &stdout, io.Discard); code != 0 || !strings.HasPrefix(stdout.String(), "ftpalg v0.1.0-3-gabcdef0 (commit abcdef0, go") {
			t.Errorf("%q: exit %d, %q", args, code, stdout.String())
		}
	}
}
