package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/internal/nfq"
	"github.com/google/go-cmp/cmp"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite docs/metrics.md from the counter tables")

const metricsDoc = "../../docs/metrics.md"

// renderMetricsDoc writes docs/metrics.md from the tables the daemon uses.
func renderMetricsDoc() string {
	var b bytes.Buffer
	b.WriteString(`# Metrics

` + "`ftpalg run --metrics-addr ADDRESS`" + ` serves these on ` + "`http://ADDRESS/metrics`" + ` (Prometheus text
format, through client_golang), with ` + "`/healthz`" + ` (200 while the process serves) and
` + "`/readyz`" + ` (200 once the rules are installed and the queues are bound; 503 with the
reason while the rules are gone). ` + "`ftpalg status`" + ` shows the same numbers under the
names in the second column, and ` + "`ftpalg status --explain`" + ` says what to do when one
grows. This file is generated from the daemon's own tables
(` + "`go test ./cmd/ftpalg -run TestMetricsDoc -update-docs`" + `); a test checks that every
metric the daemon registers is listed here.

## The daemon

| metric | meaning |
|---|---|
`)
	for _, d := range daemonMetrics {
		fmt.Fprintf(&b, "| `%s` | %s |\n", d.name, d.help)
	}
	b.WriteString(`
## Per queue (label ` + "`queue`" + `)

| metric | ` + "`ftpalg status`" + ` | meaning | when it grows |
|---|---|---|---|
`)
	for _, c := range queueCounters {
		what := c.explain
		if what == "" {
			what = "ordinary activity"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", c.metric(), c.label, c.help, what)
	}
	b.WriteString(`
## Go runtime and process

` + "`go_*`" + ` and ` + "`process_*`" + `: client_golang's standard Go and process collectors
(goroutines, memory, garbage collection; CPU time, resident memory, open
file descriptors, start time).
`)
	return b.String()
}

func TestMetricsDoc(t *testing.T) {
	want := renderMetricsDoc()
	if *updateDocs {
		if err := os.MkdirAll("../../docs", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(metricsDoc, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("%s is stale (-want +file); run 'go test ./cmd/ftpalg -run TestMetricsDoc -update-docs':\n%s", metricsDoc, diff)
	}

	// Every metric the daemon registers, from a report with every part
	// present, has its line.
	rep := statusReport{Pinholes: &pinholeStats{}, Started: time.Now(),
		Queues: []queueStatus{{Kernel: &nfq.KernelStats{}}}}
	mfs, err := newRegistry(func() statusReport { return rep }).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		name := mf.GetName()
		switch {
		case strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"):
			continue // the standard collectors, documented as a group
		case !strings.Contains(string(got), "`"+name+"`"):
			t.Errorf("metric %s is not documented in %s", name, metricsDoc)
		case strings.HasPrefix(mf.GetHelp(), "Engine counter") || mf.GetHelp() == "":
			t.Errorf("metric %s has no real HELP text: %q", name, mf.GetHelp())
		}
	}
	if len(mfs) < len(queueCounters)+len(daemonMetrics) {
		t.Errorf("%d metric families gathered, want at least %d", len(mfs), len(queueCounters)+len(daemonMetrics))
	}
}
