// Command ftpcapcheck checks captures with the ftpcap checker.
//
//	ftpcapcheck IN.pcap OUT.pcap
//
// checks what an ALG (for example `ftpalg replay`) wrote to OUT for the
// packets it received in IN (ftpcap.CheckALG): checksums, consistent TCP
// streams, and acknowledgements and SACK blocks that acknowledge only what
// the other end really sent, on the wire between each endpoint and the ALG.
//
//	ftpcapcheck CAPTURE.pcap
//
// checks a capture taken on one wire (ftpcap.Check).
//
// Both print every problem and then each flow's byte stream (from OUT when
// there are two captures: what each end received). The exit status is 0
// when there is no problem, 1 when there are, 2 for a usage error or an
// unreadable capture.
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

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ftpcapcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quiet := fs.Bool("q", false, "print only the problems, not the streams")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: ftpcapcheck [-q] IN.pcap OUT.pcap | CAPTURE.pcap\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fs.Usage()
		return 2
	}
	var caps [][][]byte
	for _, name := range fs.Args() {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "ftpcapcheck: %v\n", err)
			return 2
		}
		pkts, _, err := ftpcap.ReadPcap(f)
		f.Close()
		if err != nil {
			fmt.Fprintf(stderr, "ftpcapcheck: %s: %v\n", name, err)
			return 2
		}
		caps = append(caps, ftpcap.Raw(pkts))
	}
	var rep *ftpcap.Report
	if len(caps) == 2 {
		rep = ftpcap.CheckALG(caps[0], caps[1])
	} else {
		rep = ftpcap.Check(caps[0])
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(stdout, p)
	}
	if !*quiet {
		for _, f := range rep.Flows {
			fmt.Fprintf(stdout, "%v -> %v (%d segments, SYN %v, FIN %v): %q\n", f.Src, f.Dst, f.Segments, f.SawSYN, f.SawFIN, f.Data)
		}
	}
	fmt.Fprintf(stdout, "%d packets, %d TCP, %d problems\n", rep.Packets, rep.TCP, len(rep.Problems))
	if len(rep.Problems) > 0 {
		return 1
	}
	return 0
}
