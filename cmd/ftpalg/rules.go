package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/ftpalg/ftpalg/rules"
)

func init() {
	commands = append(commands, command{
		name:    "rules",
		summary: "print, install or remove the nftables rules that queue FTP control packets",
		run:     rulesMain,
	})
}

const rulesHelp = `Usage: ftpalg rules print|install|remove [flags]

The nftables rules that divert the FTP control packets of a NAT64 (Tayga or
Jool) to NFQUEUE, where 'ftpalg run' rewrites them. Only TCP packets from
or to the control ports, on one leg of the translator, are queued, in both
directions; data connections stay in the kernel. Everything lives in one
table of the daemon's own (--table). With the same flags, these are the
rules 'ftpalg run' installs itself (unless --no-rules).

  print    write the ruleset as an nft script to standard output
  install  load it in one atomic batch, replacing an earlier version and a
           table of the same name on the other leg (needs CAP_NET_ADMIN);
           uses the nft "queue" statement if the kernel has nft_queue,
           otherwise the xt NFQUEUE target through the nftables compat layer
  remove   delete the table, in both the ip and ip6 families (needs
           CAP_NET_ADMIN); not an error if it is absent. After a daemon was
           killed (SIGKILL), this removes the rules it left.
`

const rulesExit = `Exit status:
  0  success
  1  loading or removing the rules failed (permissions, kernel)
  2  usage error (a bad flag, value, argument or action)
`

// rulesArgs is what the command line of 'ftpalg rules' asks for.
type rulesArgs struct {
	action string // print, install or remove
	config string // --config
	cfg    rules.Config
	// remove --if-idle: keep the rules while the journal (--state-dir,
	// --run-dir, as 'ftpalg run' has them) holds an open connection.
	ifIdle           bool
	stateDir, runDir string
}

func newRulesFlags(r *rulesArgs) *cmdFlags {
	fs := newCmdFlags("rules", rulesHelp, rulesExit)
	fs.configIgnoresUnknown = true
	fs.StringVar(&r.config, "config", "", "read the flags from the daemon's config `file` first (ftpalg.conf(5): leg, ports,\nqueue-num, queues, fail-open, table; other keys are ignored), so that\n'rules remove --config FILE' removes what 'run --config FILE' installed")
	fs.StringVar(&r.cfg.Translator, "translator", "", "the `translator`: tayga or jool (required for print and install)")
	fs.StringVar(&r.cfg.Leg, "leg", rules.LegIPv4, "the `leg` whose packets are queued: ipv4 or ipv6")
	fs.Var((*portsFlag)(&r.cfg.Ports), "ports", "FTP control `ports`, comma-separated (default 21)")
	fs.Var((*uint16Flag)(&r.cfg.QueueNum), "queue-num", "first NFQUEUE `number` (default 0)")
	fs.Var((*queuesFlag)(&r.cfg.Queues), "queues", "`count` of queues, balanced by a hash of the addresses that is the same\nin both directions")
	fs.BoolVar(&r.cfg.Bypass, "fail-open", true, failOpenUsage)
	fs.BoolVar(&r.cfg.Helper, "helper", false, "Tayga: attach conntrack helpers so the daemon can open firewall pinholes for data\nconnections (rules/README.md, Pinholes; 'ftpalg run' does unless --no-pinholes)")
	fs.Func("jool-ports", "Jool: the ALG's reserved port `range` LO-HI ('ftpalg run --jool-ports'): add the peer\nfilter, which admits only the control connection's peer through a data-channel\nmapping (rules/README.md, Peer filter; 'ftpalg run' does)", func(s string) (err error) {
		r.cfg.PeerFilter, err = parsePortRange(s)
		return err
	})
	fs.StringVar(&r.cfg.Table, "table", rules.DefaultTable, "the daemon's table `name`")
	fs.BoolVar(&r.ifIdle, "if-idle", false, "with remove: keep the rules while the daemon's journal holds a translated connection\nthat is still open (it waits for the next daemon; docs/STATE.md); the service's units\nuse it after a stop or crash")
	fs.StringVar(&r.stateDir, "state-dir", defaultStateDir, "with --if-idle: the daemon's --state-dir")
	fs.StringVar(&r.runDir, "run-dir", defaultRunDir, "with --if-idle: the daemon's --run-dir")
	fs.Var((*scopeFlag)(&r.cfg.Scope), "scope", "the translator's own addresses and `prefixes`, comma-separated, both families\n(Tayga: its addresses, dynamic-pool, prefix and map entries; Jool: pool4 and pool6):\nonly FTP from or to them is queued or gets a helper, so plain FTP through the box\n(NAT44) keeps the kernel's own helper. Required with --helper; 'ftpalg run' finds it\nin the translator's configuration")
	return fs
}

// parseRulesArgs reads the action and the flags, in either order. It
// prints the help to stdout and returns errHelp for --help; a bad flag or
// action is a *usageError.
func parseRulesArgs(args []string, stdout io.Writer) (rulesArgs, error) {
	var r rulesArgs
	r.cfg.Queues = 1
	fs := newRulesFlags(&r)
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		r.action, args = args[0], args[1:]
	}
	if err := fs.parse(args, stdout); err != nil {
		return r, err
	}
	if r.action == "" && fs.NArg() > 0 {
		r.action = fs.Arg(0)
		if err := fs.parse(fs.Args()[1:], stdout); err != nil {
			return r, err
		}
	}
	switch {
	case r.action == "":
		return r, usagef("missing action: print, install or remove")
	case r.action != "print" && r.action != "install" && r.action != "remove":
		return r, usagef("unknown action %q (want print, install or remove)", r.action)
	case fs.NArg() > 0:
		return r, usagef("unexpected argument %q", fs.Arg(0))
	case r.action != "remove" && r.cfg.Translator == "":
		// Remove needs only the table; print and install the whole config.
		return r, usagef("--translator is required (tayga or jool)")
	}
	if len(r.cfg.Ports) == 0 {
		r.cfg.Ports = []uint16{21}
	}
	return r, nil
}

func rulesMain(args []string, stdout, stderr io.Writer) int {
	r, err := parseRulesArgs(args, stdout)
	if err != nil {
		cmd := "rules"
		if r.action == "print" || r.action == "install" || r.action == "remove" {
			cmd += " " + r.action
		}
		return usageExit(cmd, err, stderr)
	}

	if r.action != "print" && goos != "linux" {
		return needsLinux(stderr, "rules "+r.action)
	}

	switch r.action {
	case "print":
		var text string
		text, err = rules.Render(&r.cfg)
		if err == nil {
			_, err = io.WriteString(stdout, text)
		}
	case "install":
		err = rules.Install(&r.cfg)
		if err == nil {
			mode := ""
			if native, perr := rules.NativeQueue(); perr == nil && native {
				mode = " (nft queue)"
			} else if perr == nil {
				mode = " (xt NFQUEUE through nft compat, as the kernel has no nft_queue)"
			}
			fmt.Fprintf(stdout, "installed table %s %s%s\n", family(r.cfg.Leg), r.cfg.Table, mode)
		}
	case "remove":
		if r.ifIdle {
			if n := openInJournal(r.stateDir, r.runDir); n > 0 {
				fmt.Fprintf(stdout, "kept table %s: %d translated control connections wait for the next daemon ('ftpalg rules remove' ends them)\n", r.cfg.Table, n)
				return 0
			}
		}
		err = rules.Remove(&r.cfg)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, rules.ErrConfig):
		return usageExit("rules "+r.action, &usageError{msg: err.Error()}, stderr)
	case errors.Is(err, os.ErrPermission):
		fmt.Fprintf(stderr, "ftpalg rules %s: permission denied (needs CAP_NET_ADMIN: run as root)\n", r.action)
		return 1
	}
	fmt.Fprintf(stderr, "ftpalg rules %s: %v\n", r.action, oneLine(err))
	return 1
}

func family(leg string) string {
	if leg == rules.LegIPv6 {
		return "ip6"
	}
	return "ip"
}

// oneLine joins the lines of a multi-line error (errors.Join) with "; ".
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// portsFlag is a comma-separated list of ports, each 1-65535.
type portsFlag []uint16

func (p *portsFlag) String() string {
	s := make([]string, len(*p))
	for i, port := range *p {
		s[i] = strconv.Itoa(int(port))
	}
	return strings.Join(s, ",")
}

func (p *portsFlag) Set(v string) error {
	ports, err := parsePorts(v)
	*p = ports
	return err
}

// uint16Flag is a number 0-65535.
type uint16Flag uint16

func (u *uint16Flag) String() string { return strconv.Itoa(int(*u)) }

func (u *uint16Flag) Set(v string) error {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return fmt.Errorf("bad number %q (want 0-65535)", v)
	}
	*u = uint16Flag(n)
	return nil
}

// queuesFlag is a number of queues, 1-65535.
type queuesFlag uint16

func (q *queuesFlag) String() string { return strconv.Itoa(int(*q)) }

func (q *queuesFlag) Set(v string) error {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("bad count %q (want 1-65535)", v)
	}
	*q = queuesFlag(n)
	return nil
}
