package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The man pages ftpalg(8) and ftpalg.conf(5) and the default
// /etc/ftpalg/ftpalg.conf are generated from the commands' help texts and
// flags, so they cannot drift: this test fails when a file differs from
// what the code generates ('go test ./cmd/ftpalg -run TestDocs -update'
// rewrites them).

func TestDocs(t *testing.T) {
	for _, d := range []struct {
		file string
		gen  func(t *testing.T) string
	}{
		{"../../packaging/ftpalg.8", manPage},
		{"../../packaging/ftpalg.conf.5", confManPage},
		{"../../packaging/ftpalg.conf", defaultConf},
	} {
		got := d.gen(t)
		if *updateReplayGoldens { // -update: every golden file of the package
			if err := os.WriteFile(d.file, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := os.ReadFile(d.file)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(b), got); diff != "" {
			t.Errorf("%s is not what the help texts give (-file +generated); run 'go test ./cmd/ftpalg -run TestDocs -update':\n%s", d.file, diff)
		}
	}
}

// Every flag of every command is in the man page, spelled --flag, and
// every key of the default config file is a flag of run.
func TestDocsNameEveryFlag(t *testing.T) {
	page := manPage(t)
	for _, name := range commandNames() {
		for _, f := range helpFlags(t, name) {
			if !strings.Contains(page, `\fB\-\-`+strings.ReplaceAll(f, "-", `\-`)+`\fR`) {
				t.Errorf("ftpalg(8) lacks --%s of %s", f, name)
			}
		}
	}
	run := map[string]bool{}
	for _, f := range helpFlags(t, "run") {
		run[f] = true
	}
	for _, line := range strings.Split(defaultConf(t), "\n") {
		key, _, _ := strings.Cut(strings.TrimPrefix(line, "#"), " ")
		if strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "# ") && line != "#" && !run[key] {
			t.Errorf("default config sets %q, not a flag of run", key)
		}
	}
}

func commandNames() []string {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	sort.Strings(names)
	return names
}

// help is the output of 'ftpalg NAME --help' (which the CLI tests check
// is the same as 'ftpalg help NAME').
func help(t *testing.T, name string) string {
	var out bytes.Buffer
	if code := dispatch([]string{name, "--help"}, &out, io.Discard); code != 0 {
		t.Fatalf("%s --help: exit %d", name, code)
	}
	return out.String()
}

// helpSections splits a help text into its head, flags and exit status.
func helpSections(text string) (head, flags, exit string) {
	head, rest, _ := strings.Cut(text, "\nFlags:\n")
	flags, exit, _ = strings.Cut(rest, "\nExit status:\n")
	return head, flags, exit
}

func helpFlags(t *testing.T, name string) []string {
	_, flags, _ := helpSections(help(t, name))
	var names []string
	for _, line := range strings.Split(flags, "\n") {
		if f, ok := strings.CutPrefix(line, "  --"); ok {
			f, _, _ = strings.Cut(f, " ")
			names = append(names, f)
		}
	}
	return names
}

// roff escapes text for a man page.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// paragraphs writes text as man paragraphs: indented blocks as they are.
func paragraphs(b *strings.Builder, text string) {
	for _, p := range strings.Split(strings.Trim(text, "\n"), "\n\n") {
		lines := strings.Split(p, "\n")
		indented := false
		for _, l := range lines {
			indented = indented || strings.HasPrefix(l, " ")
		}
		if indented {
			b.WriteString(".PP\n.nf\n")
			for _, l := range lines {
				b.WriteString(roff(l) + "\n")
			}
			b.WriteString(".fi\n")
			continue
		}
		b.WriteString(".PP\n" + roff(strings.Join(lines, " ")) + "\n")
	}
}

// flagItems writes the "Flags:" section of a help text as .TP items.
func flagItems(b *strings.Builder, flags string) {
	for _, item := range strings.Split("\n"+strings.Trim(flags, "\n"), "\n  --")[1:] {
		lines := strings.Split(item, "\n")
		name, arg, _ := strings.Cut(lines[0], " ")
		b.WriteString(".TP\n" + `\fB\-\-` + roff(name) + `\fR`)
		if arg != "" {
			b.WriteString(` \fI` + roff(arg) + `\fR`)
		}
		b.WriteString("\n")
		var text []string
		for _, l := range lines[1:] {
			text = append(text, strings.TrimSpace(l))
		}
		b.WriteString(roff(strings.Join(text, " ")) + "\n")
	}
}

// exitItems writes an "Exit status:" section ("  N  text") as .TP items.
func exitItems(b *strings.Builder, exit string) {
	for _, l := range strings.Split(strings.Trim(exit, "\n"), "\n") {
		l = strings.TrimSpace(l)
		if code, text, ok := strings.Cut(l, "  "); ok && len(code) == 1 {
			b.WriteString(".TP\n.B " + code + "\n" + roff(strings.TrimSpace(text)) + "\n")
		} else {
			b.WriteString(roff(l) + "\n")
		}
	}
}

func manPage(t *testing.T) string {
	var b strings.Builder
	b.WriteString(`.\" Generated from the commands' help texts by 'go test ./cmd/ftpalg -run TestDocs -update'.
.TH FTPALG 8 "" "ftpalg" "System Administration"
.SH NAME
ftpalg \- FTP ALG for NAT64 (Jool, Tayga), both directions
.SH SYNOPSIS
.B ftpalg
.I command
[\fIflags\fR]
.SH DESCRIPTION
ftpalg lets FTP work through a NAT64 translator (Jool or Tayga):
nftables rules divert the FTP control packets of the translator to NFQUEUE,
and the daemon
.RB ( "ftpalg run" )
rewrites the addresses and ports inside the control connection
(PASV, EPSV, PORT, EPRT and their replies), keeps the TCP sequence numbers
right, and sets up what the data connections need in the translator and the
firewall. It serves IPv6 clients of IPv4 servers (RFC 6384) and IPv4 clients
of IPv6 servers (draft\-tsou\-behave\-ftp46).
.PP
Flags are spelled \fB\-\-flag\fR (\fB\-flag\fR works too);
.B "ftpalg help"
.I command
prints a command's help, as
.B \-\-help
does.
.SH COMMANDS
`)
	var usageText bytes.Buffer
	usage(&usageText)
	_, cmds, _ := strings.Cut(usageText.String(), "Commands:\n")
	cmds, _, _ = strings.Cut(cmds, "\n\n")
	b.WriteString(".PP\n.nf\n")
	for _, l := range strings.Split(cmds, "\n") {
		b.WriteString(roff(strings.TrimSpace(l)) + "\n")
	}
	b.WriteString(".fi\n")
	for _, name := range commandNames() {
		head, flags, exit := helpSections(help(t, name))
		b.WriteString(".SS \"ftpalg " + name + "\"\n")
		paragraphs(&b, head)
		b.WriteString(".PP\nFlags:\n.RS\n")
		flagItems(&b, flags)
		b.WriteString(".RE\n.PP\nExit status:\n.RS\n")
		exitItems(&b, exit)
		b.WriteString(".RE\n")
	}
	b.WriteString(`.SH SIGNALS
.TP
.BR SIGINT ", " SIGTERM
.B ftpalg run
releases held packets, closes its queues, removes its rules (and, with
Jool, its static BIB entries) and exits with status 0; a second signal ends
it at once.
.TP
.B SIGHUP
.B ftpalg run
re\-reads the file of
.B \-\-config
and the translator's configuration and applies them without breaking a
connection; see
.BR ftpalg.conf (5).
It never exits on SIGHUP.
.SH FILES
.TP
.I /etc/ftpalg/ftpalg.conf
the settings of the packaged service
.RB ( ftpalg.service ),
see
.BR ftpalg.conf (5);
.I /etc/ftpalg/NAME.conf
those of the instance
.BR ftpalg@NAME.service .
.TP
.I /run/ftpalg/ftpalg.sock
the status socket that
.B ftpalg status
reads (\fB\-\-status\-socket\fR).
.TP
.I /usr/share/ftpalg/
the nftables rulesets as files, for operators who load the rules themselves
(\fB\-\-no\-rules\fR).
.SH SEE ALSO
.BR ftpalg.conf (5),
.BR nft (8),
.BR tayga (8),
.BR jool (8),
.BR systemd.service (5)
`)
	return b.String()
}

func confManPage(t *testing.T) string {
	var b strings.Builder
	b.WriteString(`.\" Generated from the flags of 'ftpalg run' by 'go test ./cmd/ftpalg -run TestDocs -update'.
.TH FTPALG.CONF 5 "" "ftpalg" "File Formats"
.SH NAME
ftpalg.conf \- settings of the ftpalg daemon
.SH SYNOPSIS
.I /etc/ftpalg/ftpalg.conf
.br
.I /etc/ftpalg/NAME.conf
(the instance
.BR ftpalg@NAME.service )
.SH DESCRIPTION
The file that
.B "ftpalg run \-\-config"
reads. Every flag of
.B ftpalg run
is a key: one setting per line, the flag's name without the dashes, a
space, and the value, as on the command line. A boolean key alone means
true (\fBno\-pinholes\fR); \fBfail\-open false\fR turns a default\-true one
off. Empty lines and lines that start with
.B #
are ignored, and so is the rest of a line after " #". A flag given on the
command line wins over the file. An unknown key or a bad value is an error
that names the file and the key: at start the daemon exits with status 2;
on SIGHUP it logs it and keeps its old settings.
.SH RELOADING
On SIGHUP
.RB ( "systemctl reload ftpalg" )
the daemon reads the file again, with the same command line, and re\-reads
the translator's own configuration (Tayga: tayga.conf and its map\-file;
Jool: pool4) without breaking a connection. It logs what changed. These keys
take effect at once:
`)
	var now, later []string
	for _, f := range helpFlags(t, "run") {
		if f == "config" {
			continue // not a key of the file
		}
		if reloadable[f] {
			now = append(now, f)
		} else {
			later = append(later, f)
		}
	}
	b.WriteString(roff(strings.Join(now, ", ")) + ".\nA change of any other key is logged as needing a restart\n(\\fBsystemctl restart ftpalg\\fR): " + roff(strings.Join(later, ", ")) + ".\n.SH KEYS\n")
	_, flags, _ := helpSections(help(t, "run"))
	flagItems(&b, withoutFlag(flags, "config"))
	b.WriteString(`.SH EXAMPLE
.nf
# Tayga on this host, IPv4 leg, fail closed
tayga\-conf /etc/tayga.conf
fail\-open false
log\-format json
metrics\-addr 127.0.0.1:9421
.fi
.SH SEE ALSO
.BR ftpalg (8)
`)
	// In KEYS the items read "--name value": keys, not flags.
	return strings.ReplaceAll(b.String(), `\fB\-\-`, `\fB`)
}

// withoutFlag removes a flag's item from the "Flags:" section of a help.
func withoutFlag(flags, name string) string {
	items := strings.Split("\n"+strings.Trim(flags, "\n"), "\n  --")
	var kept []string
	for _, item := range items[1:] {
		if n, _, _ := strings.Cut(item, "\n"); strings.Fields(n)[0] != name {
			kept = append(kept, item)
		}
	}
	return "  --" + strings.Join(kept, "\n  --") + "\n"
}

// defaultConf is /etc/ftpalg/ftpalg.conf as packaged: every key of run,
// commented out, with its help and default.
func defaultConf(t *testing.T) string {
	var b strings.Builder
	b.WriteString(`# /etc/ftpalg/ftpalg.conf: settings of 'ftpalg run' for ftpalg.service
# (ftpalg.conf(5); an instance ftpalg@NAME.service reads /etc/ftpalg/NAME.conf).
#
# One "key value" per line; the keys are the flags of 'ftpalg run' without
# the dashes. Every key is shown here commented out, with its default.
# Set one of tayga-conf or jool-instance, then:
#   systemctl enable --now ftpalg
# After a change: systemctl reload ftpalg (keys marked "restart" need
# systemctl restart ftpalg).
`)
	_, flags, _ := helpSections(help(t, "run"))
	for _, item := range strings.Split("\n"+strings.Trim(flags, "\n"), "\n  --")[1:] {
		lines := strings.Split(item, "\n")
		name, arg, _ := strings.Cut(lines[0], " ")
		if name == "config" {
			continue // the unit gives it on the command line
		}
		b.WriteString("\n")
		var text []string
		for _, l := range lines[1:] {
			text = append(text, strings.TrimSpace(l))
		}
		usage := strings.Join(text, " ")
		def := ""
		if i := strings.LastIndex(usage, " (default "); i >= 0 && strings.HasSuffix(usage, ")") {
			usage, def = usage[:i], strings.TrimSuffix(usage[i+len(" (default "):], ")")
		}
		if !reloadable[name] {
			usage += " [restart]"
		}
		for _, l := range wrap(usage, 76) {
			b.WriteString("# " + l + "\n")
		}
		switch {
		case def != "":
			fmt.Fprintf(&b, "#%s %s\n", name, def)
		case arg == "":
			fmt.Fprintf(&b, "#%s\n", name)
		default:
			fmt.Fprintf(&b, "#%s %s\n", name, strings.ToUpper(arg))
		}
	}
	return b.String()
}

func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}
