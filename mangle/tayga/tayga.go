package mangle

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// This file is the Tayga side of the ALG: the tayga.conf(5) parser and
// TaygaMapper, a pure Mapper for a Tayga NAT64.
//
// Tayga (https://github.com/apalrd/tayga, Debian's package is 0.9.2) is a
// stateless translator over a TUN device. It maps addresses only and
// never changes ports, so a data channel needs no mapping in the
// translator: the far peer is told the other family's address of the same
// host with the same port.
//
// How Tayga maps an address (addrmap.c, map_ip4_to_ip6/map_ip6_to_ip4):
// the longest matching entry wins among the static "map" lines, the
// dynamic pool's host bindings, the "ipv4-addr"/"ipv6-addr" pair and the
// RFC 6052 "prefix". An IPv4 address inside the dynamic pool with no host
// binding is not translated. An IPv6 address in the prefix whose embedded
// IPv4 address falls in a static map, the pool or Tayga's own address is
// dropped (hairpin).
//
// The well-known prefix 64:ff9b::/96 (RFC 6052 section 3.1): with
// "wkpf-strict" on (the default) Tayga refuses to embed or extract a
// non-global IPv4 address (RFC 1918, RFC 6598, RFC 5737 documentation
// ranges, 198.18.0.0/15) in that prefix, and silently drops such packets.
// TaygaMapper treats those addresses as not translated. Tayga 0.9.2 has no
// "wkpf-strict" directive and always behaves as strict (without
// 100.64.0.0/10 in its list).

// TaygaConfig is what ftpalg needs from a tayga.conf.
type TaygaConfig struct {
	TunDevice   string
	IPv4Addr    netip.Addr   // "ipv4-addr"
	IPv6Addr    netip.Addr   // "ipv6-addr" (optional: zero when absent, Tayga then uses Prefix::IPv4Addr)
	Prefix      netip.Prefix // "prefix" (RFC 6052 lengths 32, 40, 48, 56, 64, 96)
	DynamicPool netip.Prefix // "dynamic-pool" (optional)
	DataDir     string       // "data-dir"
	MapFile     string       // "map-file" (Tayga 0.9.5+; read it with ParseTaygaMapFile)
	Maps        []TaygaMap   // "map" lines, in file order (then the map-file's)
	WKPFStrict  bool         // "wkpf-strict" (default true as in tayga)

	// Where each map and the pool came from, for error messages.
	mapOrigin []taygaOrigin
	poolLine  int
}

// taygaOrigin is a line of tayga.conf (file "") or of the map-file.
type taygaOrigin struct {
	file string
	line int
}

// from describes o as seen from an error in file.
func (o taygaOrigin) from(file string) string {
	switch {
	case o.line == 0:
		return ""
	case o.file == file:
		return fmt.Sprintf(" from line %d", o.line)
	case o.file == "":
		return fmt.Sprintf(" from tayga.conf line %d", o.line)
	}
	return fmt.Sprintf(" from %s line %d", o.file, o.line)
}

// TaygaMap is one "map" line: a host ("map 192.0.2.1 2001:db8::1", a /32
// and a /128) or a subnet ("map 192.0.2.0/24 2001:db8:1::/120") of equal
// size in both families.
type TaygaMap struct{ V4, V6 netip.Prefix }

// TaygaConfError is an error in a tayga.conf (or its map-file), at a
// line (0 when the error concerns the whole file).
type TaygaConfError struct {
	File      string // "" for tayga.conf, "map-file" for the map-file
	Line      int
	Directive string // the directive the error is about, "" if none
	Msg       string
}

func (e *TaygaConfError) Error() string {
	var b strings.Builder
	if e.File == "" {
		b.WriteString("tayga.conf")
	} else {
		b.WriteString(e.File)
	}
	b.WriteByte(':')
	if e.Line > 0 {
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteByte(':')
	}
	b.WriteByte(' ')
	if e.Directive != "" {
		b.WriteString(e.Directive)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Limits of Tayga's parser (conffile.c): fgets into 512 bytes, 10 tokens.
const (
	taygaMaxLine   = 512
	taygaMaxTokens = 10
	taygaIFNameMax = 15 // IFNAMSIZ - 1
	taygaMTUMin    = 1280
	taygaMaxWorker = 64
)

// wkpf is the RFC 6052 well-known prefix.
var wkpf = netip.MustParsePrefix("64:ff9b::/96")

type taygaParser struct {
	cfg  TaygaConfig
	file string // "" for tayga.conf
	line int
	seen map[string]int // directive -> first line, for duplicates
}

// ParseTaygaConf reads a tayga.conf(5). It accepts the directives of
// Tayga 0.9.2 and 0.9.5+ (the keywords are case-insensitive, "#" starts a
// comment, tokens are separated by blanks) and rejects unknown ones, as
// Tayga does. Directives that do not concern address mapping
// ("strict-frag-hdr", "offlink-mtu", "udp-cksum-mode", "tun-up",
// "tun-ip", "tun-route", "log", "workers") are checked and ignored.
//
// Beyond Tayga's own checks it rejects what would make the ALG guess:
// a missing "prefix" (Tayga can run without one, with maps only), "map"
// lines that overlap in either family (Tayga refuses overlapping IPv6
// sides and duplicate IPv4 ones, and lets the longest IPv4 match win),
// a map inside or around the dynamic pool, and map or pool addresses with
// host bits set.
func ParseTaygaConf(r io.Reader) (*TaygaConfig, error) {
	p := &taygaParser{seen: map[string]int{}}
	p.cfg.WKPFStrict = true
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		p.line++
		if err := p.parseLine(sc.Text()); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read tayga.conf: %w", err)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return &p.cfg, nil
}

// ParseTaygaMapFile reads the file a tayga.conf names in "map-file"
// (Tayga 0.9.5+: "map" lines only, the same syntax; Tayga resolves a
// relative path against data-dir) and returns a copy of cfg with those
// maps appended, checked as ParseTaygaConf checks maps. Errors name the
// file "map-file". Tayga itself skips a bad map-file line and rereads the
// file on SIGHUP; here a bad line is an error and a change needs a
// restart.
func ParseTaygaMapFile(cfg *TaygaConfig, r io.Reader) (*TaygaConfig, error) {
	p := &taygaParser{cfg: *cfg, file: "map-file", seen: map[string]int{}}
	p.cfg.Maps = append([]TaygaMap(nil), cfg.Maps...)
	p.cfg.mapOrigin = append([]taygaOrigin(nil), cfg.mapOrigin...)
	for len(p.cfg.mapOrigin) < len(p.cfg.Maps) {
		p.cfg.mapOrigin = append(p.cfg.mapOrigin, taygaOrigin{})
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		p.line++
		line := sc.Text()
		if f := taygaFields(line); len(f) > 0 && !strings.EqualFold(f[0], "map") {
			return nil, p.errf("", "unknown directive %q (a map-file holds only map lines)", f[0])
		}
		if err := p.parseLine(line); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read map-file: %w", err)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return &p.cfg, nil
}

func (p *taygaParser) errf(directive, format string, args ...any) error {
	return &TaygaConfError{File: p.file, Line: p.line, Directive: directive, Msg: fmt.Sprintf(format, args...)}
}

// taygaFields splits a line as Tayga does (strtok on " \t\r\n"); a token
// that starts with '#' ends the line.
func taygaFields(line string) []string {
	f := strings.FieldsFunc(line, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\r' || r == '\n'
	})
	for i, t := range f {
		if strings.HasPrefix(t, "#") {
			return f[:i]
		}
	}
	return f
}

// taygaDirective is one entry of Tayga's directive table: its argument
// count (-1: any) and its handler.
type taygaDirective struct {
	args  int
	parse func(p *taygaParser, name string, args []string) error
}

var taygaDirectives = map[string]taygaDirective{
	"ipv4-addr":       {1, (*taygaParser).ipv4Addr},
	"ipv6-addr":       {1, (*taygaParser).ipv6Addr},
	"prefix":          {1, (*taygaParser).prefix},
	"wkpf-strict":     {1, (*taygaParser).wkpfStrict},
	"udp-cksum-mode":  {1, (*taygaParser).udpCksumMode},
	"tun-up":          {1, (*taygaParser).boolIgnored},
	"tun-ip":          {1, (*taygaParser).tunAddr},
	"tun-route":       {1, (*taygaParser).tunAddr},
	"tun-device":      {1, (*taygaParser).tunDevice},
	"map":             {2, (*taygaParser).mapLine},
	"dynamic-pool":    {1, (*taygaParser).dynamicPool},
	"data-dir":        {1, (*taygaParser).dataDir},
	"map-file":        {1, (*taygaParser).mapFile},
	"strict-frag-hdr": {1, (*taygaParser).ignored},
	"log":             {-1, (*taygaParser).log},
	"offlink-mtu":     {1, (*taygaParser).offlinkMTU},
	"workers":         {1, (*taygaParser).workers},
}

func (p *taygaParser) parseLine(line string) error {
	// fgets into 512 bytes: with its newline a line must leave room for
	// the terminating NUL and not fill the buffer.
	if len(line) > taygaMaxLine-3 {
		return p.errf("", "line too long (Tayga reads at most %d bytes)", taygaMaxLine-3)
	}
	f := taygaFields(line)
	if len(f) == 0 {
		return nil
	}
	if len(f) > taygaMaxTokens {
		return p.errf("", "too many tokens (Tayga allows %d)", taygaMaxTokens)
	}
	name := strings.ToLower(f[0])
	d, ok := taygaDirectives[name]
	if !ok {
		return p.errf("", "unknown directive %q", f[0])
	}
	args := f[1:]
	if d.args >= 0 && len(args) != d.args {
		return p.errf(name, "want %d argument%s, have %d", d.args, plural(d.args), len(args))
	}
	return d.parse(p, name, args)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// once rejects a directive given twice.
func (p *taygaParser) once(name string) error {
	if first, dup := p.seen[name]; dup {
		return p.errf(name, "duplicate directive (first on line %d)", first)
	}
	p.seen[name] = p.line
	return nil
}

func (p *taygaParser) ipv4Addr(name string, args []string) error {
	if err := p.once(name); err != nil {
		return err
	}
	a, err := netip.ParseAddr(args[0])
	if err != nil || !a.Is4() {
		return p.errf(name, "invalid IPv4 address %q", args[0])
	}
	if taygaReserved4(a) {
		return p.errf(name, "reserved address %v", a)
	}
	p.cfg.IPv4Addr = a
	return nil
}

func (p *taygaParser) ipv6Addr(name string, args []string) error {
	if err := p.once(name); err != nil {
		return err
	}
	a, err := netip.ParseAddr(args[0])
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return p.errf(name, "invalid IPv6 address %q", args[0])
	}
	if taygaReserved6(a) {
		return p.errf(name, "reserved address %v", a)
	}
	p.cfg.IPv6Addr = a
	return nil
}

func (p *taygaParser) prefix(name string, args []string) error {
	if err := p.once(name); err != nil {
		return err
	}
	pf, err := netip.ParsePrefix(args[0])
	if err != nil || !pf.Addr().Is6() || pf.Addr().Is4In6() {
		return p.errf(name, "invalid IPv6 prefix %q", args[0])
	}
	if pf.Masked() != pf {
		return p.errf(name, "%v has host bits set", pf)
	}
	if !rfc6052Len(pf.Bits()) {
		return p.errf(name, "length /%d not allowed (RFC 6052: 32, 40, 48, 56, 64 or 96)", pf.Bits())
	}
	if taygaReserved6(pf.Addr()) {
		return p.errf(name, "reserved prefix %v", pf)
	}
	p.cfg.Prefix = pf
	return nil
}

func parseTaygaBool(s string) (v, ok bool) {
	switch strings.ToLower(s) {
	case "true", "on", "yes", "1":
		return true, true
	case "false", "off", "no", "0":
		return false, true
	}
	return false, false
}

func (p *taygaParser) wkpfStrict(name string, args []string) error {
	v, ok := parseTaygaBool(args[0])
	if !ok {
		return p.errf(name, "invalid value %q (want yes or no)", args[0])
	}
	p.cfg.WKPFStrict = v
	return nil
}

func (p *taygaParser) boolIgnored(name string, args []string) error {
	if _, ok := parseTaygaBool(args[0]); !ok {
		return p.errf(name, "invalid value %q (want yes or no)", args[0])
	}
	return nil
}

func (p *taygaParser) udpCksumMode(name string, args []string) error {
	v := strings.ToLower(args[0])
	for _, pre := range []string{"dr", "calc", "forw", "fwd"} {
		if strings.HasPrefix(v, pre) {
			return nil
		}
	}
	return p.errf(name, "invalid value %q (want drop, calc or fwd)", args[0])
}

func (p *taygaParser) tunAddr(name string, args []string) error {
	s := args[0]
	if !strings.Contains(s, "/") {
		if _, err := netip.ParseAddr(s); err != nil {
			return p.errf(name, "invalid address %q", s)
		}
		return nil
	}
	if _, err := netip.ParsePrefix(s); err != nil {
		return p.errf(name, "invalid prefix %q", s)
	}
	return nil
}

func (p *taygaParser) tunDevice(name string, args []string) error {
	if err := p.once(name); err != nil {
		return err
	}
	if len(args[0]) > taygaIFNameMax {
		return p.errf(name, "device name %q is longer than %d bytes", args[0], taygaIFNameMax)
	}
	p.cfg.TunDevice = args[0]
	return nil
}

// parseMapSide parses "addr" or "addr/len" of one family.
func parseMapSide(s string, v6 bool) (netip.Prefix, bool) {
	bits := 32
	if v6 {
		bits = 128
	}
	as, ls, hasLen := strings.Cut(s, "/")
	a, err := netip.ParseAddr(as)
	if err != nil || a.Zone() != "" || a.Is4() == v6 || a.Is4In6() {
		return netip.Prefix{}, false
	}
	if hasLen {
		n, err := strconv.Atoi(ls)
		if err != nil || n < 0 || n > bits || strings.HasPrefix(ls, "+") {
			return netip.Prefix{}, false
		}
		bits = n
	}
	return netip.PrefixFrom(a, bits), true
}

func (p *taygaParser) mapLine(name string, args []string) error {
	v4, ok := parseMapSide(args[0], false)
	if !ok {
		return p.errf(name, "invalid IPv4 address %q", args[0])
	}
	v6, ok := parseMapSide(args[1], true)
	if !ok {
		return p.errf(name, "invalid IPv6 address %q", args[1])
	}
	if 32-v4.Bits() != 128-v6.Bits() {
		return p.errf(name, "%v and %v are not the same size (128-len6 must equal 32-len4)", v4, v6)
	}
	if v4.Masked() != v4 {
		return p.errf(name, "%v has host bits set", v4)
	}
	if v6.Masked() != v6 {
		return p.errf(name, "%v has host bits set", v6)
	}
	if taygaReserved4(v4.Addr()) {
		return p.errf(name, "reserved address %v", v4.Addr())
	}
	if taygaReserved6(v6.Addr()) {
		return p.errf(name, "reserved address %v", v6.Addr())
	}
	p.cfg.Maps = append(p.cfg.Maps, TaygaMap{V4: v4, V6: v6})
	p.cfg.mapOrigin = append(p.cfg.mapOrigin, taygaOrigin{p.file, p.line})
	return nil
}

func (p *taygaParser) dynamicPool(name string, args []string) error {
	if err := p.once(name); err != nil {
		return err
	}
	pf, err := netip.ParsePrefix(args[0])
	if err != nil || !pf.Addr().Is4() {
		return p.errf(name, "invalid IPv4 prefix %q", args[0])
	}
	if pf.Masked() != pf {
		return p.errf(name, "%v has host bits set", pf)
	}
	if pf.Bits() > 31 || pf.Bits() < 1 {
		return p.errf(name, "length /%d not allowed (1 to 31)", pf.Bits())
	}
	if taygaReserved4(pf.Addr()) {
		return p.errf(name, "reserved prefix %v", pf)
	}
	p.cfg.DynamicPool = pf
	p.cfg.poolLine = p.line
	return nil
}

func (p *taygaParser) dataDir(name string, args []string) error {
	if err := p.once(name); err != nil {
		return err
	}
	if !strings.HasPrefix(args[0], "/") {
		return p.errf(name, "%q is not an absolute path", args[0])
	}
	p.cfg.DataDir = args[0]
	return nil
}

func (p *taygaParser) mapFile(name string, args []string) error {
	if err := p.once(name); err != nil {
		return err
	}
	p.cfg.MapFile = args[0]
	return nil
}

func (p *taygaParser) ignored(string, []string) error { return nil }

func (p *taygaParser) log(name string, args []string) error {
	if err := p.once(name); err != nil {
		return err
	}
	for _, a := range args {
		switch strings.ToLower(a) {
		case "drop", "reject", "icmp", "self", "dyn":
		default:
			return p.errf(name, "invalid value %q", a)
		}
	}
	return nil
}

func (p *taygaParser) offlinkMTU(name string, args []string) error {
	if err := p.once(name); err != nil {
		return err
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < taygaMTUMin || n > 65535 {
		return p.errf(name, "invalid value %q (%d to 65535)", args[0], taygaMTUMin)
	}
	return nil
}

func (p *taygaParser) workers(name string, args []string) error {
	if err := p.once(name); err != nil {
		return err
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 0 || n > taygaMaxWorker {
		return p.errf(name, "invalid value %q (0 to %d)", args[0], taygaMaxWorker)
	}
	return nil
}

// validate makes the checks Tayga makes once the whole file is read
// (conffile.c config_validate), plus ftpalg's own.
func (p *taygaParser) validate() error {
	c := &p.cfg
	whole := func(directive, format string, args ...any) error {
		return &TaygaConfError{File: p.file, Directive: directive, Msg: fmt.Sprintf(format, args...)}
	}
	origin := func(i int) taygaOrigin {
		if i < len(c.mapOrigin) {
			return c.mapOrigin[i]
		}
		return taygaOrigin{}
	}
	if !c.Prefix.IsValid() {
		return whole("", "missing prefix directive (the ALG needs the NAT64 prefix)")
	}
	if !c.IPv4Addr.IsValid() {
		return whole("", "missing ipv4-addr directive")
	}
	for i, m := range c.Maps {
		o := origin(i)
		at := func(format string, args ...any) error {
			return &TaygaConfError{File: o.file, Line: o.line, Directive: "map", Msg: fmt.Sprintf(format, args...)}
		}
		for j := range i {
			other := c.Maps[j]
			if m.V4.Overlaps(other.V4) {
				return at("%v overlaps %v%s", m.V4, other.V4, origin(j).from(o.file))
			}
			if m.V6.Overlaps(other.V6) {
				return at("%v overlaps %v%s", m.V6, other.V6, origin(j).from(o.file))
			}
		}
		if m.V6.Overlaps(c.Prefix) {
			return at("%v overlaps the prefix %v", m.V6, c.Prefix)
		}
		// A map may overlap the dynamic pool: Tayga accepts it, and the
		// more specific of the two wins (see class4).
		if m.V4 == netip.PrefixFrom(c.IPv4Addr, 32) {
			return at("%v is the ipv4-addr", m.V4.Addr())
		}
		if c.IPv6Addr.IsValid() && m.V6.Contains(c.IPv6Addr) {
			return at("%v contains the ipv6-addr %v", m.V6, c.IPv6Addr)
		}
	}
	wk := c.WKPFStrict && c.Prefix == wkpf
	if c.IPv6Addr.IsValid() {
		if c.Prefix.Contains(c.IPv6Addr) {
			return whole("ipv6-addr", "%v is inside the prefix %v", c.IPv6Addr, c.Prefix)
		}
		if c.WKPFStrict && wkpf.Contains(c.IPv6Addr) {
			return whole("ipv6-addr", "%v is inside the well-known prefix %v", c.IPv6Addr, wkpf)
		}
	} else if _, ok := taygaEmbed(c.Prefix, c.IPv4Addr, wk); !ok {
		return whole("ipv6-addr", "needed: the ipv4-addr %v cannot be embedded in the prefix %v", c.IPv4Addr, c.Prefix)
	}
	return nil
}

// taygaReserved4 is Tayga's validate_ip4_addr (0.9.5+): addresses it
// never translates (0/8, 127/8, multicast, the limited broadcast).
func taygaReserved4(a netip.Addr) bool {
	b := a.As4()
	return b[0] == 0 || b[0] == 127 || b[0]&0xf0 == 0xe0 || b == [4]byte{255, 255, 255, 255}
}

// taygaReserved6 is Tayga's validate_ip6_addr: ::/8, multicast and
// link-local are refused, except the well-known prefix.
func taygaReserved6(a netip.Addr) bool {
	b := a.As16()
	if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b {
		return false
	}
	return b[0] == 0 || b[0] == 0xff || (b[0] == 0xfe && b[1]&0xc0 == 0x80)
}

// taygaNonGlobal4 is Tayga's is_private_ip4_addr: what the well-known
// prefix must not carry when wkpf-strict is on (RFC 6052 section 3.1).
func taygaNonGlobal4(a netip.Addr) bool {
	for _, p := range nonGlobal4 {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

var nonGlobal4 = [...]netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
}

func rfc6052Len(n int) bool {
	switch n {
	case 32, 40, 48, 56, 64, 96:
		return true
	}
	return false
}

// rfc6052Pos returns the byte offsets of the four IPv4 bytes in an
// RFC 6052 address with a prefix of n bits: they follow the prefix and
// skip byte 8 (bits 64-71, the "u" octet).
func rfc6052Pos(n int) (pos [4]int) {
	i := n / 8
	for k := range pos {
		if i == 8 {
			i++
		}
		pos[k] = i
		i++
	}
	return pos
}

// IsRFC6052Prefix reports whether p is an IPv6 prefix of a length RFC 6052
// section 2.2 allows (32, 40, 48, 56, 64 or 96).
func IsRFC6052Prefix(p netip.Prefix) bool { return p.Addr().Is6() && rfc6052Len(p.Bits()) }

// EmbedRFC6052 returns the IPv4-embedded IPv6 address of v4 in prefix
// (RFC 6052 section 2.2), or false if the prefix length is not one of
// 32, 40, 48, 56, 64, 96 or v4 is not IPv4. It applies no policy (see
// TaygaMapper for Tayga's).
func EmbedRFC6052(prefix netip.Prefix, v4 netip.Addr) (netip.Addr, bool) {
	if !rfc6052Len(prefix.Bits()) || !prefix.Addr().Is6() || !v4.Unmap().Is4() {
		return netip.Addr{}, false
	}
	b := prefix.Masked().Addr().As16()
	for i := prefix.Bits() / 8; i < 16; i++ {
		b[i] = 0
	}
	a4 := v4.Unmap().As4()
	for k, i := range rfc6052Pos(prefix.Bits()) {
		b[i] = a4[k]
	}
	return netip.AddrFrom16(b), true
}

// ExtractRFC6052 returns the IPv4 address embedded in v6 by prefix
// (RFC 6052 section 2.3), or false if v6 is not in prefix, the prefix
// length is not allowed, or the u octet or the suffix is not zero (Tayga
// drops such addresses).
func ExtractRFC6052(prefix netip.Prefix, v6 netip.Addr) (netip.Addr, bool) {
	if !rfc6052Len(prefix.Bits()) || !v6.Is6() || v6.Is4In6() || !prefix.Contains(v6) {
		return netip.Addr{}, false
	}
	b := v6.As16()
	pos := rfc6052Pos(prefix.Bits())
	var a4 [4]byte
	for k, i := range pos {
		a4[k] = b[i]
		b[i] = 0
	}
	for i := max(prefix.Bits()/8, 8); i < 16; i++ {
		if b[i] != 0 {
			return netip.Addr{}, false
		}
	}
	return netip.AddrFrom4(a4), true
}

// taygaEmbed is Tayga's append_to_prefix: RFC 6052 embedding with its
// validity and well-known-prefix rules.
func taygaEmbed(prefix netip.Prefix, v4 netip.Addr, wkStrict bool) (netip.Addr, bool) {
	if !taygaPrefixable4(v4, wkStrict) {
		return netip.Addr{}, false
	}
	return EmbedRFC6052(prefix, v4)
}

// taygaPrefixable4 says whether Tayga translates the IPv4 address a
// through its prefix: not reserved, not link-local (append_to_prefix and
// extract_from_prefix drop 169.254.0.0/16 although a map may use it), and
// global if the prefix is the well-known one and wkpf-strict is on.
func taygaPrefixable4(a netip.Addr, wkStrict bool) bool {
	b := a.As4()
	return !taygaReserved4(a) && !(b[0] == 169 && b[1] == 254) && !(wkStrict && taygaNonGlobal4(a))
}

// DynamicResolver tells a dynamic-pool host's other address; the daemon
// backs it with conntrack.
type DynamicResolver interface {
	// Lookup6 returns the IPv6 address of the dynamic-pool client whose
	// control connection is client4 -> server4 on the IPv4 leg (client4 is
	// the pool address).
	Lookup6(client4, server4 netip.AddrPort) (netip.Addr, bool)
	// Lookup4 returns the pool address Tayga gave the IPv6 host client6
	// whose control connection is client6 -> server6 on the IPv6 leg.
	Lookup4(client6, server6 netip.AddrPort) (netip.Addr, bool)
}

// TaygaMapper is a Mapper for Tayga. It is pure (no syscalls), safe for
// concurrent use, and allocates nothing in Classify and MapData once its
// dynamic bindings are known.
type TaygaMapper struct {
	prefix   netip.Prefix
	wkStrict bool // prefix is the well-known prefix and wkpf-strict is on
	maps     []TaygaMap
	pool     netip.Prefix
	own4     netip.Addr
	own6     netip.Addr
	res      DynamicResolver

	mu   sync.RWMutex
	dyn4 map[netip.Addr]netip.Addr // pool address -> IPv6 host
	dyn6 map[netip.Addr]netip.Addr // IPv6 host -> pool address
}

var _ Mapper = (*TaygaMapper)(nil)

// NewTaygaMapper returns a mapper for the Tayga configured by cfg (as
// ParseTaygaConf returns it). res may be nil: dynamic-pool hosts are then
// known only through Learn, LoadDynamicMap and PredictDynamic.
func NewTaygaMapper(cfg *TaygaConfig, res DynamicResolver) *TaygaMapper {
	m := &TaygaMapper{
		prefix:   cfg.Prefix,
		wkStrict: cfg.WKPFStrict && cfg.Prefix == wkpf,
		maps:     append([]TaygaMap(nil), cfg.Maps...),
		pool:     cfg.DynamicPool,
		own4:     cfg.IPv4Addr,
		own6:     cfg.IPv6Addr,
		res:      res,
		dyn4:     map[netip.Addr]netip.Addr{},
		dyn6:     map[netip.Addr]netip.Addr{},
	}
	if !m.own6.IsValid() && m.own4.IsValid() {
		m.own6, _ = EmbedRFC6052(m.prefix, m.own4)
	}
	return m
}

// Learn remembers that Tayga gave the IPv6 host v6 the pool address v4
// (from dynamic.map or the resolver). A newer binding of either address
// replaces the older one. Addresses outside the dynamic pool, or that a
// static map or the prefix already covers, are ignored.
func (m *TaygaMapper) Learn(v4, v6 netip.Addr) {
	v4 = v4.Unmap()
	if !m.learnable(v4, v6) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.dyn4[v4]; ok {
		delete(m.dyn6, old)
	}
	if old, ok := m.dyn6[v6]; ok {
		delete(m.dyn4, old)
	}
	m.dyn4[v4] = v6
	m.dyn6[v6] = v4
}

// learnable says whether v4 -> v6 can be a dynamic-pool binding.
func (m *TaygaMapper) learnable(v4, v6 netip.Addr) bool {
	if !v4.Is4() || !v6.Is6() || v6.Is4In6() || !m.pool.Contains(v4) || v4 == m.own4 || v4 == m.pool.Addr() ||
		m.prefix.Contains(v6) || v6 == m.own6 {
		return false
	}
	_, static := m.static6(v6)
	return !static
}

// LoadDynamicMap reads Tayga's data-dir/dynamic.map (dynamic.c:
// "ipv4<TAB>ipv6<TAB>last-use-unix-seconds" lines, "#" comments) and
// learns the bindings in it. Tayga writes that file on exit and at most
// every few days while running, so it may be stale: a newer binding
// learned later replaces it. Like Tayga's load_map it skips malformed
// lines, bindings outside the pool or covered by a static map or the
// prefix, and a second line for the same IPv4 address; of two lines for
// the same IPv6 host the most recently used wins (Tayga revives that
// one). It returns an error naming the first malformed line after
// learning the others. Lease expiry (Tayga forgets dormant bindings after
// 14 days) is not applied.
func (m *TaygaMapper) LoadDynamicMap(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	type binding struct {
		v4, v6 netip.Addr
		used   int64
	}
	var (
		bad      error
		bindings []binding
		seen4    = map[netip.Addr]bool{}
		at6      = map[netip.Addr]int{}
	)
	ln := 0
	for sc.Scan() {
		ln++
		f := taygaFields(sc.Text())
		if len(f) == 0 {
			continue
		}
		v4, err4 := netip.ParseAddr(f[0])
		var v6 netip.Addr
		var err6 error
		if len(f) > 1 {
			v6, err6 = netip.ParseAddr(f[1])
		}
		var t int64
		errt := strconv.ErrSyntax
		if len(f) > 2 {
			t, errt = strconv.ParseInt(f[2], 10, 64)
		}
		if len(f) != 3 || err4 != nil || !v4.Is4() || err6 != nil || !v6.Is6() || v6.Is4In6() ||
			errt != nil || t <= 0 {
			if bad == nil {
				bad = fmt.Errorf("dynamic.map:%d: malformed line %q", ln, sc.Text())
			}
			continue
		}
		if !m.learnable(v4, v6) || seen4[v4] {
			continue
		}
		seen4[v4] = true
		if i, ok := at6[v6]; ok {
			if t > bindings[i].used {
				bindings[i] = binding{v4, v6, t}
			}
			continue
		}
		at6[v6] = len(bindings)
		bindings = append(bindings, binding{v4, v6, t})
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read dynamic.map: %w", err)
	}
	for _, b := range bindings {
		m.Learn(b.v4, b.v6)
	}
	return bad
}

// static4 maps an IPv4 address through the static maps.
func (m *TaygaMapper) static4(a netip.Addr) (netip.Addr, bool) {
	for i := range m.maps {
		mp := &m.maps[i]
		if mp.V4.Contains(a) {
			host := u32(a) & hostMask4(mp.V4.Bits())
			b := mp.V6.Addr().As16()
			binary.BigEndian.PutUint32(b[12:], binary.BigEndian.Uint32(b[12:])|host)
			return netip.AddrFrom16(b), true
		}
	}
	return netip.Addr{}, false
}

// staticBits4 reports whether a static map covers a, and its length.
func (m *TaygaMapper) staticBits4(a netip.Addr) (int, bool) {
	for i := range m.maps {
		if m.maps[i].V4.Contains(a) {
			return m.maps[i].V4.Bits(), true
		}
	}
	return 0, false
}

// static6 maps an IPv6 address through the static maps.
func (m *TaygaMapper) static6(a netip.Addr) (netip.Addr, bool) {
	for i := range m.maps {
		mp := &m.maps[i]
		if mp.V6.Contains(a) {
			b := a.As16()
			host := binary.BigEndian.Uint32(b[12:]) & hostMask4(mp.V4.Bits())
			var o [4]byte
			binary.BigEndian.PutUint32(o[:], u32(mp.V4.Addr())|host)
			return netip.AddrFrom4(o), true
		}
	}
	return netip.Addr{}, false
}

// u32 is an IPv4 address as a number.
func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func hostMask4(bits int) uint32 {
	if bits >= 32 {
		return 0
	}
	return ^uint32(0) >> bits
}

// addr4 classes, from Tayga's point of view.
type class4 uint8

const (
	c4Untranslated class4 = iota // reserved, or refused by wkpf-strict
	c4Plain                      // an ordinary IPv4 host: Prefix::a
	c4Static                     // in a static map
	c4Pool                       // in the dynamic pool
	c4Own                        // Tayga's ipv4-addr
)

func (m *TaygaMapper) class4(a netip.Addr) class4 {
	if a == m.own4 {
		return c4Own
	}
	// Tayga keeps static maps and the dynamic pool in one table and
	// takes the longest match: a map inside the pool wins over it, a
	// map around the pool loses to it.
	bits, static := m.staticBits4(a)
	if m.pool.Contains(a) && (!static || bits <= m.pool.Bits()) {
		return c4Pool
	}
	if static {
		return c4Static
	}
	if !taygaPrefixable4(a, m.wkStrict) {
		return c4Untranslated
	}
	return c4Plain
}

// extract returns the IPv4 host that an address in the prefix stands
// for, with Tayga's rules: valid, allowed by wkpf-strict, and not an
// address some other map covers (Tayga drops that hairpin).
func (m *TaygaMapper) extract(a netip.Addr) (netip.Addr, bool) {
	v4, ok := ExtractRFC6052(m.prefix, a)
	if !ok || m.class4(v4) != c4Plain {
		return netip.Addr{}, false
	}
	return v4, true
}

func (m *TaygaMapper) learned4(v4 netip.Addr) (netip.Addr, bool) {
	m.mu.RLock()
	v6, ok := m.dyn4[v4]
	m.mu.RUnlock()
	return v6, ok
}

func (m *TaygaMapper) learned6(v6 netip.Addr) (netip.Addr, bool) {
	m.mu.RLock()
	v4, ok := m.dyn6[v6]
	m.mu.RUnlock()
	return v4, ok
}

// To6 maps an IPv4 address to IPv6 as Tayga would: static map, then a
// known dynamic binding, else the prefix. It does not ask the resolver.
func (m *TaygaMapper) To6(v4 netip.Addr) (netip.Addr, bool) {
	v4 = v4.Unmap()
	if !v4.Is4() {
		return netip.Addr{}, false
	}
	switch m.class4(v4) {
	case c4Own:
		return m.own6, m.own6.IsValid()
	case c4Static:
		return m.static4(v4)
	case c4Pool:
		return m.learned4(v4)
	case c4Plain:
		return EmbedRFC6052(m.prefix, v4)
	}
	return netip.Addr{}, false
}

// To4 maps an IPv6 address to IPv4 as Tayga would: the prefix, then a
// static map, then a known dynamic binding. It neither asks the resolver
// nor predicts.
func (m *TaygaMapper) To4(v6 netip.Addr) (netip.Addr, bool) {
	if !v6.Is6() || v6.Is4In6() {
		return netip.Addr{}, false
	}
	switch {
	case v6 == m.own6:
		return m.own4, true
	case m.prefix.Contains(v6):
		return m.extract(v6)
	}
	if v4, ok := m.static6(v6); ok {
		return v4, true
	}
	return m.learned6(v6)
}

// Classify implements Mapper (names as in Session). On the IPv4 leg a client in a static map or the dynamic pool talking to an
// ordinary IPv4 server is a 64 session, an ordinary IPv4 client talking
// to a mapped server a 46 session; on the IPv6 leg a server inside the
// prefix makes a 64 session and a client inside it a 46 session.
// Connections to or from Tayga's own addresses, between two hosts on the
// same side, or with addresses Tayga does not translate are not
// translated (ok false).
func (m *TaygaMapper) Classify(client, server netip.AddrPort) (Session, bool) {
	c, s := client.Addr().Unmap(), server.Addr().Unmap()
	switch {
	case c.Is4() && s.Is4():
		return m.classify4(client, server, c, s)
	case c.Is6() && s.Is6():
		return m.classify6(client, server, c, s)
	}
	return Session{}, false
}

func (m *TaygaMapper) classify4(client, server netip.AddrPort, c, s netip.Addr) (Session, bool) {
	cc, sc := m.class4(c), m.class4(s)
	switch {
	case cc == c4Plain && (sc == c4Static || sc == c4Pool):
		var s6 netip.Addr
		var ok bool
		if sc == c4Static {
			s6, ok = m.static4(s)
		} else {
			// An IPv6 server in the pool: only a known binding helps;
			// the IPv4 client could not have reached it otherwise.
			s6, ok = m.learned4(s)
		}
		if !ok {
			return Session{}, false
		}
		c6, _ := EmbedRFC6052(m.prefix, c)
		return Session{Kind: Kind46, Client4: c, Client6: c6, Server4: s, Server6: s6}, true
	case sc == c4Plain && (cc == c4Static || cc == c4Pool):
		var c6 netip.Addr
		if cc == c4Static {
			c6, _ = m.static4(c)
		} else if v6, ok := m.learned4(c); ok {
			c6 = v6
		} else if m.res != nil {
			if v6, ok := m.res.Lookup6(netip.AddrPortFrom(c, client.Port()), netip.AddrPortFrom(s, server.Port())); ok {
				m.Learn(c, v6)
				if v4, ok := m.learned6(v6); ok && v4 == c {
					c6 = v6
				}
			}
		}
		s6, _ := EmbedRFC6052(m.prefix, s)
		return Session{Kind: Kind64, Client4: c, Client6: c6, Server4: s, Server6: s6}, true
	}
	return Session{}, false
}

func (m *TaygaMapper) classify6(client, server netip.AddrPort, c, s netip.Addr) (Session, bool) {
	if c == m.own6 || s == m.own6 || c.Zone() != "" || s.Zone() != "" {
		return Session{}, false
	}
	cIn, sIn := m.prefix.Contains(c), m.prefix.Contains(s)
	switch {
	case sIn && !cIn:
		s4, ok := m.extract(s)
		if !ok {
			return Session{}, false
		}
		c4, ok := m.static6(c)
		if !ok {
			if !m.pool.IsValid() {
				return Session{}, false // Tayga has no address for this host
			}
			c4 = m.dynamic4(client, server, c)
		}
		return Session{Kind: Kind64, Client6: c, Client4: c4, Server6: s, Server4: s4}, true
	case cIn && !sIn:
		c4, ok := m.extract(c)
		if !ok {
			return Session{}, false
		}
		s4, ok := m.static6(s)
		if !ok {
			if s4, ok = m.learned6(s); !ok {
				return Session{}, false
			}
		}
		return Session{Kind: Kind46, Client6: c, Client4: c4, Server6: s, Server4: s4}, true
	}
	return Session{}, false
}

// dynamic4 finds the pool address of the IPv6 client c: a known binding,
// the resolver, else Tayga's first choice (PredictDynamic).
func (m *TaygaMapper) dynamic4(client, server netip.AddrPort, c netip.Addr) netip.Addr {
	if v4, ok := m.learned6(c); ok {
		return v4
	}
	if m.res != nil {
		if v4, ok := m.res.Lookup4(netip.AddrPortFrom(c, client.Port()), server); ok && m.pool.Contains(v4.Unmap()) {
			m.Learn(v4.Unmap(), c)
			return v4.Unmap()
		}
	}
	return m.PredictDynamic(c)
}

// PredictDynamic returns the pool address Tayga would give the IPv6 host
// v6 if it assigned one now, or its known binding.
//
// Tayga's assign_dynamic (dynamic.c, the same in 0.9.2 and 0.9.6) is
// deterministic: it folds the sum of the address's four 32-bit words,
// read in the host's byte order, into the pool's host bits (end-around
// carry) and takes the first free address from there upwards, wrapping,
// skipping the pool's network address and addresses other maps cover.
// This reproduces it with what the mapper knows. The prediction is wrong
// when:
//   - another IPv6 host holds that address and the mapper has not
//     learned that binding (Tayga then takes the next free one);
//   - the host had a binding before (from dynamic.map or an earlier,
//     now dormant lease) that the mapper has not learned: Tayga revives
//     the old address;
//   - the pool is full: Tayga takes over the least recently used dormant
//     binding;
//   - Tayga runs on a machine of the other byte order (the hash reads the
//     address in host order; this uses the byte order of the machine
//     running ftpalg).
//
// It returns the zero Addr when there is no dynamic pool or v6 is not an
// IPv6 address Tayga would put in the pool.
func (m *TaygaMapper) PredictDynamic(v6 netip.Addr) netip.Addr {
	if !m.pool.IsValid() || !v6.Is6() || v6.Is4In6() || m.prefix.Contains(v6) || v6 == m.own6 {
		return netip.Addr{}
	}
	if _, ok := m.static6(v6); ok {
		return netip.Addr{}
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if v4, ok := m.dyn6[v6]; ok {
		return v4
	}
	hostBits := uint(32 - m.pool.Bits())
	maxHost := uint32(1)<<hostBits - 1
	b := v6.As16()
	var base uint32
	for i := 0; i < 16; i += 4 {
		base += binary.NativeEndian.Uint32(b[i:])
		for base&^maxHost != 0 {
			base = base&maxHost + base>>hostBits
		}
	}
	net := u32(m.pool.Addr())
	for i := uint32(0); i <= maxHost; i++ {
		a := net | (base+i)&maxHost
		if a == net {
			continue
		}
		var o [4]byte
		binary.BigEndian.PutUint32(o[:], a)
		v4 := netip.AddrFrom4(o)
		if v4 == m.own4 {
			continue
		}
		if _, taken := m.dyn4[v4]; taken {
			continue
		}
		if _, ok := m.static4(v4); ok {
			continue
		}
		return v4
	}
	return netip.Addr{}
}

// MapData implements Mapper. Tayga keeps ports and needs no mapping: the
// far peer is told the same host's address in the other family with the
// same port. It changes no state.
func (m *TaygaMapper) MapData(req DataRequest) (netip.AddrPort, error) {
	var a netip.Addr
	switch req.Mode {
	case Passive46:
		a = req.Session.Server4
	case Active46:
		a = req.Session.Client6
	case Passive64:
		a = req.Session.Server6
	case Active64:
		a = req.Session.Client4
	default:
		return netip.AddrPort{}, errTaygaMode
	}
	if !a.IsValid() {
		return netip.AddrPort{}, errTaygaUnknown
	}
	if req.Target.Port() == 0 {
		return netip.AddrPort{}, errTaygaPort
	}
	return netip.AddrPortFrom(a, req.Target.Port()), nil
}

var (
	errTaygaMode    = errors.New("tayga: unknown data mode")
	errTaygaUnknown = errors.New("tayga: the translated address of this session's peer is not known")
	errTaygaPort    = errors.New("tayga: port 0")
)
