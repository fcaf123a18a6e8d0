package jool_test

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/ftpalg/ftpalg/conntrackx/jool"
	"github.com/ftpalg/ftpalg/mangle"
)

// How a daemon sets up the Jool backend (needs root and a loaded jool
// module, so this example is compiled but not run).
func ExampleMapper() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.Default()

	j, err := jool.Dial(&jool.Config{Instance: "default"})
	if err != nil {
		log.Error("jool", "err", err) // errors.Is(err, jool.ErrNotLoaded) without the module
		return
	}
	defer j.Close()

	m, err := jool.NewMapper(&jool.MapperConfig{
		Tables:        j,
		Pool6:         netip.MustParsePrefix("64:ff9b::/96"), // or leave zero: read from Jool
		ReservedPorts: [2]uint16{61000, 61999},               // jool pool4 add 192.0.2.1 61000-61999 --tcp --mark 4242
	})
	if err != nil {
		log.Error("jool mapper", "err", err)
		return
	}
	if n, err := m.Cleanup(); err != nil || n > 0 {
		log.Info("removed static BIB entries left by an earlier run", "count", n, "err", err)
	}
	defer m.Close() // removes every entry the mapper added

	var mapper mangle.Mapper = m // handed to the engine: mangle.Config{Mapper: mapper}
	_ = mapper

	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if err := m.Expire(now); err != nil {
				log.Warn("jool mapper expire", "err", err)
			}
		}
	}
}
