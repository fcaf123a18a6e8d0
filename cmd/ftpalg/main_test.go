package main

import (
	"bytes"
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
