package jool

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Ledger records the static BIB entries a Mapper added and has not removed
// yet, so that a later run, after a crash, removes those and only those:
// never an operator's own static entries, even in ReservedPorts.
type Ledger interface {
	// Load returns the recorded entries (none if nothing was recorded).
	Load() ([]BIBEntry, error)
	// Store replaces the record with entries.
	Store(entries []BIBEntry) error
}

// FileLedger is a Ledger in a file, one entry per line in Jool's notation
// ("2001:db8::10#61005 192.0.2.1#61005 tcp"). Store writes a new file and
// renames it over the old one, so a crash leaves the old record or the
// new, never half of one. Keep it under /run: entries do not survive a
// reboot, and neither does the record.
type FileLedger struct {
	Path string
}

// Load reads the file; a missing file is an empty record.
func (l *FileLedger) Load() ([]BIBEntry, error) {
	f, err := os.Open(l.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []BIBEntry
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		e, err := parseLedgerLine(sc.Text())
		if err != nil {
			return out, fmt.Errorf("%s:%d: %w", l.Path, n, err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

func parseLedgerLine(s string) (BIBEntry, error) {
	f := strings.Fields(s)
	if len(f) != 3 || f[2] != "tcp" {
		return BIBEntry{}, fmt.Errorf("want \"ADDR6#PORT ADDR4#PORT tcp\", got %q", s)
	}
	var e BIBEntry
	for i, dst := range []*netip.AddrPort{&e.Addr6, &e.Addr4} {
		a, p, ok := strings.Cut(f[i], "#")
		addr, err1 := netip.ParseAddr(a)
		port, err2 := parsePort(p)
		if !ok || err1 != nil || err2 != nil {
			return BIBEntry{}, fmt.Errorf("bad transport address %q", f[i])
		}
		*dst = netip.AddrPortFrom(addr, port)
	}
	if !e.Addr6.Addr().Is6() || e.Addr6.Addr().Is4In6() || !e.Addr4.Addr().Is4() {
		return BIBEntry{}, fmt.Errorf("want an IPv6 and an IPv4 transport address, got %q", s)
	}
	e.Proto, e.Static = ProtoTCP, true
	return e, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err
}

// Store writes entries to a new file beside Path and renames it over Path.
func (l *FileLedger) Store(entries []BIBEntry) error {
	if err := os.MkdirAll(filepath.Dir(l.Path), 0o700); err != nil {
		return err
	}
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "%v#%d %v#%d tcp\n", e.Addr6.Addr(), e.Addr6.Port(), e.Addr4.Addr(), e.Addr4.Port())
	}
	tmp := l.Path + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, l.Path)
}
