package tayga

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ftpalg/ftpalg/mangle"
)

// Config is what ftpalg needs from a tayga.conf.
type Config struct {
	TunDevice   string
	IPv4Addr    netip.Addr   // "ipv4-addr"
	IPv6Addr    netip.Addr   // "ipv6-addr" (optional: zero when absent, Tayga then uses Prefix::IPv4Addr)
	Prefix      netip.Prefix // "prefix" (RFC 6052 lengths 32, 40, 48, 56, 64, 96)
	DynamicPool netip.Prefix // "dynamic-pool" (optional)
	DataDir     string       // "data-dir"
	MapFile     string       // "map-file" (Tayga 0.9.5+; read it with ParseMapFile)
	Maps        []Map        // "map" lines, in file order (then the map-file's)
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

// Map is one "map" line: a host ("map 192.0.2.1 2001:db8::1", a /32
// and a /128) or a subnet ("map 192.0.2.0/24 2001:db8:1::/120") of equal
// size in both families.
type Map struct{ V4, V6 netip.Prefix }

// ConfigError is an error in a tayga.conf (or its map-file), at a
// line (0 when the error concerns the whole file).
type ConfigError struct {
	File      string // "" for tayga.conf, "map-file" for the map-file
	Line      int
	Directive string // the directive the error is about, "" if none
	Msg       string
}

func (e *ConfigError) Error() string {
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
	cfg  Config
	file string // "" for tayga.conf
	line int
	seen map[string]int // directive -> first line, for duplicates
}

// ParseConfig reads a tayga.conf(5). It accepts the directives of
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
func ParseConfig(r io.Reader) (*Config, error) {
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

// ParseMapFile reads the file a tayga.conf names in "map-file"
// (Tayga 0.9.5+: "map" lines only, the same syntax; Tayga resolves a
// relative path against data-dir) and returns a copy of cfg with those
// maps appended, checked as ParseConfig checks maps. Errors name the
// file "map-file". Tayga itself skips a bad map-file line and rereads the
// file on SIGHUP; here a bad line is an error and a change needs a
// restart.
func ParseMapFile(cfg *Config, r io.Reader) (*Config, error) {
	p := &taygaParser{cfg: *cfg, file: "map-file", seen: map[string]int{}}
	p.cfg.Maps = append([]Map(nil), cfg.Maps...)
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
	return &ConfigError{File: p.file, Line: p.line, Directive: directive, Msg: fmt.Sprintf(format, args...)}
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
	if !mangle.IsRFC6052Prefix(pf) {
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
	p.cfg.Maps = append(p.cfg.Maps, Map{V4: v4, V6: v6})
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
		return &ConfigError{File: p.file, Directive: directive, Msg: fmt.Sprintf(format, args...)}
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
			return &ConfigError{File: o.file, Line: o.line, Directive: "map", Msg: fmt.Sprintf(format, args...)}
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
