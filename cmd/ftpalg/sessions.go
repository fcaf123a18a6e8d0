package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/ftpalg/ftpalg/rules"
)

func init() {
	commands = append(commands, command{
		name:      "sessions",
		summary:   "list the control connections a running daemon follows, with their data channels",
		run:       sessionsMain,
		linuxOnly: true,
	})
}

// sessionsReport is the daemon's answer to "sessions" on its status
// socket.
type sessionsReport struct {
	Leg      string        `json:"leg"`
	Pinholes bool          `json:"pinholes"` // data channels get conntrack expectations (Tayga)
	Sessions []sessionInfo `json:"sessions"`
}

// sessionInfo is one control connection.
type sessionInfo struct {
	Queue      uint16 `json:"queue"`
	Kind       string `json:"kind"` // "46", "64", or "none" (not translated)
	Translated bool   `json:"translated"`
	// Client and Server as the engine sees them, on the queued leg.
	Client netip.AddrPort `json:"client"`
	Server netip.AddrPort `json:"server"`
	// The session's addresses in both families (translated only).
	Client4 netip.Addr `json:"client4,omitzero"`
	Client6 netip.Addr `json:"client6,omitzero"`
	Server4 netip.Addr `json:"server4,omitzero"`
	Server6 netip.Addr `json:"server6,omitzero"`
	// ShiftToServer and ShiftToClient: bytes the rewrites added to each
	// direction so far (negative: removed).
	ShiftToServer int64         `json:"shift_to_server"`
	ShiftToClient int64         `json:"shift_to_client"`
	Started       time.Time     `json:"started"`
	Age           string        `json:"age"`
	Idle          string        `json:"idle"`
	State         string        `json:"state"` // open, closed, desync, encrypted
	Data          []dataChannel `json:"data_channels,omitempty"`
}

// dataChannel is one data-channel mapping the engine asked for on a
// control connection.
type dataChannel struct {
	Mode    string         `json:"mode"` // passive46, active64, ...
	Target  netip.AddrPort `json:"target"`
	Mapped  netip.AddrPort `json:"mapped,omitzero"`
	Error   string         `json:"error,omitempty"`
	Pinhole bool           `json:"pinhole"` // an expectation was asked for it
	At      time.Time      `json:"at"`
	Age     string         `json:"age"`
}

// dataRecorder is the outermost Mapper of the daemon: it remembers the
// last data channels of each control connection for 'ftpalg sessions'.
// It passes LengthChanged on (mangle.LengthWatcher) when the inner Mapper
// has it.
type dataRecorder struct {
	mangle.Mapper
	pinholes bool
	now      func() time.Time

	mu   sync.Mutex
	byCC map[[2]netip.AddrPort][]dataChannel
}

// Limits of the recorder: the channels kept per control connection, and
// how long a channel is kept.
const (
	recordPerConn = 8
	recordMaxAge  = 10 * time.Minute
	recordConns   = 4096
)

func newDataRecorder(inner mangle.Mapper, pinholes bool) *dataRecorder {
	return &dataRecorder{Mapper: inner, pinholes: pinholes, now: time.Now, byCC: map[[2]netip.AddrPort][]dataChannel{}}
}

func (r *dataRecorder) MapData(req mangle.DataRequest) (netip.AddrPort, error) {
	got, err := r.Mapper.MapData(req)
	dc := dataChannel{Mode: modeName(req.Mode), Target: req.Target, At: r.now()}
	if err != nil {
		dc.Error = err.Error()
	} else {
		dc.Mapped = got
		// The pinhole decorator asks for an expectation on every
		// mapping it passes (its failures are counted in status).
		dc.Pinhole = r.pinholes
	}
	key := [2]netip.AddrPort{req.Client, req.Server}
	r.mu.Lock()
	if _, ok := r.byCC[key]; !ok && len(r.byCC) >= recordConns {
		r.pruneLocked(dc.At)
	}
	l := append(r.byCC[key], dc)
	if len(l) > recordPerConn {
		l = slices.Delete(l, 0, len(l)-recordPerConn)
	}
	r.byCC[key] = l
	r.mu.Unlock()
	return got, err
}

// LengthChanged passes the call on to the inner Mapper if it watches.
func (r *dataRecorder) LengthChanged(client, server netip.AddrPort) {
	if w, ok := r.Mapper.(mangle.LengthWatcher); ok {
		w.LengthChanged(client, server)
	}
}

// pruneLocked forgets channels older than recordMaxAge, and if that is not
// enough, every record (a listing aid, not state).
func (r *dataRecorder) pruneLocked(now time.Time) {
	for k, l := range r.byCC {
		if now.Sub(l[len(l)-1].At) > recordMaxAge {
			delete(r.byCC, k)
		}
	}
	if len(r.byCC) >= recordConns {
		clear(r.byCC)
	}
}

// channels returns the recorded channels of a control connection.
func (r *dataRecorder) channels(client, server netip.AddrPort, now time.Time) []dataChannel {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked(now)
	l := slices.Clone(r.byCC[[2]netip.AddrPort{client, server}])
	for i := range l {
		l[i].Age = now.Sub(l[i].At).Round(time.Second).String()
	}
	return l
}

func modeName(m mangle.DataMode) string {
	switch m {
	case mangle.Passive46:
		return "passive46"
	case mangle.Active46:
		return "active46"
	case mangle.Passive64:
		return "passive64"
	case mangle.Active64:
		return "active64"
	}
	return m.String()
}

// sessions builds the report from the engines' listings.
func sessions(leg string, rec *dataRecorder, hs []*engineHandler, now time.Time) sessionsReport {
	r := sessionsReport{Leg: leg, Pinholes: rec != nil && rec.pinholes, Sessions: []sessionInfo{}}
	for _, h := range hs {
		flows, ok := h.Flows(time.Second)
		if !ok {
			continue // a queue loop that does not answer: leave it out
		}
		for _, f := range flows {
			si := sessionInfo{
				Queue: h.queue, Kind: f.Session.Kind.String(), Translated: f.Translated,
				Client: f.Client, Server: f.Server,
				Client4: f.Session.Client4, Client6: f.Session.Client6,
				Server4: f.Session.Server4, Server6: f.Session.Server6,
				ShiftToServer: f.Shift[mangle.ToServer], ShiftToClient: f.Shift[mangle.ToClient],
				Started: f.Started.UTC().Truncate(time.Second),
				Age:     now.Sub(f.Started).Round(time.Second).String(),
				Idle:    now.Sub(f.Last).Round(time.Second).String(),
				State:   "open",
			}
			switch {
			case f.Closed:
				si.State = "closed"
			case f.Transparent:
				si.State = "encrypted"
			case f.Desync:
				si.State = "desync"
			}
			if rec != nil {
				si.Data = rec.channels(f.Client, f.Server, now)
			}
			r.Sessions = append(r.Sessions, si)
		}
	}
	slices.SortFunc(r.Sessions, func(a, b sessionInfo) int { return a.Started.Compare(b.Started) })
	return r
}

func sessionsMain(args []string, stdout, stderr io.Writer) int {
	fl := newCmdFlags("sessions", "Usage: ftpalg sessions [--socket PATH] [--json]\n\n"+
		"Lists the FTP control connections a running 'ftpalg run' follows: kind (46, 64,\n"+
		"none for untranslated), client and server, the bytes its rewrites shifted each\n"+
		"direction by, and the data channels mapped for it (with pinholes), with their age.\n",
		exitStatus("the daemon could not be reached (not running, another --socket, permissions)"))
	path := fl.String("socket", defaultStatusSocket, "the daemon's status socket `path` (ftpalg run --status-socket)")
	asJSON := fl.Bool("json", false, "print the list as JSON")
	if err := fl.parse(args, stdout); err != nil {
		return usageExit("sessions", err, stderr)
	}
	if fl.NArg() > 0 {
		return usageExit("sessions", usagef("unexpected argument %q", fl.Arg(0)), stderr)
	}
	var r sessionsReport
	if err := askDaemon(*path, "sessions", &r); err != nil {
		fmt.Fprintf(stderr, "ftpalg sessions: %v\n", err)
		return 1
	}
	if *asJSON {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		if err := e.Encode(r); err != nil {
			fmt.Fprintf(stderr, "ftpalg sessions: %v\n", err)
			return 1
		}
		return 0
	}
	printSessions(stdout, &r)
	return 0
}

// printSessions prints one block per control connection.
func printSessions(w io.Writer, r *sessionsReport) {
	if len(r.Sessions) == 0 {
		fmt.Fprintf(w, "no control connections (leg %s)\n", r.Leg)
		return
	}
	for _, s := range r.Sessions {
		kind := s.Kind
		if !s.Translated {
			kind = "untranslated"
		}
		fmt.Fprintf(w, "%s  %v -> %v  leg %s  queue %d  up %s  idle %s  %s\n",
			kind, s.Client, s.Server, r.Leg, s.Queue, s.Age, s.Idle, s.State)
		if s.Translated {
			fmt.Fprintf(w, "    client %v = %v, server %v = %v, shift to server %+d, to client %+d bytes\n",
				s.Client6, s.Client4, s.Server6, s.Server4, s.ShiftToServer, s.ShiftToClient)
		}
		for _, d := range s.Data {
			var b strings.Builder
			fmt.Fprintf(&b, "    %-9s %v", d.Mode, d.Target)
			if d.Error != "" {
				fmt.Fprintf(&b, "  failed: %s", d.Error)
			} else {
				fmt.Fprintf(&b, " -> %v", d.Mapped)
				if d.Pinhole {
					b.WriteString("  pinhole")
				}
			}
			fmt.Fprintf(&b, "  %s ago", d.Age)
			fmt.Fprintln(w, b.String())
		}
	}
}

// liveConns lists the translated control connections the queue loops
// follow (none before the loops run): a restored ruleset queues them
// from their next packet on (rules.Config.EstablishedNow).
func liveConns(hs []*engineHandler, loopsUp *atomic.Bool) []rules.Conn {
	if !loopsUp.Load() {
		return nil
	}
	var cs []rules.Conn
	for _, h := range hs {
		flows, ok := h.Flows(100 * time.Millisecond)
		if !ok {
			continue
		}
		for _, f := range flows {
			if f.Translated && !f.Closed {
				cs = append(cs, rules.Conn{Client: f.Client, Server: f.Server})
			}
		}
	}
	return cs
}
