//go:build linux

package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/ftpalg/ftpalg/test/ftpcap"
)

// The daemon reads tayga.conf's map-file as replay does (one loader): a
// host mapped only there is translated. Without a dynamic pool and with
// --no-pinholes the Tayga mapper needs no kernel, so this runs as any user.
func TestRunTaygaMapFile(t *testing.T) {
	dir := t.TempDir()
	var conf, maps []string
	for _, l := range strings.Split(strings.TrimSpace(ftpcap.TaygaConf), "\n") {
		switch {
		case strings.HasPrefix(l, "dynamic-pool"):
		case strings.HasPrefix(l, "map 192.168.254.20"): // Client6 <-> Client6As4
			maps = append(maps, l)
		default:
			conf = append(conf, l)
		}
	}
	conf = append(conf, "data-dir "+dir, "map-file maps.conf")
	for name, text := range map[string]string{"tayga.conf": strings.Join(conf, "\n") + "\n", "maps.conf": strings.Join(maps, "\n") + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &runConfig{TaygaConf: filepath.Join(dir, "tayga.conf"), NoPinholes: true}
	dm, err := loadMapper(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if dm.close != nil {
		defer dm.close()
	}
	s := ftpcap.Session64(40000)
	got, ok := dm.Classify(s.V6.Client, s.V6.Server)
	if !ok || got.Kind != mangle.Kind64 || got.Client4 != ftpcap.Client6As4 {
		t.Errorf("Classify(%v, %v) = %+v, %v; want a 64 session with Client4 %v (from the map-file)",
			s.V6.Client, s.V6.Server, got, ok, ftpcap.Client6As4)
	}
	if got, ok := dm.Classify(s.V4.Client, s.V4.Server); !ok || got.Client6 != ftpcap.Client6 {
		t.Errorf("IPv4 leg: Classify(%v, %v) = %+v, %v; want Client6 %v", s.V4.Client, s.V4.Server, got, ok, ftpcap.Client6)
	}
}
