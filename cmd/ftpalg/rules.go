package main

import (
	"errors"
	"flag"
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
table of the daemon's own (--table).

  print    write the ruleset as an nft script to standard output
  install  load it in one atomic batch, replacing an earlier version and a
           table of the same name on the other leg (needs root); uses the
           nft "queue" statement if the kernel has nft_queue, otherwise the
           xt NFQUEUE target through the nftables compat layer
  remove   delete the table, in both the ip and ip6 families (needs root);
           not an error if it is absent

Flags:
  --translator tayga|jool  the translator (required for print and install)
  --leg ipv4|ipv6          the leg whose packets are queued (default ipv4)
  --ports LIST             FTP control ports, comma-separated (default 21)
  --queue-num N            first NFQUEUE number (default 0)
  --queues N               number of queues, balanced by a hash of the
                           addresses that is the same in both directions
                           (default 1)
  --bypass                 fail-open: the kernel accepts the packets while
                           no daemon listens (default: it drops them;
                           'ftpalg run' defaults to fail-open)
  --helper                 Tayga: attach conntrack helpers so the daemon can
                           open firewall pinholes for data connections
                           (rules/README.md, Pinholes; 'ftpalg run' does)
  --jool-ports LO-HI       Jool: the ALG's reserved port range ('ftpalg run
                           --jool-ports'): add the peer filter, which admits
                           only the control connection's peer through a
                           data-channel mapping (rules/README.md, Peer filter;
                           'ftpalg run' does)
  --table NAME             the daemon's table (default ftpalg)
  --scope LIST             the translator's own addresses and prefixes,
                           comma-separated, both families (Tayga: its
                           addresses, dynamic-pool, prefix and map entries;
                           Jool: pool4 and pool6): only FTP from or to them
                           is queued or gets a helper, so plain FTP through
                           the box (NAT44) keeps the kernel's own helper.
                           Required with --helper; 'ftpalg run' finds it in
                           the translator's configuration

Exit status: 0 on success, 1 if loading or removing failed, 2 for a usage
error.
`

// rulesArgs is what the command line of 'ftpalg rules' asks for.
type rulesArgs struct {
	action string // print, install or remove
	cfg    rules.Config
}

// parseRulesArgs reads the action and the flags, in either order. It
// returns flag.ErrHelp for -h/--help.
func parseRulesArgs(args []string) (rulesArgs, error) {
	var r rulesArgs
	fs := flag.NewFlagSet("ftpalg rules", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&r.cfg.Translator, "translator", "", "")
	fs.StringVar(&r.cfg.Leg, "leg", rules.LegIPv4, "")
	fs.Var((*portsFlag)(&r.cfg.Ports), "ports", "")
	fs.Var((*uint16Flag)(&r.cfg.QueueNum), "queue-num", "")
	r.cfg.Queues = 1
	fs.Var((*queuesFlag)(&r.cfg.Queues), "queues", "")
	fs.BoolVar(&r.cfg.Bypass, "bypass", false, "")
	fs.BoolVar(&r.cfg.Helper, "helper", false, "")
	fs.Func("jool-ports", "", func(s string) (err error) {
		r.cfg.PeerFilter, err = parsePortRange(s)
		return err
	})
	fs.StringVar(&r.cfg.Table, "table", rules.DefaultTable, "")
	fs.Var((*scopeFlag)(&r.cfg.Scope), "scope", "")

	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		r.action, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return r, err
	}
	if r.action == "" && fs.NArg() > 0 {
		r.action = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return r, err
		}
	}
	switch {
	case r.action == "":
		return r, errors.New("missing action: print, install or remove")
	case r.action != "print" && r.action != "install" && r.action != "remove":
		return r, fmt.Errorf("unknown action %q (want print, install or remove)", r.action)
	case fs.NArg() > 0:
		return r, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if len(r.cfg.Ports) == 0 {
		r.cfg.Ports = []uint16{21}
	}
	return r, nil
}

func rulesMain(args []string, stdout, stderr io.Writer) int {
	r, err := parseRulesArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, rulesHelp)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ftpalg rules: %v (see 'ftpalg rules --help')\n", err)
		return 2
	}
	// Remove needs only the table; print and install the whole config.
	if r.action != "remove" && r.cfg.Translator == "" {
		fmt.Fprintf(stderr, "ftpalg rules %s: --translator is required (tayga or jool)\n", r.action)
		return 2
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
		err = rules.Remove(&r.cfg)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, rules.ErrConfig):
		fmt.Fprintf(stderr, "ftpalg rules %s: %v\n", r.action, err)
		return 2
	case errors.Is(err, os.ErrPermission):
		fmt.Fprintf(stderr, "ftpalg rules %s: permission denied (run as root)\n", r.action)
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
		return errors.New("want 0-65535")
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
		return errors.New("want 1-65535")
	}
	*q = queuesFlag(n)
	return nil
}
