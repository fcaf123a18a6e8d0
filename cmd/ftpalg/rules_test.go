package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/ftpalg/ftpalg/rules"
	"github.com/google/go-cmp/cmp"
)

func TestParseRulesArgs(t *testing.T) {
	def := func(translator string) rules.Config {
		return rules.Config{Translator: translator, Leg: "ipv4", Ports: []uint16{21}, Queues: 1, Bypass: true, Table: "ftpalg"}
	}
	tests := []struct {
		args    []string
		action  string
		cfg     rules.Config
		wantErr string
	}{
		{args: []string{"print", "--translator", "tayga"}, action: "print", cfg: def("tayga")},
		{args: []string{"--translator=jool", "install"}, action: "install", cfg: def("jool")},
		{args: []string{"remove"}, action: "remove", cfg: def("")},
		{
			args:   []string{"--leg", "ipv6", "print", "--translator", "jool", "--ports", "21,2121", "--queue-num", "3", "--queues", "4", "--fail-open=false", "--table", "nat64_ftp"},
			action: "print",
			cfg:    rules.Config{Translator: "jool", Leg: "ipv6", Ports: []uint16{21, 2121}, QueueNum: 3, Queues: 4, Bypass: false, Table: "nat64_ftp"},
		},
		{args: []string{"-translator", "tayga", "-queue-num", "65535", "print"}, action: "print", cfg: func() rules.Config {
			c := def("tayga")
			c.QueueNum = 65535
			return c
		}()},
		{args: []string{"print", "--translator", "jool", "--jool-ports", "61000-61999"}, action: "print", cfg: func() rules.Config {
			c := def("jool")
			c.PeerFilter = [2]uint16{61000, 61999}
			return c
		}()},
		{args: []string{"print", "--jool-ports", "61999-61000"}, wantErr: "want LO-HI"},
		{args: nil, wantErr: "missing action"},
		{args: []string{"--translator", "tayga"}, wantErr: "missing action"},
		{args: []string{"show"}, wantErr: `unknown action "show"`},
		{args: []string{"print", "extra"}, wantErr: `unexpected argument "extra"`},
		{args: []string{"print", "--ports", "21,x"}, wantErr: `--ports: bad port "x" (want 1-65535)`},
		{args: []string{"print", "--ports", "0"}, wantErr: `port "0"`},
		{args: []string{"print", "--ports", "70000"}, wantErr: `port "70000"`},
		{args: []string{"print", "--queues", "0"}, wantErr: `--queues: bad count "0" (want 1-65535)`},
		{args: []string{"print", "--queue-num", "-1"}, wantErr: `--queue-num: bad number "-1" (want 0-65535)`},
		{args: []string{"print", "--fail-open=maybe"}, wantErr: `--fail-open: bad value "maybe" (want true or false)`},
		{args: []string{"print", "--table"}, wantErr: "--table needs a value"},
		{args: []string{"print", "--nope"}, wantErr: "unknown flag --nope"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got, err := parseRulesArgs(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.action != tt.action {
				t.Errorf("action %q, want %q", got.action, tt.action)
			}
			if diff := cmp.Diff(tt.cfg, got.cfg); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRulesCommand(t *testing.T) {
	tayga, err := rules.Render(&rules.Config{Translator: "tayga", Bypass: true})
	if err != nil {
		t.Fatal(err)
	}
	joolV6, err := rules.Render(&rules.Config{Translator: "jool", Leg: "ipv6", Ports: []uint16{21, 2121}, Queues: 2})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args         []string
		code         int
		stdout       string // exact, unless empty
		stdoutHas    string
		stderrPrefix string
	}{
		{args: []string{"rules", "print", "--translator", "tayga"}, code: 0, stdout: tayga},
		{args: []string{"rules", "print", "--translator", "jool", "--leg", "ipv6", "--ports", "2121,21", "--queues", "2", "--fail-open=false"}, code: 0, stdout: joolV6},
		{args: []string{"rules", "--help"}, code: 0, stdoutHas: "Usage: ftpalg rules print|install|remove [flags]"},
		{args: []string{"rules", "print", "-h"}, code: 0, stdoutHas: "--translator translator\n"},
		{args: []string{"rules"}, code: 2, stderrPrefix: "ftpalg rules: missing action: print, install or remove\nRun 'ftpalg rules --help' for usage.\n"},
		{args: []string{"rules", "print"}, code: 2, stderrPrefix: "ftpalg rules print: --translator is required (tayga or jool)\n"},
		{args: []string{"rules", "install"}, code: 2, stderrPrefix: "ftpalg rules install: --translator is required (tayga or jool)\n"},
		{args: []string{"rules", "print", "--translator", "nat46"}, code: 2, stderrPrefix: `ftpalg rules print: invalid rules config: unknown translator "nat46"`},
		{args: []string{"rules", "print", "--translator", "tayga", "--leg", "v6"}, code: 2, stderrPrefix: `ftpalg rules print: invalid rules config: unknown leg "v6"`},
		{args: []string{"rules", "remove", "--table", "bad name"}, code: 2, stderrPrefix: `ftpalg rules remove: invalid rules config: table name "bad name"`},
		{args: []string{"rules", "print", "--translator", "tayga", "--queue-num", "65535", "--queues", "2"}, code: 2, stderrPrefix: "ftpalg rules print: invalid rules config: queues 65535..65536 exceed 65535"},
		{args: []string{"rules", "print", "--queues", "x"}, code: 2, stderrPrefix: "ftpalg rules print: --queues: bad count \"x\" (want 1-65535)\nRun 'ftpalg rules --help' for usage.\n"},
		{args: []string{"rules", "print", "--ports", "0"}, code: 2, stderrPrefix: "ftpalg rules print: --ports: bad port \"0\" (want 1-65535)\nRun 'ftpalg rules --help' for usage.\n"},
		{args: []string{"rules", "remove", "--bypass"}, code: 2, stderrPrefix: "ftpalg rules remove: unknown flag --bypass\nRun 'ftpalg rules --help' for usage.\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := dispatch(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, stderr.String())
			}
			if tt.stdout != "" {
				if diff := cmp.Diff(tt.stdout, stdout.String()); diff != "" {
					t.Errorf("stdout (-want +got):\n%s", diff)
				}
			}
			if !strings.Contains(stdout.String(), tt.stdoutHas) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdoutHas, stdout.String())
			}
			if tt.stderrPrefix == "" && stderr.Len() > 0 {
				t.Errorf("stderr %q, want none", stderr.String())
			}
			if !strings.HasPrefix(stderr.String(), tt.stderrPrefix) {
				t.Errorf("stderr %q, want it to start with %q", stderr.String(), tt.stderrPrefix)
			}
			// A usage error is one line and the pointer to --help;
			// other errors are one line.
			want := 1
			if tt.code == 2 {
				want = 2
				if !strings.HasSuffix(stderr.String(), "\nRun 'ftpalg rules --help' for usage.\n") {
					t.Errorf("stderr %q lacks the pointer to --help", stderr.String())
				}
			}
			if n := strings.Count(stderr.String(), "\n"); stderr.Len() > 0 && n != want {
				t.Errorf("stderr has %d lines, want %d: %q", n, want, stderr.String())
			}
		})
	}
}

// TestRulesHelpNamesEveryFlag keeps the help text and the flags in step.
func TestRulesHelpNamesEveryFlag(t *testing.T) {
	var stdout bytes.Buffer
	if code := dispatch([]string{"rules", "--help"}, &stdout, io.Discard); code != 0 {
		t.Fatalf("rules --help: exit %d", code)
	}
	var r rulesArgs
	n := 0
	newRulesFlags(&r).VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(stdout.String(), "\n  --"+f.Name+" ") && !strings.Contains(stdout.String(), "\n  --"+f.Name+"\n") {
			t.Errorf("help does not describe --%s", f.Name)
		}
	})
	if n != 14 {
		t.Errorf("%d flags, want 14", n)
	}
}

// 'rules remove --config FILE' reads the daemon's file: the keys of the
// rules, and none of the daemon's others is an error.
func TestRulesConfigFile(t *testing.T) {
	conf := writeFile(t, "ftpalg.conf", "tayga-conf /etc/tayga.conf\nports 2121\nqueue-num 5\nfail-open false\nlog-level debug\n")
	got, err := parseRulesArgs([]string{"remove", "--config", conf, "--queue-num", "6"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := rules.Config{Leg: "ipv4", Ports: []uint16{2121}, QueueNum: 6, Queues: 1, Table: "ftpalg"}
	if diff := cmp.Diff(want, got.cfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	bad := writeFile(t, "bad.conf", "ports 0\n")
	var stderr bytes.Buffer
	if code := dispatch([]string{"rules", "remove", "--config", bad}, io.Discard, &stderr); code != 2 ||
		stderr.String() != "ftpalg rules remove: --config "+bad+": ports: bad port \"0\" (want 1-65535)\nRun 'ftpalg rules --help' for usage.\n" {
		t.Errorf("bad config: exit %d, stderr %q", code, stderr.String())
	}
}

// TestRulesREADME runs the command lines of rules/README.md: print for
// real, install and remove only as far as their flags.
func TestRulesREADME(t *testing.T) {
	b, err := os.ReadFile("../../rules/README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "ftpalg rules ") {
			continue
		}
		n++
		args := strings.Fields(line)[1:]
		if args[1] != "print" {
			if _, err := parseRulesArgs(args[1:], io.Discard); err != nil {
				t.Errorf("%s: %v", line, err)
			}
			continue
		}
		var stdout, stderr bytes.Buffer
		if code := dispatch(args, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "table ip ftpalg {") {
			t.Errorf("%s: exit %d, stderr %q, stdout:\n%s", line, code, stderr.String(), stdout.String())
		}
	}
	if n == 0 {
		t.Error("README has no 'ftpalg rules' command lines")
	}
}

// TestRulesHelperProcess is not a test: TestIntegrationRulesCLI runs the
// test binary as the ftpalg command through it.
func TestRulesHelperProcess(t *testing.T) {
	if os.Getenv("FTPALG_RULES_HELPER") != "1" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(dispatch(args, os.Stdout, os.Stderr))
}
