package tayga

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ftpalg/ftpalg/mangle"
)

var (
	ap  = netip.MustParseAddrPort
	ad  = netip.MustParseAddr
	pfx = netip.MustParsePrefix
)

func parseFile(t *testing.T, name string) (*Config, error) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return ParseConfig(f)
}

func TestParseConfigFiles(t *testing.T) {
	tests := []struct {
		file string
		want *Config
	}{
		{"full.conf", &Config{
			TunDevice:   "nat64",
			IPv4Addr:    ad("203.0.113.1"),
			IPv6Addr:    ad("2001:db8:ffff::1"),
			Prefix:      pfx("2001:db8:64::/96"),
			DynamicPool: pfx("203.0.113.0/24"),
			DataDir:     "/var/spool/tayga",
			MapFile:     "maps.conf",
			Maps: []Map{
				{V4: pfx("198.51.100.10/32"), V6: pfx("2001:db8:1::10/128")},
				{V4: pfx("192.0.2.0/24"), V6: pfx("2001:db8:2::/120")},
			},
			WKPFStrict: false,
		}},
		{"minimal.conf", &Config{
			IPv4Addr:   ad("192.0.2.1"),
			Prefix:     pfx("2001:db8:64::/96"),
			WKPFStrict: true,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := parseFile(t, tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(Config{}),
				cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("ParseConfig mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	const base = "ipv4-addr 203.0.113.1\nprefix 2001:db8:64::/96\n"
	tests := []struct {
		name, conf, want string
	}{
		{"unknown directive", base + "frobnicate yes\n", `tayga.conf:3: unknown directive "frobnicate"`},
		{"argument count", base + "map 192.0.2.1\n", `tayga.conf:3: map: want 2 arguments, have 1`},
		{"argument count one", "ipv4-addr\n", `tayga.conf:1: ipv4-addr: want 1 argument, have 0`},
		{"comment counts tokens", base + "map 192.0.2.1 # 2001:db8::1\n", `tayga.conf:3: map: want 2 arguments, have 1`},
		{"too many tokens", base + "log drop drop drop drop drop drop drop drop drop drop\n", `tayga.conf:3: too many tokens (Tayga allows 10)`},
		{"line too long", base + "# " + strings.Repeat("x", 600) + "\n", `tayga.conf:3: line too long (Tayga reads at most 509 bytes)`},
		{"missing prefix", "ipv4-addr 203.0.113.1\n", `tayga.conf: missing prefix directive (the ALG needs the NAT64 prefix)`},
		{"missing ipv4-addr", "prefix 2001:db8:64::/96\n", `tayga.conf: missing ipv4-addr directive`},
		{"bad ipv4-addr", "ipv4-addr 2001:db8::1\n", `tayga.conf:1: ipv4-addr: invalid IPv4 address "2001:db8::1"`},
		{"reserved ipv4-addr", "ipv4-addr 127.0.0.1\n", `tayga.conf:1: ipv4-addr: reserved address 127.0.0.1`},
		{"duplicate ipv4-addr", base + "ipv4-addr 203.0.113.2\n", `tayga.conf:3: ipv4-addr: duplicate directive (first on line 1)`},
		{"bad ipv6-addr", base + "ipv6-addr x\n", `tayga.conf:3: ipv6-addr: invalid IPv6 address "x"`},
		{"reserved ipv6-addr", base + "ipv6-addr fe80::1\n", `tayga.conf:3: ipv6-addr: reserved address fe80::1`},
		{"ipv6-addr in prefix", base + "ipv6-addr 2001:db8:64::1\n", `tayga.conf: ipv6-addr: 2001:db8:64::1 is inside the prefix 2001:db8:64::/96`},
		{"bad prefix", "prefix 2001:db8:64::\n", `tayga.conf:1: prefix: invalid IPv6 prefix "2001:db8:64::"`},
		{"IPv4 prefix", "prefix 192.0.2.0/24\n", `tayga.conf:1: prefix: invalid IPv6 prefix "192.0.2.0/24"`},
		{"prefix length", "prefix 2001:db8:64::/80\n", `tayga.conf:1: prefix: length /80 not allowed (RFC 6052: 32, 40, 48, 56, 64 or 96)`},
		{"prefix host bits", "prefix 2001:db8:64::1/96\n", `tayga.conf:1: prefix: 2001:db8:64::1/96 has host bits set`},
		{"duplicate prefix", base + "prefix 2001:db8:65::/96\n", `tayga.conf:3: prefix: duplicate directive (first on line 2)`},
		{"wkpf strict needs ipv6-addr", "ipv4-addr 192.168.255.1\nprefix 64:ff9b::/96\n", `tayga.conf: ipv6-addr: needed: the ipv4-addr 192.168.255.1 cannot be embedded in the prefix 64:ff9b::/96`},
		{"ipv6-addr in wkpf", "ipv4-addr 192.168.255.1\nprefix 2001:db8:64::/96\nipv6-addr 64:ff9b::1\n", `tayga.conf: ipv6-addr: 64:ff9b::1 is inside the well-known prefix 64:ff9b::/96`},
		{"wkpf-strict value", base + "wkpf-strict maybe\n", `tayga.conf:3: wkpf-strict: invalid value "maybe" (want yes or no)`},
		{"map bad IPv4", base + "map 192.0.2.x 2001:db8::1\n", `tayga.conf:3: map: invalid IPv4 address "192.0.2.x"`},
		{"map bad IPv6", base + "map 192.0.2.1 x\n", `tayga.conf:3: map: invalid IPv6 address "x"`},
		{"map bad length", base + "map 192.0.2.0/33 2001:db8::/128\n", `tayga.conf:3: map: invalid IPv4 address "192.0.2.0/33"`},
		{"map sizes differ", base + "map 192.0.2.0/24 2001:db8:1::/112\n", `tayga.conf:3: map: 192.0.2.0/24 and 2001:db8:1::/112 are not the same size (128-len6 must equal 32-len4)`},
		{"map host bits", base + "map 192.0.2.1/24 2001:db8:1::/120\n", `tayga.conf:3: map: 192.0.2.1/24 has host bits set`},
		{"map reserved", base + "map 224.0.0.1 2001:db8:1::1\n", `tayga.conf:3: map: reserved address 224.0.0.1`},
		{"map overlap IPv4", base + "map 192.0.2.0/24 2001:db8:1::/120\nmap 192.0.2.1 2001:db8:2::1\n", `tayga.conf:4: map: 192.0.2.1/32 overlaps 192.0.2.0/24 from line 3`},
		{"map overlap IPv6", base + "map 192.0.2.1 2001:db8:1::1\nmap 198.51.100.0/24 2001:db8:1::/120\n", `tayga.conf:4: map: 2001:db8:1::/120 overlaps 2001:db8:1::1/128 from line 3`},
		{"map in prefix", base + "map 192.0.2.1 2001:db8:64::1\n", `tayga.conf:3: map: 2001:db8:64::1/128 overlaps the prefix 2001:db8:64::/96`},
		{"map is ipv4-addr", base + "map 203.0.113.1 2001:db8:1::1\n", `tayga.conf:3: map: 203.0.113.1 is the ipv4-addr`},
		{"pool length", base + "dynamic-pool 203.0.113.1/32\n", `tayga.conf:3: dynamic-pool: length /32 not allowed (1 to 31)`},
		{"pool not a prefix", base + "dynamic-pool 203.0.113.1\n", `tayga.conf:3: dynamic-pool: invalid IPv4 prefix "203.0.113.1"`},
		{"pool host bits", base + "dynamic-pool 203.0.113.1/24\n", `tayga.conf:3: dynamic-pool: 203.0.113.1/24 has host bits set`},
		{"data-dir relative", base + "data-dir spool\n", `tayga.conf:3: data-dir: "spool" is not an absolute path`},
		{"tun-device long", base + "tun-device abcdefghijklmnop\n", `tayga.conf:3: tun-device: device name "abcdefghijklmnop" is longer than 15 bytes`},
		{"offlink-mtu small", base + "offlink-mtu 1000\n", `tayga.conf:3: offlink-mtu: invalid value "1000" (1280 to 65535)`},
		{"log value", base + "log everything\n", `tayga.conf:3: log: invalid value "everything"`},
		{"udp-cksum-mode value", base + "udp-cksum-mode maybe\n", `tayga.conf:3: udp-cksum-mode: invalid value "maybe" (want drop, calc or fwd)`},
		{"tun-ip value", base + "tun-ip 203.0.113.1/40\n", `tayga.conf:3: tun-ip: invalid prefix "203.0.113.1/40"`},
		{"workers value", base + "workers 65\n", `tayga.conf:3: workers: invalid value "65" (0 to 64)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig(strings.NewReader(tt.conf))
			if err == nil {
				t.Fatalf("ParseConfig = %+v, want error %q", cfg, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

func TestParseMapFile(t *testing.T) {
	const conf = "ipv4-addr 203.0.113.1\nprefix 2001:db8:64::/96\ndynamic-pool 203.0.113.0/24\nmap 192.0.2.1 2001:db8:1::1\nmap-file maps\n"
	cfg := mustConf(t, conf)
	got, err := ParseMapFile(cfg, strings.NewReader("# reloadable maps\nmap 192.0.2.2 2001:db8:1::2\n\nMAP 198.51.100.0/24 2001:db8:2::/120\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Map{
		{V4: pfx("192.0.2.1/32"), V6: pfx("2001:db8:1::1/128")},
		{V4: pfx("192.0.2.2/32"), V6: pfx("2001:db8:1::2/128")},
		{V4: pfx("198.51.100.0/24"), V6: pfx("2001:db8:2::/120")},
	}
	if diff := cmp.Diff(want, got.Maps, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("maps (-want +got):\n%s", diff)
	}
	if len(cfg.Maps) != 1 {
		t.Errorf("ParseMapFile changed its argument: %d maps", len(cfg.Maps))
	}
	if v6, ok := NewMapper(got, nil).To6(ad("198.51.100.7")); !ok || v6 != ad("2001:db8:2::7") {
		t.Errorf("To6 through a map-file map = %v, %v", v6, ok)
	}
	tests := []struct{ name, file, want string }{
		{"other directive", "map 192.0.2.2 2001:db8:1::2\nprefix 2001:db8:65::/96\n", `map-file:2: unknown directive "prefix" (a map-file holds only map lines)`},
		{"bad map", "map 192.0.2.2 x\n", `map-file:1: map: invalid IPv6 address "x"`},
		{"overlaps tayga.conf", "map 192.0.2.0/24 2001:db8:3::/120\n", `map-file:1: map: 192.0.2.0/24 overlaps 192.0.2.1/32 from tayga.conf line 4`},
		{"overlaps itself", "map 192.0.2.2 2001:db8:1::2\nmap 192.0.2.3 2001:db8:1::2\n", `map-file:2: map: 2001:db8:1::2/128 overlaps 2001:db8:1::2/128 from line 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMapFile(cfg, strings.NewReader(tt.file))
			if err == nil || err.Error() != tt.want {
				t.Errorf("error\n got: %v\nwant: %s", err, tt.want)
			}
		})
	}
	// A hand-built config (no line numbers) still gets checked.
	hand := &Config{IPv4Addr: ad("203.0.113.1"), Prefix: pfx("2001:db8:64::/96"), WKPFStrict: true,
		Maps: []Map{{V4: pfx("192.0.2.1/32"), V6: pfx("2001:db8:1::1/128")}}}
	_, err = ParseMapFile(hand, strings.NewReader("map 192.0.2.1 2001:db8:1::5\n"))
	if err == nil || err.Error() != "map-file:1: map: 192.0.2.1/32 overlaps 192.0.2.1/32" {
		t.Errorf("hand-built config: error %v", err)
	}
}

// labConf is the test lab's Tayga (test/README.md) on documentation addresses, with a
// host map and a subnet map.
const labConf = `
tun-device nat64
ipv4-addr 203.0.113.1
ipv6-addr 2001:db8:ffff::1
prefix 2001:db8:64::/96
dynamic-pool 203.0.113.0/24
map 198.51.100.10 2001:db8:1::10
map 192.0.2.0/24 2001:db8:2::/120
`

func mustConf(t testing.TB, s string) *Config {
	t.Helper()
	cfg, err := ParseConfig(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// fakeResolver answers from fixed tables and counts calls.
type fakeResolver struct {
	mu     sync.Mutex
	to6    map[netip.Addr]netip.Addr
	to4    map[netip.Addr]netip.Addr
	calls  int
	lastC4 netip.AddrPort
	lastS4 netip.AddrPort
}

func (f *fakeResolver) Lookup6(client4, server4 netip.AddrPort) (netip.Addr, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.lastC4, f.lastS4 = client4, server4
	a, ok := f.to6[client4.Addr()]
	return a, ok
}

func (f *fakeResolver) Lookup4(client6, server6 netip.AddrPort) (netip.Addr, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	a, ok := f.to4[client6.Addr()]
	return a, ok
}

func TestTaygaClassify(t *testing.T) {
	cfg := mustConf(t, labConf)
	res := &fakeResolver{
		to6: map[netip.Addr]netip.Addr{ad("203.0.113.50"): ad("2001:db8:6::50")},
		to4: map[netip.Addr]netip.Addr{ad("2001:db8:6::51"): ad("203.0.113.51")},
	}
	m := NewMapper(cfg, res)
	m.Learn(ad("203.0.113.238"), ad("2001:db8:6::2"))
	noRes := NewMapper(cfg, nil)
	noPool := NewMapper(mustConf(t, strings.Replace(labConf, "dynamic-pool 203.0.113.0/24", "", 1)), nil)

	tests := []struct {
		name           string
		m              *Mapper
		client, server string
		want           mangle.Session
		ok             bool
	}{
		// IPv4 leg.
		{"v4 46 host map", m, "198.51.100.7:40000", "198.51.100.10:21",
			mangle.Session{Kind: mangle.Kind46, Client4: ad("198.51.100.7"), Client6: ad("2001:db8:64::c633:6407"),
				Server4: ad("198.51.100.10"), Server6: ad("2001:db8:1::10")}, true},
		{"v4 46 subnet map", m, "198.51.100.7:40000", "192.0.2.33:21",
			mangle.Session{Kind: mangle.Kind46, Client4: ad("198.51.100.7"), Client6: ad("2001:db8:64::c633:6407"),
				Server4: ad("192.0.2.33"), Server6: ad("2001:db8:2::21")}, true},
		{"v4 46 server in pool, learned", m, "198.51.100.7:40000", "203.0.113.238:21",
			mangle.Session{Kind: mangle.Kind46, Client4: ad("198.51.100.7"), Client6: ad("2001:db8:64::c633:6407"),
				Server4: ad("203.0.113.238"), Server6: ad("2001:db8:6::2")}, true},
		{"v4 46 server in pool, unknown", m, "198.51.100.7:40000", "203.0.113.239:21", mangle.Session{}, false},
		{"v4 64 static client", m, "192.0.2.5:40000", "198.51.100.20:21",
			mangle.Session{Kind: mangle.Kind64, Client4: ad("192.0.2.5"), Client6: ad("2001:db8:2::5"),
				Server4: ad("198.51.100.20"), Server6: ad("2001:db8:64::198.51.100.20")}, true},
		{"v4 64 pool client learned", m, "203.0.113.238:40000", "198.51.100.20:21",
			mangle.Session{Kind: mangle.Kind64, Client4: ad("203.0.113.238"), Client6: ad("2001:db8:6::2"),
				Server4: ad("198.51.100.20"), Server6: ad("2001:db8:64::198.51.100.20")}, true},
		{"v4 64 pool client resolved", m, "203.0.113.50:40000", "198.51.100.20:21",
			mangle.Session{Kind: mangle.Kind64, Client4: ad("203.0.113.50"), Client6: ad("2001:db8:6::50"),
				Server4: ad("198.51.100.20"), Server6: ad("2001:db8:64::198.51.100.20")}, true},
		{"v4 64 pool client unknown", m, "203.0.113.60:40000", "198.51.100.20:21",
			mangle.Session{Kind: mangle.Kind64, Client4: ad("203.0.113.60"),
				Server4: ad("198.51.100.20"), Server6: ad("2001:db8:64::198.51.100.20")}, true},
		{"v4 64 pool client no resolver", noRes, "203.0.113.50:40000", "198.51.100.20:21",
			mangle.Session{Kind: mangle.Kind64, Client4: ad("203.0.113.50"),
				Server4: ad("198.51.100.20"), Server6: ad("2001:db8:64::198.51.100.20")}, true},
		{"v4 both plain", m, "198.51.100.7:40000", "198.51.100.20:21", mangle.Session{}, false},
		{"v4 both mapped", m, "192.0.2.5:40000", "198.51.100.10:21", mangle.Session{}, false},
		{"v4 tayga server", m, "198.51.100.7:40000", "203.0.113.1:21", mangle.Session{}, false},
		{"v4 tayga client", m, "203.0.113.1:40000", "198.51.100.20:21", mangle.Session{}, false},
		{"v4 reserved client", m, "127.0.0.1:40000", "198.51.100.10:21", mangle.Session{}, false},
		{"v4 link-local client", m, "169.254.0.7:40000", "198.51.100.10:21", mangle.Session{}, false},
		{"v4 network of pool as server", m, "198.51.100.7:40000", "203.0.113.0:21", mangle.Session{}, false},

		// IPv6 leg.
		{"v6 64 static client", m, "[2001:db8:1::10]:40000", "[2001:db8:64::198.51.100.20]:21",
			mangle.Session{Kind: mangle.Kind64, Client6: ad("2001:db8:1::10"), Client4: ad("198.51.100.10"),
				Server6: ad("2001:db8:64::198.51.100.20"), Server4: ad("198.51.100.20")}, true},
		{"v6 64 subnet client", m, "[2001:db8:2::7]:40000", "[2001:db8:64::198.51.100.20]:21",
			mangle.Session{Kind: mangle.Kind64, Client6: ad("2001:db8:2::7"), Client4: ad("192.0.2.7"),
				Server6: ad("2001:db8:64::198.51.100.20"), Server4: ad("198.51.100.20")}, true},
		{"v6 64 pool client learned", m, "[2001:db8:6::2]:40000", "[2001:db8:64::198.51.100.20]:21",
			mangle.Session{Kind: mangle.Kind64, Client6: ad("2001:db8:6::2"), Client4: ad("203.0.113.238"),
				Server6: ad("2001:db8:64::198.51.100.20"), Server4: ad("198.51.100.20")}, true},
		{"v6 64 pool client resolved", m, "[2001:db8:6::51]:40000", "[2001:db8:64::198.51.100.20]:21",
			mangle.Session{Kind: mangle.Kind64, Client6: ad("2001:db8:6::51"), Client4: ad("203.0.113.51"),
				Server6: ad("2001:db8:64::198.51.100.20"), Server4: ad("198.51.100.20")}, true},
		{"v6 64 pool client predicted", noRes, "[2001:db8:6::99]:40000", "[2001:db8:64::198.51.100.20]:21",
			mangle.Session{Kind: mangle.Kind64, Client6: ad("2001:db8:6::99"), Client4: noRes.PredictDynamic(ad("2001:db8:6::99")),
				Server6: ad("2001:db8:64::198.51.100.20"), Server4: ad("198.51.100.20")}, true},
		{"v6 64 no pool, unmapped client", noPool, "[2001:db8:6::2]:40000", "[2001:db8:64::198.51.100.20]:21", mangle.Session{}, false},
		{"v6 46 host map", m, "[2001:db8:64::198.51.100.7]:40000", "[2001:db8:1::10]:21",
			mangle.Session{Kind: mangle.Kind46, Client6: ad("2001:db8:64::198.51.100.7"), Client4: ad("198.51.100.7"),
				Server6: ad("2001:db8:1::10"), Server4: ad("198.51.100.10")}, true},
		{"v6 46 pool server learned", m, "[2001:db8:64::198.51.100.7]:40000", "[2001:db8:6::2]:21",
			mangle.Session{Kind: mangle.Kind46, Client6: ad("2001:db8:64::198.51.100.7"), Client4: ad("198.51.100.7"),
				Server6: ad("2001:db8:6::2"), Server4: ad("203.0.113.238")}, true},
		{"v6 46 unmapped server", m, "[2001:db8:64::198.51.100.7]:40000", "[2001:db8:6::3]:21", mangle.Session{}, false},
		{"v6 hairpin to static", m, "[2001:db8:6::2]:40000", "[2001:db8:64::198.51.100.10]:21", mangle.Session{}, false},
		{"v6 hairpin to pool", m, "[2001:db8:6::2]:40000", "[2001:db8:64::203.0.113.5]:21", mangle.Session{}, false},
		{"v6 hairpin to tayga", m, "[2001:db8:6::2]:40000", "[2001:db8:64::203.0.113.1]:21", mangle.Session{}, false},
		{"v6 both in prefix", m, "[2001:db8:64::198.51.100.7]:40000", "[2001:db8:64::198.51.100.20]:21", mangle.Session{}, false},
		{"v6 both plain", m, "[2001:db8:6::2]:40000", "[2001:db8:1::10]:21", mangle.Session{}, false},
		{"v6 tayga client", m, "[2001:db8:ffff::1]:40000", "[2001:db8:64::198.51.100.20]:21", mangle.Session{}, false},
		{"v6 tayga server", m, "[2001:db8:64::198.51.100.7]:40000", "[2001:db8:ffff::1]:21", mangle.Session{}, false},
		{"v6 link-local server", m, "[2001:db8:6::2]:40000", "[2001:db8:64::169.254.0.7]:21", mangle.Session{}, false},
		{"v6 u octet set", m, "[2001:db8:6::2]:40000", "[2001:db8:64:0:100::c633:6414]:21", mangle.Session{}, false},

		// Mixed families.
		{"mixed", m, "198.51.100.7:40000", "[2001:db8:1::10]:21", mangle.Session{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.m.Classify(ap(tt.client), ap(tt.server))
			if ok != tt.ok {
				t.Fatalf("Classify ok = %v, want %v (session %+v)", ok, tt.ok, got)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Classify mismatch (-want +got):\n%s", diff)
			}
		})
	}
	if res.lastC4 != ap("203.0.113.60:40000") || res.lastS4 != ap("198.51.100.20:21") {
		t.Errorf("resolver asked for %v -> %v, want the control connection's endpoints", res.lastC4, res.lastS4)
	}
	// A resolved binding is learned: no second lookup.
	before := res.calls
	m.Classify(ap("203.0.113.50:40001"), ap("198.51.100.20:21"))
	m.Classify(ap("[2001:db8:6::51]:40001"), ap("[2001:db8:64::198.51.100.20]:21"))
	if res.calls != before {
		t.Errorf("resolver called %d more times for known bindings", res.calls-before)
	}
	if v4, ok := m.To4(ad("2001:db8:6::50")); !ok || v4 != ad("203.0.113.50") {
		t.Errorf("To4 after a resolved Classify = %v, %v", v4, ok)
	}
}

func TestTaygaWellKnownPrefix(t *testing.T) {
	conf := "ipv4-addr 192.168.255.1\nipv6-addr 2001:db8:ffff::1\nprefix 64:ff9b::/96\nmap 198.51.100.10 2001:db8:1::10\n"
	strict := NewMapper(mustConf(t, conf), nil)
	lax := NewMapper(mustConf(t, conf+"wkpf-strict no\n"), nil)
	const global = "1.2.3.4" // only computed with, never contacted
	tests := []struct {
		name           string
		m              *Mapper
		client, server string
		ok             bool
	}{
		{"strict global client 46", strict, global + ":40000", "198.51.100.10:21", true},
		{"strict documentation client 46", strict, "192.0.2.7:40000", "198.51.100.10:21", false},
		{"strict RFC 6598 client 46", strict, "100.64.0.7:40000", "198.51.100.10:21", false},
		{"lax documentation client 46", lax, "192.0.2.7:40000", "198.51.100.10:21", true},
		{"strict documentation server v6 64", strict, "[2001:db8:1::10]:40000", "[64:ff9b::192.0.2.7]:21", false},
		{"strict global server v6 64", strict, "[2001:db8:1::10]:40000", "[64:ff9b::" + global + "]:21", true},
		{"lax documentation server v6 64", lax, "[2001:db8:1::10]:40000", "[64:ff9b::192.0.2.7]:21", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := tt.m.Classify(ap(tt.client), ap(tt.server)); ok != tt.ok {
				t.Errorf("Classify ok = %v, want %v", ok, tt.ok)
			}
		})
	}
}

func TestTaygaMapData(t *testing.T) {
	m := NewMapper(mustConf(t, labConf), nil)
	s46 := mangle.Session{Kind: mangle.Kind46, Client4: ad("198.51.100.7"), Client6: ad("2001:db8:64::c633:6407"),
		Server4: ad("198.51.100.10"), Server6: ad("2001:db8:1::10")}
	s64 := mangle.Session{Kind: mangle.Kind64, Client4: ad("203.0.113.238"), Client6: ad("2001:db8:6::2"),
		Server4: ad("198.51.100.20"), Server6: ad("2001:db8:64::c633:6414")}
	s64unknown := s64
	s64unknown.Client6 = netip.Addr{}
	s64unknown4 := s64
	s64unknown4.Client4 = netip.Addr{}
	tests := []struct {
		name   string
		req    mangle.DataRequest
		want   string
		hasErr bool
	}{
		{"passive46", mangle.DataRequest{Session: s46, Mode: mangle.Passive46, Target: ap("[2001:db8:1::10]:3000")}, "198.51.100.10:3000", false},
		{"active46", mangle.DataRequest{Session: s46, Mode: mangle.Active46, Target: ap("198.51.100.7:50000")}, "[2001:db8:64::c633:6407]:50000", false},
		{"passive64", mangle.DataRequest{Session: s64, Mode: mangle.Passive64, Target: ap("198.51.100.20:40001")}, "[2001:db8:64::c633:6414]:40001", false},
		{"active64", mangle.DataRequest{Session: s64, Mode: mangle.Active64, Target: ap("[2001:db8:6::2]:50001")}, "203.0.113.238:50001", false},
		{"active64 client4 unknown", mangle.DataRequest{Session: s64unknown4, Mode: mangle.Active64, Target: ap("[2001:db8:6::2]:50001")}, "", true},
		{"passive64 with unknown client6 still works", mangle.DataRequest{Session: s64unknown, Mode: mangle.Passive64, Target: ap("198.51.100.20:40001")}, "[2001:db8:64::c633:6414]:40001", false},
		{"bad mode", mangle.DataRequest{Session: s64, Mode: 0, Target: ap("198.51.100.20:40001")}, "", true},
		{"port zero", mangle.DataRequest{Session: s46, Mode: mangle.Passive46, Target: ap("[2001:db8:1::10]:0")}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.MapData(tt.req)
			if (err != nil) != tt.hasErr {
				t.Fatalf("MapData = %v, %v; want error %v", got, err, tt.hasErr)
			}
			if err == nil && got != ap(tt.want) {
				t.Errorf("MapData = %v, want %v", got, tt.want)
			}
			again, err2 := m.MapData(tt.req)
			if again != got || (err2 == nil) != (err == nil) {
				t.Errorf("second MapData = %v, %v; first %v, %v", again, err2, got, err)
			}
		})
	}
}

func TestTaygaLearnAndTo(t *testing.T) {
	m := NewMapper(mustConf(t, labConf), nil)
	m.Learn(ad("203.0.113.7"), ad("2001:db8:6::7"))
	// Rebinding either side drops the old pair.
	m.Learn(ad("203.0.113.7"), ad("2001:db8:6::8"))
	if _, ok := m.To4(ad("2001:db8:6::7")); ok {
		t.Error("old IPv6 host still bound after its pool address moved")
	}
	if a, ok := m.To6(ad("203.0.113.7")); !ok || a != ad("2001:db8:6::8") {
		t.Errorf("To6(203.0.113.7) = %v, %v", a, ok)
	}
	m.Learn(ad("203.0.113.9"), ad("2001:db8:6::8"))
	if _, ok := m.To6(ad("203.0.113.7")); ok {
		t.Error("old pool address still bound after its host moved")
	}
	// Outside the pool, Tayga's own address, static maps, the prefix: ignored.
	m.Learn(ad("198.51.100.99"), ad("2001:db8:6::99"))
	m.Learn(ad("203.0.113.1"), ad("2001:db8:6::98"))
	m.Learn(ad("203.0.113.97"), ad("2001:db8:1::10"))
	m.Learn(ad("203.0.113.96"), ad("2001:db8:64::1"))
	for _, a := range []string{"2001:db8:6::99", "2001:db8:6::98", "2001:db8:64::1"} {
		if v4, ok := m.learned6(ad(a)); ok {
			t.Errorf("learned %v -> %v, want ignored", a, v4)
		}
	}
	tests := []struct{ v4, v6 string }{
		{"198.51.100.10", "2001:db8:1::10"},
		{"192.0.2.255", "2001:db8:2::ff"},
		{"198.51.100.20", "2001:db8:64::c633:6414"},
		{"203.0.113.1", "2001:db8:ffff::1"},
		{"203.0.113.9", "2001:db8:6::8"},
	}
	for _, tt := range tests {
		if got, ok := m.To6(ad(tt.v4)); !ok || got != ad(tt.v6) {
			t.Errorf("To6(%s) = %v, %v; want %s", tt.v4, got, ok, tt.v6)
		}
		if got, ok := m.To4(ad(tt.v6)); !ok || got != ad(tt.v4) {
			t.Errorf("To4(%s) = %v, %v; want %s", tt.v6, got, ok, tt.v4)
		}
	}
	if got, ok := m.To6(ad("203.0.113.10")); ok {
		t.Errorf("To6 of an unbound pool address = %v", got)
	}
}

func TestTaygaLoadDynamicMap(t *testing.T) {
	m := NewMapper(mustConf(t, labConf), nil)
	f, err := os.Open(filepath.Join("testdata", "dynamic.map"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = m.LoadDynamicMap(f)
	if err == nil || err.Error() != `dynamic.map:15: malformed line "203.0.113.8\t2001:db8:6::8"` {
		t.Errorf("LoadDynamicMap error = %v, want the malformed line 15", err)
	}
	// The first line for 203.0.113.7 wins; the most recently used of the
	// three lines for 2001:db8:6::20 wins.
	for v6, v4 := range map[string]string{"2001:db8:6::2": "203.0.113.238", "2001:db8:6::7": "203.0.113.7", "2001:db8:6::20": "203.0.113.21"} {
		if got, ok := m.To4(ad(v6)); !ok || got != ad(v4) {
			t.Errorf("To4(%s) = %v, %v; want %s", v6, got, ok, v4)
		}
	}
	// Outside the pool (like Tayga, ignored) and malformed: not learned.
	for _, v6 := range []string{"2001:db8:6::99", "2001:db8:6::8", "2001:db8:6::77"} {
		if got, ok := m.To4(ad(v6)); ok {
			t.Errorf("To4(%s) = %v, want not learned", v6, got)
		}
	}
}

func TestTaygaPredictDynamic(t *testing.T) {
	m := NewMapper(mustConf(t, labConf), nil)
	// Worked by hand from Tayga's assign_dynamic on a little-endian host:
	// the words of 2001:db8:6::2 read little-endian are 0xb80d0120,
	// 0x00000600, 0 and 0x02000000; folded into 8 bits with end-around
	// carry after each addition they give 0xe6, 0xec, 0xec, 0xee.
	var one [4]byte
	binary.NativeEndian.PutUint32(one[:], 1)
	if one[0] == 1 {
		if got := m.PredictDynamic(ad("2001:db8:6::2")); got != ad("203.0.113.238") {
			t.Errorf("PredictDynamic(2001:db8:6::2) = %v, want 203.0.113.238", got)
		}
	}
	for _, s := range []string{"2001:db8:6::2", "2001:db8:6::3", "2001:db8:abcd::1234", "2001:db8:ff::ff"} {
		v6 := ad(s)
		got := m.PredictDynamic(v6)
		if !m.pool.Contains(got) || got == m.pool.Addr() || got == m.own4 {
			t.Errorf("PredictDynamic(%v) = %v, not an assignable pool address", v6, got)
		}
		// Once taken by someone else, Tayga moves to the next free address.
		m2 := NewMapper(mustConf(t, labConf), nil)
		m2.Learn(got, ad("2001:db8:9::9"))
		next := m2.PredictDynamic(v6)
		want := netip.AddrFrom4([4]byte{203, 0, 113, byte(got.As4()[3] + 1)})
		if want == m.pool.Addr() {
			want = netip.AddrFrom4([4]byte{203, 0, 113, 2}) // skip .0 and Tayga's .1
		}
		if want == m.own4 {
			want = netip.AddrFrom4([4]byte{203, 0, 113, 2})
		}
		if next != want {
			t.Errorf("PredictDynamic(%v) with %v taken = %v, want %v", v6, got, next, want)
		}
		// A known binding wins.
		m2.Learn(ad("203.0.113.200"), v6)
		if got := m2.PredictDynamic(v6); got != ad("203.0.113.200") {
			t.Errorf("PredictDynamic(%v) with a binding = %v", v6, got)
		}
	}
	for _, s := range []string{"2001:db8:64::1", "2001:db8:1::10", "2001:db8:ffff::1"} {
		if got := m.PredictDynamic(ad(s)); got.IsValid() {
			t.Errorf("PredictDynamic(%s) = %v, want none (not a pool candidate)", s, got)
		}
	}
	noPool := NewMapper(mustConf(t, "ipv4-addr 203.0.113.1\nprefix 2001:db8:64::/96\n"), nil)
	if got := noPool.PredictDynamic(ad("2001:db8:6::2")); got.IsValid() {
		t.Errorf("PredictDynamic without a pool = %v", got)
	}
	// A full /31 pool: nothing left.
	tiny := NewMapper(mustConf(t, "ipv4-addr 192.0.2.1\nprefix 2001:db8:64::/96\ndynamic-pool 203.0.113.0/31\n"), nil)
	tiny.Learn(ad("203.0.113.1"), ad("2001:db8:6::1"))
	if got := tiny.PredictDynamic(ad("2001:db8:6::2")); got.IsValid() {
		t.Errorf("PredictDynamic with a full pool = %v", got)
	}
}

func TestTaygaAllocs(t *testing.T) {
	res := &fakeResolver{to6: map[netip.Addr]netip.Addr{}, to4: map[netip.Addr]netip.Addr{}}
	m := NewMapper(mustConf(t, labConf), res)
	m.Learn(ad("203.0.113.238"), ad("2001:db8:6::2"))
	flows := [][2]netip.AddrPort{
		{ap("198.51.100.7:40000"), ap("198.51.100.10:21")},
		{ap("203.0.113.238:40000"), ap("198.51.100.20:21")},
		{ap("203.0.113.60:40000"), ap("198.51.100.20:21")},
		{ap("[2001:db8:6::2]:40000"), ap("[2001:db8:64::198.51.100.20]:21")},
		{ap("[2001:db8:6::77]:40000"), ap("[2001:db8:64::198.51.100.20]:21")},
		{ap("[2001:db8:64::198.51.100.7]:40000"), ap("[2001:db8:1::10]:21")},
		{ap("198.51.100.7:40000"), ap("198.51.100.20:21")},
	}
	req := mangle.DataRequest{Mode: mangle.Passive46, Target: ap("[2001:db8:1::10]:3000")}
	req.Session, _ = m.Classify(flows[0][0], flows[0][1])
	n := testing.AllocsPerRun(200, func() {
		for _, f := range flows {
			m.Classify(f[0], f[1])
		}
		if _, err := m.MapData(req); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("Classify/MapData allocate %v times per run, want 0", n)
	}
}

func TestTaygaConcurrent(t *testing.T) {
	m := NewMapper(mustConf(t, labConf), nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				v4 := netip.AddrFrom4([4]byte{203, 0, 113, byte(2 + i%200)})
				v6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 6, 14: byte(g), 15: byte(i)})
				m.Learn(v4, v6)
				m.Classify(netip.AddrPortFrom(v6, 40000), ap("[2001:db8:64::198.51.100.20]:21"))
				m.Classify(netip.AddrPortFrom(v4, 40000), ap("198.51.100.20:21"))
				m.PredictDynamic(v6)
			}
		}()
	}
	wg.Wait()
	// The tables stay one-to-one.
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.dyn4) != len(m.dyn6) {
		t.Fatalf("dyn4 has %d entries, dyn6 %d", len(m.dyn4), len(m.dyn6))
	}
	for v4, v6 := range m.dyn4 {
		if m.dyn6[v6] != v4 {
			t.Errorf("dyn4[%v] = %v but dyn6[%v] = %v", v4, v6, v6, m.dyn6[v6])
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add(labConf)
	f.Add("ipv4-addr 192.0.2.1\nprefix 2001:db8:64::/96\nmap 192.0.2.0/24 2001:db8::/120\n")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := ParseConfig(strings.NewReader(s))
		if err != nil {
			return
		}
		m := NewMapper(cfg, nil)
		// Every static map translates both ways and back.
		for _, mp := range cfg.Maps {
			if mp.V4.Addr() == cfg.IPv4Addr {
				continue // Tayga's own /32 is the longer match
			}
			v6, ok := m.To6(mp.V4.Addr())
			if !ok || v6 != mp.V6.Addr() {
				t.Fatalf("To6(%v) = %v, %v; want %v", mp.V4.Addr(), v6, ok, mp.V6.Addr())
			}
			v4, ok := m.To4(v6)
			if !ok || v4 != mp.V4.Addr() {
				t.Fatalf("To4(%v) = %v, %v; want %v", v6, v4, ok, mp.V4.Addr())
			}
		}
	})
}

// FuzzTaygaClassify checks that Classify never panics and that every
// session it returns agrees with the mapper's own address translation.
func FuzzTaygaClassify(f *testing.F) {
	f.Add([]byte{198, 51, 100, 7}, []byte{198, 51, 100, 10}, uint16(40000), uint16(21))
	f.Add([]byte{203, 0, 113, 238}, []byte{198, 51, 100, 20}, uint16(40000), uint16(21))
	f.Add(ad("2001:db8:6::2").AsSlice(), ad("2001:db8:64::c633:6414").AsSlice(), uint16(40000), uint16(21))
	f.Add(ad("2001:db8:64::c633:6407").AsSlice(), ad("2001:db8:1::10").AsSlice(), uint16(40000), uint16(21))
	f.Add(ad("2001:db8:6::5").AsSlice(), ad("2001:db8:64::c633:6414").AsSlice(), uint16(40000), uint16(21)) // predicted
	m := NewMapper(mustConf(f, labConf), nil)
	m.Learn(ad("203.0.113.238"), ad("2001:db8:6::2"))
	f.Fuzz(func(t *testing.T, c, s []byte, cport, sport uint16) {
		ca, ok1 := netip.AddrFromSlice(c)
		sa, ok2 := netip.AddrFromSlice(s)
		if !ok1 || !ok2 {
			return
		}
		sess, ok := m.Classify(netip.AddrPortFrom(ca, cport), netip.AddrPortFrom(sa, sport))
		if !ok {
			return
		}
		if sess.Kind != mangle.Kind46 && sess.Kind != mangle.Kind64 {
			t.Fatalf("ok with kind %v", sess.Kind)
		}
		pairs := [][2]netip.Addr{{sess.Server4, sess.Server6}}
		predicted := m.pool.Contains(sess.Client4) && m.PredictDynamic(sess.Client6) == sess.Client4
		if _, learned := m.learned4(sess.Client4); predicted && !learned {
			// A prediction: not a binding the mapper knows.
		} else if sess.Client4.IsValid() && sess.Client6.IsValid() {
			pairs = append(pairs, [2]netip.Addr{sess.Client4, sess.Client6})
		}
		for _, p := range pairs {
			if got, ok := m.To6(p[0]); !ok || got != p[1] {
				t.Fatalf("session %+v: To6(%v) = %v, %v", sess, p[0], got, ok)
			}
			if got, ok := m.To4(p[1]); !ok || got != p[0] {
				t.Fatalf("session %+v: To4(%v) = %v, %v", sess, p[1], got, ok)
			}
		}
	})
}

func BenchmarkTaygaClassify(b *testing.B) {
	m := NewMapper(mustConf(b, labConf), nil)
	m.Learn(ad("203.0.113.238"), ad("2001:db8:6::2"))
	flows := [][2]netip.AddrPort{
		{ap("198.51.100.7:40000"), ap("198.51.100.10:21")},                    // 46, IPv4 leg
		{ap("203.0.113.238:40000"), ap("198.51.100.20:21")},                   // 64, IPv4 leg, learned
		{ap("[2001:db8:6::2]:40000"), ap("[2001:db8:64::198.51.100.20]:21")},  // 64, IPv6 leg, learned
		{ap("[2001:db8:6::77]:40000"), ap("[2001:db8:64::198.51.100.20]:21")}, // 64, IPv6 leg, predicted
		{ap("[2001:db8:64::198.51.100.7]:40000"), ap("[2001:db8:1::10]:21")},  // 46, IPv6 leg
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f := flows[i%len(flows)]
		m.Classify(f[0], f[1])
	}
}

// Tayga accepts a static map inside the dynamic pool; the map, being more
// specific, wins for its address, and the pool keeps the rest.
func TestTaygaMapInsidePool(t *testing.T) {
	conf := "ipv4-addr 192.168.254.1\nprefix 2001:db8:64::/96\ndynamic-pool 192.168.255.0/24\nmap 192.168.255.20 2001:db8:2::20\n"
	cfg, err := ParseConfig(strings.NewReader(conf))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMapper(cfg, nil)
	srv := netip.MustParseAddrPort("198.51.100.10:21")
	s, ok := m.Classify(netip.MustParseAddrPort("192.168.255.20:40000"), srv)
	if !ok || s.Kind != mangle.Kind64 || s.Client6 != netip.MustParseAddr("2001:db8:2::20") {
		t.Errorf("static client inside the pool: %+v %v", s, ok)
	}
	s, ok = m.Classify(netip.MustParseAddrPort("[2001:db8:2::20]:40000"), netip.MustParseAddrPort("[2001:db8:64::c633:640a]:21"))
	if !ok || s.Client4 != netip.MustParseAddr("192.168.255.20") {
		t.Errorf("IPv6 leg: %+v %v", s, ok)
	}
	s, ok = m.Classify(netip.MustParseAddrPort("192.168.255.21:40000"), srv)
	if !ok || s.Kind != mangle.Kind64 || s.Client6.IsValid() {
		t.Errorf("dynamic client next to it: %+v %v", s, ok)
	}
	if p := m.PredictDynamic(netip.MustParseAddr("2001:db8:2::99")); p == netip.MustParseAddr("192.168.255.20") {
		t.Errorf("prediction picked the statically mapped address")
	}
}
