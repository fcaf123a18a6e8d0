// Command scalecap writes and checks the scale capture of package ftpcap:
// N concurrent 46 control connections through Tayga (handshake and
// greeting for all, then PASV and 229 for all, then NOOP and 200 for all),
// optionally with M spoofed SYNs to port 21 spread among them.
//
//	scalecap gen -conns N [-syns M] [-seed S] [-lockstep] [-v6] IN.pcap
//	scalecap conf TAYGA.CONF
//	scalecap check -conns N [-syns M] [-seed S] OUT.pcap
//
// gen writes the capture, conf the tayga.conf of its addressing, check
// reads what an ALG (ftpalg replay --tayga-conf TAYGA.CONF --out OUT.pcap
// IN.pcap) made of it and counts the connections whose 227 was translated
// and whose NOOP and 200 came out at the shifted sequence numbers. check
// exits 1 unless every connection came out right.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ftpalg/ftpalg/test/ftpcap"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = "usage: scalecap gen|check -conns N [-syns M] [-seed S] [-lockstep] [-v6] FILE.pcap | scalecap conf FILE\n"

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[0]
	fs := flag.NewFlagSet("scalecap "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg ftpcap.ScaleConfig
	fs.IntVar(&cfg.Conns, "conns", 1000, "real control connections")
	fs.IntVar(&cfg.SYNs, "syns", 0, "spoofed SYNs to port 21 spread among them")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the spoofed SYNs")
	fs.BoolVar(&cfg.V6, "v6", false, "the capture on the translator's IPv6 leg (default: the IPv4 leg)")
	fs.BoolVar(&cfg.Lockstep, "lockstep", false, "each packet of a phase for all connections before the next (every SYN, then every SYN-ACK, ...)")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 || cfg.Conns < 0 || cfg.SYNs < 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	name := fs.Arg(0)
	fail := func(err error) int {
		fmt.Fprintf(stderr, "scalecap %s: %v\n", cmd, err)
		return 2
	}
	switch cmd {
	case "conf":
		if err := os.WriteFile(name, []byte(ftpcap.TaygaConf), 0o644); err != nil {
			return fail(err)
		}
	case "gen":
		f, err := os.Create(name)
		if err != nil {
			return fail(err)
		}
		if err := ftpcap.WriteScale(f, cfg); err != nil {
			f.Close()
			return fail(err)
		}
		if err := f.Close(); err != nil {
			return fail(err)
		}
	case "check":
		f, err := os.Open(name)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		rep, err := ftpcap.CheckScale(f, cfg)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, rep)
		if !rep.OK() {
			return 1
		}
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	return 0
}
