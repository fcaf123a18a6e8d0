package main

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/ftpalg/ftpalg/mangle/tayga"
	"github.com/ftpalg/ftpalg/test/ftpcap"
	"github.com/gopacket/gopacket/layers"
)

// Replays of the scale capture (test/ftpcap/scale.go): many concurrent 46
// control connections, PASV and its 229 for all, then NOOP for all, with
// or without a flood of spoofed SYNs in between. The full-size runs (100,000
// connections; 20,000 under 200,000 SYNs) and their peak RSS are 'make
// bench-replayscale' (test/bench/replayscale.sh).

// replayScale replays the scale capture of cfg in-process with a flow
// table of maxFlows and checks what came out.
func replayScale(t *testing.T, cfg ftpcap.ScaleConfig, maxFlows int) (*ftpcap.ScaleReport, replaySummary) {
	t.Helper()
	var in, out bytes.Buffer
	if err := ftpcap.WriteScale(&in, cfg); err != nil {
		t.Fatal(err)
	}
	opts := replayOptions{HoldTimeout: 200 * time.Millisecond, Engine: mangle.Config{
		Mapper: tayga.NewMapper(mustTayga(t), nil), ServerPorts: []uint16{21}, MaxFlows: maxFlows,
	}}
	sum, err := replay(&in, &out, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ftpcap.CheckScale(&out, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v\nreplay: %v", rep, sum)
	return rep, sum
}

// Every one of 10,000 concurrent sessions is translated and shifted, and
// a flood of spoofed SYNs ten times the real sessions, through a table
// that holds a fraction of it, evicts only half-open flows and breaks no
// session.
func TestReplayScale(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      ftpcap.ScaleConfig
		maxFlows int
	}{
		{"10k", ftpcap.ScaleConfig{Conns: 10_000}, defaultMaxFlows},
		{"2k under 20k SYNs", ftpcap.ScaleConfig{Conns: 2_000, SYNs: 20_000, Seed: 7}, 4096},
		// Every SYN, then every SYN-ACK, ...: the flood evicts the real
		// sessions' own half-open flows before their greeting, which
		// picks them up again.
		{"2k in lockstep under 20k SYNs", ftpcap.ScaleConfig{Conns: 2_000, SYNs: 20_000, Seed: 8, Lockstep: true}, 3000},
		{"2k on the IPv6 leg under 20k SYNs", ftpcap.ScaleConfig{Conns: 2_000, SYNs: 20_000, Seed: 9, V6: true}, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, sum := replayScale(t, tc.cfg, tc.maxFlows)
			if !rep.OK() {
				t.Errorf("not every session came out right: %v", rep)
			}
			if sum.Stats.FlowsEvicted != 0 || sum.Stats.FlowsRefused != 0 {
				t.Errorf("established flows evicted or refused: %+v", sum.Stats)
			}
			if tc.cfg.SYNs > tc.maxFlows && sum.Stats.HalfOpenEvicted == 0 {
				t.Errorf("a flood beyond the table evicted no half-open flow: %+v", sum.Stats)
			}
		})
	}
}

// A table full of sessions that matter refuses new flows rather than
// breaking any: with room for 2,000 of 3,000 sessions, the ones the engine
// cannot follow come out exactly as they were sent (counted as refused),
// and none comes out half translated.
func TestReplayScaleFullTable(t *testing.T) {
	cfg := ftpcap.ScaleConfig{Conns: 3000}
	rep, sum := replayScale(t, cfg, 2000)
	if rep.NProblem != 0 || rep.Complete+rep.Untouched != cfg.Conns || rep.Complete < 2000 {
		t.Errorf("%v", rep)
	}
	if sum.Stats.FlowsRefused == 0 {
		t.Errorf("no refusal counted: %+v", sum.Stats)
	}
}

// Reading a capture allocates nothing per frame: a replay of millions of
// frames leaves no garbage behind it (peak RSS, make bench-replayscale).
func TestReplayReadsWithoutAllocating(t *testing.T) {
	var in bytes.Buffer
	if err := ftpcap.WriteScale(&in, ftpcap.ScaleConfig{Conns: 100}); err != nil {
		t.Fatal(err)
	}
	src, err := openCapture(&in)
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if _, _, _, err := src.next(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per frame read", n)
	}
}

// Writing a rewrite's transcript line allocates nothing (a line per
// rewrite, hundreds of thousands in a large capture), and the line is the
// one fmt would print.
func TestReplayTranscriptWithoutAllocating(t *testing.T) {
	var tr bytes.Buffer
	tr.Grow(1 << 20)
	src, err := openCapture(bytes.NewReader(mustPcapHeader(t)))
	if err != nil {
		t.Fatal(err)
	}
	rp := &replayer{src: src, w: io.Discard, transcript: &tr, pending: map[uint64]pendingFrame{}}
	key := mangle.FlowKey{}
	rp.frameTime = time.Date(2026, 1, 1, 0, 0, 0, 123456000, time.UTC)
	rp.res.Rewrites = append(rp.res.Rewrites, mangle.Rewrite{Flow: key, Kind: mangle.Kind46, Dir: mangle.ToClient,
		Before: []byte("229 Entering Extended Passive Mode (|||2000|)"), After: []byte("227 Entering Passive Mode (203,0,113,10,7,208)")})
	if n := testing.AllocsPerRun(100, func() {
		if err := rp.drain(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per transcript line", n)
	}
	rw := rp.res.Rewrites[0]
	want := "2026-01-01T00:00:00.123456Z " + rw.Flow.String() + " 46 server->client: \"229 Entering Extended Passive Mode (|||2000|)\" -> \"227 Entering Passive Mode (203,0,113,10,7,208)\"\n"
	if got, _ := tr.ReadString('\n'); got != want {
		t.Errorf("transcript line %q, want %q", got, want)
	}
}

// mustPcapHeader is an empty classic pcap of raw IP.
func mustPcapHeader(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := ftpcap.WritePcap(&b, ftpcap.Link{Type: layers.LinkTypeRaw}, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
