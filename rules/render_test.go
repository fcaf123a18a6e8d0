package rules

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files (tayga.nft, jool.nft, testdata/*.nft) from Render")

// goldens pairs each golden file with the Config it is rendered from. The
// two files in the package directory are the ones operators include: they
// are Render of the defaults, byte for byte.
var goldens = []struct {
	file string
	cfg  Config
}{
	{"testdata/tayga.nft", Config{Translator: Tayga}},
	{"testdata/jool.nft", Config{Translator: Jool}},
	{"testdata/tayga-scope-helper.nft", ShippedTayga},
	{"testdata/jool-scope.nft", ShippedJool},
	{"testdata/jool-ipv6-scope.nft", Config{Translator: Jool, Leg: LegIPv6, Scope: exampleJoolScope}},
	{"testdata/tayga-ipv6.nft", Config{Translator: Tayga, Leg: LegIPv6}},
	{"testdata/jool-ipv6.nft", Config{Translator: Jool, Leg: LegIPv6}},
	{"testdata/tayga-ports-queues-bypass.nft", Config{Translator: Tayga, Ports: []uint16{2121, 21}, QueueNum: 4, Queues: 2, Bypass: true}},
	{"testdata/jool-ports-table.nft", Config{Translator: Jool, Ports: []uint16{21, 990, 2121}, QueueNum: 7, Table: "nat64_ftp"}},
	{"testdata/tayga-ipv6-helper-ports.nft", Config{Translator: Tayga, Leg: LegIPv6, Helper: true, Ports: []uint16{2121, 21}, Bypass: true, Scope: exampleTaygaScope}},
	{"testdata/jool-peerfilter.nft", Config{Translator: Jool, PeerFilter: [2]uint16{61000, 61999}}},
	{"testdata/jool-ipv6-peerfilter.nft", Config{Translator: Jool, Leg: LegIPv6, PeerFilter: [2]uint16{61000, 61000}, Bypass: true}},
}

// shipped pairs the files operators include with the Config they are
// rendered from.
var shipped = []struct {
	tables, queue string
	cfg           Config
}{
	{"tayga.nft", "tayga-queue.nft", ShippedTayga},
	{"jool.nft", "jool-queue.nft", ShippedJool},
}

// TestRenderShipped checks that the shipped files are RenderFiles of their
// Config, byte for byte, and that together they are Render's ruleset.
func TestRenderShipped(t *testing.T) {
	for _, g := range shipped {
		t.Run(g.tables, func(t *testing.T) {
			tables, queue, err := RenderFiles(&g.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for file, got := range map[string]string{g.tables: tables, g.queue: queue} {
				if *update {
					if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(string(want), got); diff != "" {
					t.Errorf("%s differs from RenderFiles(%+v) (-file +render); run 'go test ./rules -run TestRenderShipped -update' if the change is intended:\n%s", file, g.cfg, diff)
				}
			}
			whole, _ := Render(&g.cfg)
			if diff := cmp.Diff(listing(whole), listing(withQueueRules(tables, queue))); diff != "" {
				t.Errorf("tables + queue file differ from Render (-render +files):\n%s", diff)
			}
		})
	}
}

// withQueueRules puts the "add rule" lines of a queue file into the divert
// chains of a tables file, as nft would list the two loaded one after the
// other.
func withQueueRules(tables, queue string) string {
	var rules []string
	for _, line := range strings.Split(queue, "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[0] == "add" && f[1] == "rule" {
			rules = append(rules, "\t\t"+strings.Join(f[5:], " "))
		}
	}
	return strings.Replace(tables, "\tchain "+divertChain+" {\n", "\tchain "+divertChain+" {\n"+strings.Join(rules, "\n")+"\n", 1)
}

func TestRenderGolden(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.file, func(t *testing.T) {
			got, err := Render(&g.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(g.file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(g.file)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("Render(%+v) differs from %s (-file +render); run 'go test ./rules -run TestRenderGolden -update' if the change is intended:\n%s", g.cfg, g.file, diff)
			}
		})
	}
}

// TestRenderShape checks the parts of the ruleset that matter, independent
// of the goldens' wording: hooks, priorities, families and queue statements.
func TestRenderShape(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // listing(Render(cfg))
	}{
		{
			name: "tayga",
			cfg:  Config{Translator: Tayga},
			want: `table ip ftpalg {
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		jump divert
	}

	chain divert {
		tcp dport 21 counter queue num 0
		tcp sport 21 counter queue num 0
	}
}
`,
		},
		{
			name: "jool ipv6 bypass queues",
			cfg:  Config{Translator: Jool, Leg: LegIPv6, Queues: 4, QueueNum: 10, Bypass: true, Ports: []uint16{21, 21}},
			want: `table ip6 ftpalg {
	set shifted {
		type ipv6_addr . inet_service . ipv6_addr . inet_service
	}

	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		jump divert
	}

	chain postrouting {
		type filter hook postrouting priority 300; policy accept;
		jump divert
	}

	chain divert {
		ip6 saddr . tcp sport . ip6 daddr . tcp dport @shifted counter queue num 10-13
		tcp dport 21 counter queue num 10-13 bypass
		tcp sport 21 counter queue num 10-13 bypass
	}
}
`,
		},
		{
			name: "tayga helper",
			cfg:  Config{Translator: Tayga, Helper: true, Scope: exampleTaygaScope},
			want: `table ip ftpalg {
	ct helper ftpalg {
		type "sane" protocol tcp
		l3proto ip
	}

	set translated {
		type ipv4_addr
		flags interval
		elements = { 192.168.255.0/24, 203.0.113.10 }
	}

	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		ip saddr @translated jump divert
		ip daddr @translated jump divert
	}

	chain divert {
		tcp dport 21 counter queue num 0
		tcp sport 21 counter queue num 0
	}

	chain helper {
		type filter hook prerouting priority mangle; policy accept;
		ip saddr @translated tcp dport 21 ct state new counter ct helper set "ftpalg"
		ip daddr @translated tcp dport 21 ct state new counter ct helper set "ftpalg"
	}
}

table ip6 ftpalg {
	ct helper ftp {
		type "ftp" protocol tcp
		l3proto ip6
	}

	set translated {
		type ipv6_addr
		flags interval
		elements = { 2001:db8:1::10, 2001:db8:64::/96, 2001:db8:ffff::1 }
	}

	chain helper {
		type filter hook prerouting priority mangle; policy accept;
		ip6 saddr @translated tcp dport 21 ct state new counter ct helper set "ftp"
		ip6 daddr @translated tcp dport 21 ct state new counter ct helper set "ftp"
	}
}
`,
		},
		{
			name: "tayga ipv6 helper ports",
			cfg:  Config{Translator: Tayga, Leg: LegIPv6, Helper: true, Ports: []uint16{2121, 21}, Scope: exampleTaygaScope},
			want: `table ip6 ftpalg {
	ct helper ftpalg {
		type "sane" protocol tcp
		l3proto ip6
	}

	set translated {
		type ipv6_addr
		flags interval
		elements = { 2001:db8:1::10, 2001:db8:64::/96, 2001:db8:ffff::1 }
	}

	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		ip6 saddr @translated jump divert
		ip6 daddr @translated jump divert
	}

	chain divert {
		tcp dport { 21, 2121 } counter queue num 0
		tcp sport { 21, 2121 } counter queue num 0
	}

	chain helper {
		type filter hook prerouting priority mangle; policy accept;
		ip6 saddr @translated tcp dport { 21, 2121 } ct state new counter ct helper set "ftpalg"
		ip6 daddr @translated tcp dport { 21, 2121 } ct state new counter ct helper set "ftpalg"
	}
}

table ip ftpalg {
	ct helper ftp {
		type "ftp" protocol tcp
		l3proto ip
	}

	set translated {
		type ipv4_addr
		flags interval
		elements = { 192.168.255.0/24, 203.0.113.10 }
	}

	chain helper {
		type filter hook prerouting priority mangle; policy accept;
		ip saddr @translated tcp dport { 21, 2121 } ct state new counter ct helper set "ftp"
		ip daddr @translated tcp dport { 21, 2121 } ct state new counter ct helper set "ftp"
	}
}
`,
		},
		{
			name: "ports sorted",
			cfg:  Config{Translator: Tayga, Ports: []uint16{2121, 21}, Table: "t"},
			want: `table ip t {
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		jump divert
	}

	chain divert {
		tcp dport { 21, 2121 } counter queue num 0
		tcp sport { 21, 2121 } counter queue num 0
	}
}
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Render(&tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, listing(got)); diff != "" {
				t.Errorf("listing of Render (-want +got):\n%s", diff)
			}
			for _, f := range []string{"ip", "ip6"} {
				table := "table " + f + " " + tableName(tt.cfg) + "\ndelete table " + f + " " + tableName(tt.cfg) + "\n"
				if !strings.Contains(got, table) {
					t.Errorf("Render does not replace an earlier %s table; want %q in:\n%s", f, table, got)
				}
			}
		})
	}
}

func tableName(cfg Config) string {
	if cfg.Table == "" {
		return DefaultTable
	}
	return cfg.Table
}

func TestRenderDoesNotChangeConfig(t *testing.T) {
	cfg := Config{Translator: Jool, Ports: []uint16{2121, 21, 2121}}
	want := cfg
	want.Ports = []uint16{2121, 21, 2121}
	if _, err := Render(&cfg); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("Render changed its config (-before +after):\n%s", diff)
	}
}

func TestRenderErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  *Config
		want string
	}{
		{"nil", nil, "translator tayga or jool is required"},
		{"no translator", &Config{}, "translator is required"},
		{"unknown translator", &Config{Translator: "nat46"}, `unknown translator "nat46"`},
		{"unknown leg", &Config{Translator: Tayga, Leg: "ipv5"}, `unknown leg "ipv5"`},
		{"port 0", &Config{Translator: Tayga, Ports: []uint16{21, 0}}, "port 0"},
		{"queues overflow", &Config{Translator: Tayga, QueueNum: 65535, Queues: 2}, "queues 65535..65536 exceed 65535"},
		{"table with space", &Config{Translator: Tayga, Table: "my table"}, `table name "my table"`},
		{"table starting with digit", &Config{Translator: Tayga, Table: "1t"}, `table name "1t"`},
		{"table too long", &Config{Translator: Tayga, Table: strings.Repeat("t", 65)}, "table name"},
		{"helper with jool", &Config{Translator: Jool, Helper: true}, "conntrack helper is for tayga only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Render(tt.cfg)
			if err == nil {
				t.Fatalf("Render succeeded, want error containing %q; got:\n%s", tt.want, out)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %q does not wrap ErrConfig", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
	// The last queue may be 65535.
	if _, err := Render(&Config{Translator: Tayga, QueueNum: 65534, Queues: 2}); err != nil {
		t.Errorf("queues 65534-65535: %v", err)
	}
}

// TestRenderFlags checks that the "Generated by" line of every golden
// names the flags that reproduce it.
func TestRenderFlags(t *testing.T) {
	want := map[string]string{
		"testdata/tayga.nft":                     "--translator tayga --fail-open=false",
		"testdata/jool.nft":                      "--translator jool --fail-open=false",
		"testdata/tayga-scope-helper.nft":        "--translator tayga --helper --scope 192.168.255.0/24,203.0.113.10,2001:db8:1::10,2001:db8:64::/96,2001:db8:ffff::1",
		"testdata/jool-scope.nft":                "--translator jool --scope 192.0.2.1,2001:db8:64::/96",
		"testdata/jool-ipv6-scope.nft":           "--translator jool --leg ipv6 --fail-open=false --scope 192.0.2.1,2001:db8:64::/96",
		"testdata/tayga-ipv6.nft":                "--translator tayga --leg ipv6 --fail-open=false",
		"testdata/jool-ipv6.nft":                 "--translator jool --leg ipv6 --fail-open=false",
		"testdata/tayga-ports-queues-bypass.nft": "--translator tayga --ports 21,2121 --queue-num 4 --queues 2",
		"testdata/jool-ports-table.nft":          "--translator jool --ports 21,990,2121 --queue-num 7 --fail-open=false --table nat64_ftp",
		"testdata/tayga-ipv6-helper-ports.nft":   "--translator tayga --leg ipv6 --ports 21,2121 --helper --scope 192.168.255.0/24,203.0.113.10,2001:db8:1::10,2001:db8:64::/96,2001:db8:ffff::1",
		"testdata/jool-peerfilter.nft":           "--translator jool --fail-open=false --jool-ports 61000-61999",
		"testdata/jool-ipv6-peerfilter.nft":      "--translator jool --leg ipv6 --jool-ports 61000-61000",
	}
	for _, g := range goldens {
		got, err := Render(&g.cfg)
		if err != nil {
			t.Fatal(err)
		}
		line := "# Generated by: ftpalg rules print " + want[filepath.ToSlash(g.file)] + "\n"
		if !strings.Contains(got, line) {
			t.Errorf("%s: want line %q in:\n%s", g.file, line, got)
		}
	}
}

var (
	counters = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	// nft wraps long element lists.
	wrapped = regexp.MustCompile(`,\n\s+`)
)

// listing turns Render's output, or "nft list" output, into the canonical
// form of the table: from the line "table ... {" on, without comments and
// with counter values dropped.
func listing(s string) string {
	s = wrapped.ReplaceAllString(s, ", ")
	var b strings.Builder
	in := false
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "table ") && strings.HasSuffix(line, "{") {
			in = true
		}
		if !in || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		b.WriteString(counters.ReplaceAllString(line, "counter"))
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}
