package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"
	"unicode"

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/ftpalg/ftpalg/mangle/tayga"
)

// SIGHUP: the daemon re-reads its --config file (with the same command
// line, which still wins) and the translator's configuration, and applies
// what can change while packets flow. A bad file is logged and the old
// settings stay; the daemon never exits on SIGHUP.

// reloadable lists the flags whose new value a reload applies; a change
// of any other flag is logged as needing a restart (the queues, the rules
// and the engines are built from them at start).
var reloadable = map[string]bool{
	"config":       true, // only on the command line, so it cannot change
	"tayga-conf":   true, // re-read at every reload anyway
	"log-level":    true,
	"hold-timeout": true,
}

// logLevel is the level of the daemon's logger, which a reload may change.
var logLevel slog.LevelVar

// flagName is the flag of a runConfig field: "HoldTimeout" -> "hold-timeout".
func flagName(field string) string {
	var b strings.Builder
	for i, r := range field {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('-')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// configChanges compares two configurations flag by flag: the flags whose
// value changed and may change now, and those that need a restart.
func configChanges(old, cur *runConfig) (apply, restart []string) {
	flags := map[string]bool{}
	newRunFlags(&runConfig{}).VisitAll(func(f *flag.Flag) { flags[f.Name] = true })
	ov, nv := reflect.ValueOf(old).Elem(), reflect.ValueOf(cur).Elem()
	for i := range ov.NumField() {
		name := flagName(ov.Type().Field(i).Name)
		if !flags[name] || reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			continue
		}
		if reloadable[name] {
			apply = append(apply, name)
		} else {
			restart = append(restart, name)
		}
	}
	return apply, restart
}

// reloader does a reload of a running daemon.
type reloader struct {
	args     []string   // the daemon's command line
	cfg      *runConfig // the settings in force (the reloadable ones updated)
	mapper   *daemonMapper
	handlers []*engineHandler
	log      *slog.Logger
	notify   func(string) // sdNotify, or nothing in tests
}

// reload re-reads everything; the error says why nothing was applied.
func (r *reloader) reload() error {
	r.notify("RELOADING=1\nSTATUS=reloading the configuration")
	defer r.notify("READY=1\nSTATUS=running")
	cur, err := parseRunFlags(r.args, io.Discard)
	if err != nil {
		return fmt.Errorf("configuration not reloaded, the old one stays: %w", err)
	}
	apply, restart := configChanges(r.cfg, cur)
	if cur.translator() != r.cfg.translator() {
		return errors.New("configuration not reloaded, the old one stays: the translator changed (tayga or jool): needs a restart")
	}
	var translator string
	if r.mapper.reload != nil {
		if translator, err = r.mapper.reload(cur); err != nil {
			return fmt.Errorf("translator configuration not reloaded, the old one stays: %w", err)
		}
	}
	// Translator re-read: now the flags.
	next := *r.cfg
	next.TaygaConf, next.LogLevel, next.HoldTimeout = cur.TaygaConf, cur.LogLevel, cur.HoldTimeout
	logLevel.Set(next.LogLevel)
	for _, h := range r.handlers {
		h.setHold(next.HoldTimeout)
	}
	r.cfg = &next
	attrs := []any{"changed", apply}
	if translator != "" {
		attrs = append(attrs, "translator", translator)
	}
	r.log.Info("configuration reloaded", attrs...)
	if len(restart) > 0 {
		r.log.Warn("configuration reloaded, but these flags keep their old value until a restart", "flags", restart)
	}
	return nil
}

// swapMapper is a Mapper whose implementation a reload replaces: a flow
// classified before keeps its Session, new flows and data channels use
// the new mapper.
type swapMapper struct{ p atomic.Pointer[mangle.Mapper] }

func newSwapMapper(m mangle.Mapper) *swapMapper {
	s := &swapMapper{}
	s.swap(m)
	return s
}

func (s *swapMapper) swap(m mangle.Mapper) { s.p.Store(&m) }

func (s *swapMapper) Classify(client, server netip.AddrPort) (mangle.Session, bool) {
	return (*s.p.Load()).Classify(client, server)
}

func (s *swapMapper) MapData(req mangle.DataRequest) (netip.AddrPort, error) {
	return (*s.p.Load()).MapData(req)
}

// taygaChanges describes what changed between two Tayga configurations.
func taygaChanges(old, cur *tayga.Config) string {
	var d []string
	add := func(what string, o, n any) {
		if !reflect.DeepEqual(o, n) {
			d = append(d, fmt.Sprintf("%s %v -> %v", what, o, n))
		}
	}
	add("prefix", old.Prefix, cur.Prefix)
	add("ipv4-addr", old.IPv4Addr, cur.IPv4Addr)
	add("ipv6-addr", old.IPv6Addr, cur.IPv6Addr)
	add("dynamic-pool", old.DynamicPool, cur.DynamicPool)
	add("map-file", old.MapFile, cur.MapFile)
	if !reflect.DeepEqual(old.Maps, cur.Maps) {
		d = append(d, fmt.Sprintf("maps %d -> %d", len(old.Maps), len(cur.Maps)))
	}
	if len(d) == 0 {
		return "tayga configuration re-read: unchanged"
	}
	return "tayga configuration re-read: " + strings.Join(d, ", ")
}
