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
	{"tayga.nft", Config{Translator: Tayga, Bypass: true}}, // the daemon's default: --fail-open
	{"jool.nft", Config{Translator: Jool, Bypass: true}},
	{"testdata/tayga-ipv6.nft", Config{Translator: Tayga, Leg: LegIPv6}},
	{"testdata/jool-ipv6.nft", Config{Translator: Jool, Leg: LegIPv6}},
	{"testdata/tayga-ports-queues-bypass.nft", Config{Translator: Tayga, Ports: []uint16{2121, 21}, QueueNum: 4, Queues: 2, Bypass: true}},
	{"testdata/jool-ports-table.nft", Config{Translator: Jool, Ports: []uint16{21, 990, 2121}, QueueNum: 7, Table: "nat64_ftp"}},
	{"testdata/tayga-helper.nft", Config{Translator: Tayga, Helper: true}},
	{"testdata/tayga-ipv6-helper-ports.nft", Config{Translator: Tayga, Leg: LegIPv6, Helper: true, Ports: []uint16{2121, 21}, Bypass: true}},
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
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		tcp dport 21 counter queue num 10-13 bypass
		tcp sport 21 counter queue num 10-13 bypass
	}

	chain postrouting {
		type filter hook postrouting priority 300; policy accept;
		tcp dport 21 counter queue num 10-13 bypass
		tcp sport 21 counter queue num 10-13 bypass
	}
}
`,
		},
		{
			name: "tayga helper",
			cfg:  Config{Translator: Tayga, Helper: true},
			want: `table ip ftpalg {
	ct helper ftpalg {
		type "sane" protocol tcp
		l3proto ip
	}

	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		tcp dport 21 counter queue num 0
		tcp sport 21 counter queue num 0
	}

	chain helper {
		type filter hook prerouting priority mangle; policy accept;
		tcp dport 21 ct state new counter ct helper set "ftpalg"
	}
}

table ip6 ftpalg {
	ct helper ftp {
		type "ftp" protocol tcp
		l3proto ip6
	}

	chain helper {
		type filter hook prerouting priority mangle; policy accept;
		tcp dport 21 ct state new counter ct helper set "ftp"
	}
}
`,
		},
		{
			name: "tayga ipv6 helper ports",
			cfg:  Config{Translator: Tayga, Leg: LegIPv6, Helper: true, Ports: []uint16{2121, 21}},
			want: `table ip6 ftpalg {
	ct helper ftpalg {
		type "sane" protocol tcp
		l3proto ip6
	}

	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		tcp dport { 21, 2121 } counter queue num 0
		tcp sport { 21, 2121 } counter queue num 0
	}

	chain helper {
		type filter hook prerouting priority mangle; policy accept;
		tcp dport { 21, 2121 } ct state new counter ct helper set "ftpalg"
	}
}

table ip ftpalg {
	ct helper ftp {
		type "ftp" protocol tcp
		l3proto ip
	}

	chain helper {
		type filter hook prerouting priority mangle; policy accept;
		tcp dport { 21, 2121 } ct state new counter ct helper set "ftp"
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
		"tayga.nft":                              "--translator tayga",
		"jool.nft":                               "--translator jool",
		"testdata/tayga-ipv6.nft":                "--translator tayga --leg ipv6 --fail-open=false",
		"testdata/jool-ipv6.nft":                 "--translator jool --leg ipv6 --fail-open=false",
		"testdata/tayga-ports-queues-bypass.nft": "--translator tayga --ports 21,2121 --queue-num 4 --queues 2",
		"testdata/jool-ports-table.nft":          "--translator jool --ports 21,990,2121 --queue-num 7 --fail-open=false --table nat64_ftp",
		"testdata/tayga-helper.nft":              "--translator tayga --fail-open=false --helper",
		"testdata/tayga-ipv6-helper-ports.nft":   "--translator tayga --leg ipv6 --ports 21,2121 --helper",
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

var counters = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// listing turns Render's output, or "nft list" output, into the canonical
// form of the table: from the line "table ... {" on, without comments and
// with counter values dropped.
func listing(s string) string {
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
