package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ftpalg/ftpalg/test/ftpcap"
	"github.com/gopacket/gopacket/layers"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, c *ftpcap.Conv) string {
		var b bytes.Buffer
		if err := ftpcap.WritePcap(&b, ftpcap.Link{Type: layers.LinkTypeEthernet}, c.Packets(ftpcap.Session46(40000).V4)); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain := ftpcap.New(ftpcap.Config{})
	plain.Handshake()
	plain.Reply("220 hi\r\n", "")
	plain.Command("QUIT\r\n", "")
	plain.Close(ftpcap.Client)
	good := write("good.pcap", plain)

	rewritten := ftpcap.New(ftpcap.Config{})
	rewritten.Handshake()
	rewritten.Command("PASV\r\n", "EPSV 2\r\n")
	bad := write("bad.pcap", rewritten)

	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{good}, 0, `"QUIT\r\n"`},
		{[]string{good, good}, 0, "0 problems"},
		{[]string{"-q", bad, bad}, 1, "beyond what"},
		{[]string{}, 2, ""},
		{[]string{filepath.Join(dir, "none.pcap")}, 2, ""},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.out) {
			t.Errorf("run(%q) = %d, stdout %q, stderr %q; want %d and %q", tc.args, code, stdout.String(), stderr.String(), tc.code, tc.out)
		}
	}
}
