package mangle

import "time"

// Engine rewrites the FTP control connections of a NAT64, one packet at a
// time. It is not safe for concurrent use: a daemon runs one per queue.
//
// THIS FILE IS A TEMPORARY PASS-THROUGH STUB so that the rest of the tree
// compiles while the engine is written; it is replaced wholesale.
type Engine struct {
	cfg   Config
	stats Stats
}

// New returns an engine. cfg.Mapper must be set.
func New(cfg *Config) *Engine { return &Engine{cfg: *cfg} }

// Process handles one packet arriving at the ALG, tagged by the caller.
// now is the arrival time (the capture time in replay).
func (e *Engine) Process(pkt []byte, tag uint64, now time.Time, res *Result) {
	res.reset()
	e.stats.Packets++
	res.Emits = append(res.Emits, Emit{Tag: tag, Packet: pkt})
}

// Expire releases, unmodified, packets held since before now-holdTimeout,
// and forgets flows idle for longer than Config.IdleTimeout.
func (e *Engine) Expire(now time.Time, holdTimeout time.Duration, res *Result) { res.reset() }

// Flush releases every held packet unmodified (end of a capture, shutdown).
func (e *Engine) Flush(res *Result) { res.reset() }

// Stats returns a copy of the counters.
func (e *Engine) Stats() Stats { return e.stats }
