package tayga

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// Loaded is a Tayga set-up as Load reads it.
type Loaded struct {
	Config *Config // tayga.conf with the map-file's maps appended
	Mapper *Mapper
	// Warn is set when dynamic.map cannot be read or has malformed
	// lines: Tayga skips those too, so they are not an error, but the
	// operator should know.
	Warn error
}

// NewResolver makes the DynamicResolver of a Mapper being built. It gets
// the configuration and the mapper, which it may keep (for
// PredictDynamic) but not use before Load returns.
type NewResolver func(*Config, *Mapper) (DynamicResolver, error)

// Load reads everything Tayga reads to map addresses, the one way the
// daemon and replay share: the tayga.conf at path, the map-file it names
// (Tayga 0.9.5+, a relative path taken against data-dir) and the bindings
// Tayga saved in data-dir/dynamic.map, if there is one. newRes may be nil
// (dynamic-pool hosts are then known only from dynamic.map and
// prediction); it is called only when the configuration has a dynamic
// pool.
//
// An error in tayga.conf or the map-file reads "FILE:LINE: directive:
// message", FILE being the path of the file at fault.
func Load(path string, newRes NewResolver) (*Loaded, error) {
	cfg, err := readFile(path, func(f *os.File) (*Config, error) { return ParseConfig(f) })
	if err != nil {
		return nil, err
	}
	if cfg.MapFile != "" {
		name := cfg.MapFile
		if !filepath.IsAbs(name) {
			name = filepath.Join(cfg.DataDir, name)
		}
		base := cfg
		if cfg, err = readFile(name, func(f *os.File) (*Config, error) { return ParseMapFile(base, f) }); err != nil {
			return nil, err
		}
	}
	l := &Loaded{Config: cfg}
	var res DynamicResolver
	l.Mapper = NewMapper(cfg, nil)
	if newRes != nil && cfg.DynamicPool.IsValid() {
		if res, err = newRes(cfg, l.Mapper); err != nil {
			return nil, err
		}
		l.Mapper.res = res
	}
	if cfg.DataDir == "" {
		return l, nil
	}
	dm, err := os.Open(filepath.Join(cfg.DataDir, "dynamic.map"))
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		l.Warn = err // as Tayga, which then starts without saved bindings
		return l, nil
	}
	defer dm.Close()
	l.Warn = l.Mapper.LoadDynamicMap(dm)
	return l, nil
}

// readFile opens name and parses it with parse; a ConfigError comes back
// as "name:line: directive: message".
func readFile(name string, parse func(*os.File) (*Config, error)) (*Config, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg, err := parse(f)
	var ce *ConfigError
	if errors.As(err, &ce) {
		loc := name
		if ce.Line > 0 {
			loc += ":" + strconv.Itoa(ce.Line)
		}
		if ce.Directive != "" {
			return nil, fmt.Errorf("%s: %s: %s", loc, ce.Directive, ce.Msg)
		}
		return nil, fmt.Errorf("%s: %s", loc, ce.Msg)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}
