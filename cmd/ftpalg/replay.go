package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/ftpalg/ftpalg/mangle"
	"github.com/ftpalg/ftpalg/mangle/tayga"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

func init() {
	commands = append(commands, command{
		name:    "replay",
		summary: "run the ALG over a capture: pcap in, rewritten pcap and a transcript out",
		run:     replayMain,
	})
}

const replayUsage = `Usage: ftpalg replay --tayga-conf FILE [--out OUT.pcap] [flags] IN.pcap

Runs the ALG's engine over a capture taken at the ALG's position (either leg
of the translator, both directions) as if each packet had been queued to the
daemon, and writes what the daemon would have sent on.

IN is a pcap or pcapng file with link type Ethernet (with or without VLAN
tags), raw IP (101, 12, 14, 228, 229), BSD loopback (0, 108) or Linux cooked
capture v1 (113) or v2 (276). Every frame is written to OUT, in the order the
daemon would have released it, as a classic pcap with the input's link type:
the link-layer header and any trailer are kept, the IP packet is the one the
engine emitted, and the frame's lengths follow it. Frames that are not IP,
and truncated frames, pass unchanged. A frame the engine holds (a command
split across segments) is written when it is released, with the time of the
frame that released it.

Data-channel addresses come from Tayga's configuration (prefix, maps, the
dynamic pool, and the maps of its map-file if it names one); the dynamic.map
in its data-dir, when there is one, gives the pool bindings.

Prints one line per rewritten FTP line:
  <capture time> <flow> <kind> <direction>: "<before>" -> "<after>"
and a summary with the packet counts and the engine's non-zero counters.

`

const replayExit = `Exit status:
  0  success
  1  an unreadable capture or configuration, or an unsupported link type
  2  usage error (a bad flag, value or argument)
`

// replayOptions are the settings of one replay.
type replayOptions struct {
	// HoldTimeout releases held packets unmodified once the capture's clock
	// has moved this far past them, as the daemon's periodic Expire does.
	HoldTimeout time.Duration
	// Leg, when 4 or 6, hands only IPv4 or only IPv6 packets to the engine
	// (the daemon queues one leg); the others pass unchanged. 0: both.
	Leg int
	// Engine configures the engine; its Mapper is set by the caller.
	Engine mangle.Config
}

func replayMain(args []string, stdout, stderr io.Writer) int {
	ra, code := parseReplayArgs(args, stdout, stderr)
	if ra == nil {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "ftpalg replay: %v\n", err)
		return 1
	}
	l, err := tayga.Load(ra.taygaConf, nil)
	if err != nil {
		return fail(err)
	}
	if l.Warn != nil {
		fmt.Fprintf(stderr, "ftpalg replay: warning: %v\n", l.Warn)
	}
	ra.opts.Engine.Mapper = l.Mapper
	// The transcript has a line per rewrite: buffered, not a write(2)
	// each.
	tw := bufio.NewWriterSize(stdout, 64<<10)
	sum, err := replayFiles(ra.in, ra.out, tw, ra.opts)
	if ferr := tw.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("transcript: %w", ferr)
	}
	if err != nil {
		return fail(err)
	}
	fmt.Fprintln(stdout, sum)
	return 0
}

// replayArgs is the command line of 'ftpalg replay'.
type replayArgs struct {
	taygaConf, in, out string
	opts               replayOptions // without the engine's Mapper
}

// parseReplayArgs parses replay's command line. On nil it has printed
// help (code 0) or a usage error (code 2).
func parseReplayArgs(args []string, stdout, stderr io.Writer) (*replayArgs, int) {
	fs := newCmdFlags("replay", replayUsage, replayExit)
	taygaConf := fs.String("tayga-conf", "", "Tayga configuration `file` (tayga.conf) that gives the address mapping (required)")
	out := fs.String("out", "", "write the rewritten capture to `file` (classic pcap); without it only the transcript is printed")
	hold := fs.Duration("hold-timeout", 200*time.Millisecond, "longest `duration` a segment ending inside a command or reply is held (in capture time),\nthen a command segment is sent unchanged (a reply being translated waits for its line); as 'ftpalg run --hold-timeout'")
	leg := fs.String("leg", "", "`leg` whose packets go through the engine, ipv4 or ipv6, as the daemon queues only one;\npackets of the other pass unchanged (default: both, for a capture of one leg)")
	maxFlows := fs.Int("max-flows", defaultMaxFlows, "`count` of control connections the engine follows at once; as 'ftpalg run --max-flows'")
	strict := fs.Bool("strict", false, "answer a 64 session's 227 naming another address than the server's with 425")
	trust := fs.Bool("trust-checksums", false, "parse segments whatever their TCP checksum says (a capture taken on a host with\nchecksum offload); by default a segment whose checksum is wrong passes unparsed, as in the daemon")
	ports := fs.String("ports", "21", "comma-separated FTP control `ports` of servers")
	// Flags may come after the capture's name too.
	var files []string
	for {
		if err := fs.parse(args, stdout); err != nil {
			return nil, usageExit("replay", err, stderr)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		files = append(files, args[0])
		args = args[1:]
	}
	usageErr := func(format string, a ...any) (*replayArgs, int) {
		return nil, usageExit("replay", usagef(format, a...), stderr)
	}
	if len(files) != 1 {
		return usageErr("want exactly one input capture, got %d arguments", len(files))
	}
	if *taygaConf == "" {
		return usageErr("--tayga-conf is required")
	}
	if *hold <= 0 {
		return usageErr("--hold-timeout must be positive")
	}
	if *maxFlows <= 0 {
		return usageErr("--max-flows must be positive")
	}
	ra := &replayArgs{taygaConf: *taygaConf, in: files[0], out: *out, opts: replayOptions{HoldTimeout: *hold}}
	switch *leg {
	case "":
	case "ipv4":
		ra.opts.Leg = 4
	case "ipv6":
		ra.opts.Leg = 6
	default:
		return usageErr("--leg %q: want ipv4 or ipv6", *leg)
	}
	serverPorts, err := parsePorts(*ports)
	if err != nil {
		return usageErr("--ports: %v", err)
	}
	ra.opts.Engine = mangle.Config{Strict: *strict, ServerPorts: serverPorts, TrustChecksums: *trust, MaxFlows: *maxFlows}
	return ra, 0
}

// replayFiles replays the capture in, writing the result to out (unless
// out is "") and the transcript to transcript. A failed replay leaves no
// output file behind.
func replayFiles(in, out string, transcript io.Writer, opts replayOptions) (replaySummary, error) {
	inFile, err := os.Open(in)
	if err != nil {
		return replaySummary{}, err
	}
	defer inFile.Close()

	var w io.Writer = io.Discard
	var outFile *os.File
	var bw *bufio.Writer
	if out != "" {
		outFile, err = os.Create(out)
		if err != nil {
			return replaySummary{}, err
		}
		defer outFile.Close()
		bw = bufio.NewWriter(outFile)
		w = bw
	}

	sum, err := replay(inFile, w, transcript, opts)
	if err != nil {
		err = fmt.Errorf("%s: %w", in, err)
	} else if bw != nil {
		if err = bw.Flush(); err == nil {
			err = outFile.Close()
		}
	}
	if err != nil && outFile != nil {
		outFile.Close()
		os.Remove(out) // no half-written capture
	}
	return sum, err
}

// replaySummary counts what a replay did.
type replaySummary struct {
	Frames    int // frames read (and written, but for Dropped)
	IP        int // frames handed to the engine
	Modified  int // frames written with a changed IP packet
	Dropped   int // frames the engine dropped (not written; see mangle.Emit)
	Extra     int // frames written in addition: the rest of split segments
	Rewrites  int // transcript lines
	Truncated int // frames passed without the engine because the capture cut them short
	OtherLeg  int // IP frames of the family --leg leaves out
	Stats     mangle.Stats
}

func (s replaySummary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "packets %d, modified %d, rewrites %d", s.Frames, s.Modified, s.Rewrites)
	if n := s.Frames - s.IP - s.Truncated - s.OtherLeg; n > 0 {
		fmt.Fprintf(&b, ", not IP %d", n)
	}
	if s.Truncated > 0 {
		fmt.Fprintf(&b, ", truncated %d", s.Truncated)
	}
	if s.OtherLeg > 0 {
		fmt.Fprintf(&b, ", other leg %d", s.OtherLeg)
	}
	if s.Dropped > 0 {
		fmt.Fprintf(&b, ", dropped %d", s.Dropped)
	}
	if s.Extra > 0 {
		fmt.Fprintf(&b, ", split into %d more", s.Extra)
	}
	b.WriteString("; engine:")
	v := reflect.ValueOf(s.Stats)
	n := 0
	for i := 0; i < v.NumField(); i++ {
		if c := v.Field(i).Uint(); c != 0 {
			fmt.Fprintf(&b, " %s=%d", v.Type().Field(i).Name, c)
			n++
		}
	}
	if n == 0 {
		b.WriteString(" (all counters zero)")
	}
	return b.String()
}

// bytesView is b as a string without a copy, for a call that does not keep
// it (b must not change while the string is in use).
func bytesView(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// errLinkType reports a link type replay cannot take apart.
type errLinkType layers.LinkType

func (e errLinkType) Error() string {
	return fmt.Sprintf("link type %d (%v) not supported", int(e), layers.LinkType(e))
}

// Link types without a name in gopacket.
const (
	linkTypeRaw12 layers.LinkType = 12 // DLT_RAW on most systems
	linkTypeRaw14 layers.LinkType = 14 // DLT_RAW on OpenBSD
)

// ipInFrame locates the IP packet in a frame of link type lt: frame[off:end]
// is the packet. ok is false for a frame that does not carry IPv4 or IPv6.
// The end is taken from the IP header's length when it fits the frame, so
// that an Ethernet trailer stays out of the packet.
func ipInFrame(lt layers.LinkType, frame []byte) (off, end int, ok bool, err error) {
	var etype uint16 // 0: decide by the version nibble
	switch lt {
	case layers.LinkTypeEthernet:
		if len(frame) < 14 {
			return 0, 0, false, nil
		}
		off, etype = 14, binary.BigEndian.Uint16(frame[12:])
		for etype == 0x8100 || etype == 0x88a8 || etype == 0x9100 { // 802.1Q, 802.1ad, old QinQ
			if len(frame) < off+4 {
				return 0, 0, false, nil
			}
			etype = binary.BigEndian.Uint16(frame[off+2:])
			off += 4
		}
	case layers.LinkTypeRaw, linkTypeRaw12, linkTypeRaw14:
	case layers.LinkTypeIPv4:
		etype = 0x0800
	case layers.LinkTypeIPv6:
		etype = 0x86dd
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		// A 4-byte address family whose values and byte order vary by
		// system: the IP version nibble decides.
		off = 4
	case layers.LinkTypeLinuxSLL:
		if len(frame) < 16 {
			return 0, 0, false, nil
		}
		off, etype = 16, binary.BigEndian.Uint16(frame[14:])
	case layers.LinkTypeLinuxSLL2:
		if len(frame) < 20 {
			return 0, 0, false, nil
		}
		off, etype = 20, binary.BigEndian.Uint16(frame[0:])
	default:
		return 0, 0, false, errLinkType(lt)
	}
	if len(frame) <= off {
		return 0, 0, false, nil
	}
	ip := frame[off:]
	v := ip[0] >> 4
	switch {
	case v == 4 && (etype == 0 || etype == 0x0800):
		if len(ip) >= 20 {
			if n := int(binary.BigEndian.Uint16(ip[2:])); n >= 20 && n <= len(ip) {
				return off, off + n, true, nil
			}
		}
	case v == 6 && (etype == 0 || etype == 0x86dd):
		if len(ip) >= 40 {
			if n := 40 + int(binary.BigEndian.Uint16(ip[4:])); n > 40 && n <= len(ip) {
				return off, off + n, true, nil
			}
		}
	default:
		return 0, 0, false, nil
	}
	// A length that does not fit (or a jumbogram): hand the engine all of
	// it and let it decide.
	return off, len(frame), true, nil
}

// captureReader reads pcap or pcapng (detected by the magic number) and
// says what each frame's link type is.
type captureReader struct {
	pcap *pcapgo.Reader
	ng   *pcapgo.NgReader
}

func openCapture(r io.Reader) (*captureReader, error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("not a capture: %w", err)
	}
	if bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		// Mixed link types are read rather than silently skipped, so that
		// no frame goes missing; replay then refuses them.
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return nil, fmt.Errorf("read pcapng: %w", err)
		}
		return &captureReader{ng: ng}, nil
	}
	p, err := pcapgo.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("read pcap: %w", err)
	}
	return &captureReader{pcap: p}, nil
}

// next returns the next frame and its link type; io.EOF at the end. The
// frame is valid until the next call: a replay of millions of frames
// allocates nothing per frame (what a held frame needs is copied).
func (c *captureReader) next() ([]byte, gopacket.CaptureInfo, layers.LinkType, error) {
	if c.pcap != nil {
		data, ci, err := c.pcap.ZeroCopyReadPacketData()
		return data, ci, c.pcap.LinkType(), err
	}
	data, ci, err := c.ng.ZeroCopyReadPacketData()
	if err != nil {
		return nil, ci, 0, err
	}
	ifc, err := c.ng.Interface(ci.InterfaceIndex)
	if err != nil {
		return nil, ci, 0, err
	}
	return data, ci, ifc.LinkType, nil
}

// format returns the link type, snap length and timestamp resolution of
// the output, given the first frame's interface (-1 when there was none).
func (c *captureReader) format(iface int) (lt layers.LinkType, snaplen uint32, nanos bool) {
	var res gopacket.TimestampResolution
	if c.pcap != nil {
		lt, snaplen, res = c.pcap.LinkType(), c.pcap.Snaplen(), c.pcap.Resolution()
	} else {
		lt = layers.LinkTypeEthernet // an empty pcapng without interfaces
		if ifc, err := c.ng.Interface(max(iface, 0)); err == nil {
			lt, snaplen, res = ifc.LinkType, ifc.SnapLength, ifc.Resolution()
		}
	}
	d := res.ToDuration()
	return lt, max(snaplen, 262144), d > 0 && d < time.Microsecond
}

// pendingFrame is a frame handed to the engine and not yet written.
type pendingFrame struct {
	head, tail []byte // link-layer header and trailer around the IP packet
	ts         time.Time
}

// clone returns pf with its own copy of the header and trailer.
func (pf pendingFrame) clone() pendingFrame {
	b := append(append(make([]byte, 0, len(pf.head)+len(pf.tail)), pf.head...), pf.tail...)
	pf.head, pf.tail = b[:len(pf.head):len(pf.head)], b[len(pf.head):]
	return pf
}

// replay runs the engine over the capture in r, writes the resulting
// capture to w and the transcript to transcript.
func replay(r io.Reader, w io.Writer, transcript io.Writer, opts replayOptions) (replaySummary, error) {
	src, err := openCapture(r)
	if err != nil {
		return replaySummary{}, err
	}
	rp := &replayer{
		src: src, w: w, transcript: transcript, opts: opts,
		eng:     mangle.New(&opts.Engine),
		pending: map[uint64]pendingFrame{},
		curTag:  ^uint64(0),
	}
	// The output's header waits for the first frame: a pcapng names its
	// link type in an interface block that may come late.
	if src.pcap != nil {
		if err := rp.begin(-1); err != nil {
			return rp.sum, err
		}
	}
	for {
		data, ci, flt, err := src.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rp.sum, fmt.Errorf("frame %d: %w", rp.sum.Frames+1, err)
		}
		if err := rp.frame(data, ci, flt); err != nil {
			return rp.sum, err
		}
	}
	if rp.pw == nil {
		if err := rp.begin(-1); err != nil {
			return rp.sum, err
		}
	}
	rp.curTag = ^uint64(0)
	rp.eng.Flush(&rp.res)
	if err := rp.drain(); err != nil {
		return rp.sum, err
	}
	if len(rp.pending) > 0 {
		return rp.sum, fmt.Errorf("engine never released %d frames", len(rp.pending))
	}
	rp.sum.Stats = rp.eng.Stats()
	return rp.sum, nil
}

// replayer is the state of one replay.
type replayer struct {
	src        *captureReader
	w          io.Writer
	transcript io.Writer
	opts       replayOptions
	eng        *mangle.Engine
	res        mangle.Result
	// pending holds the frames the engine holds, with copies of their
	// link-layer bytes; cur is the frame being processed (its bytes are
	// the reader's until the next frame), until the engine emits it or
	// holds it.
	pending    map[uint64]pendingFrame
	cur        pendingFrame
	curPending bool
	sum        replaySummary

	pw *pcapgo.Writer // nil until the first frame (or the end)
	lt layers.LinkType

	now       time.Time // the latest capture time so far: held frames leave then
	curTag    uint64    // the tag of the frame being processed
	frameTime time.Time // the time of the frame being processed
	buf       []byte    // a frame being put back together
	line      []byte    // a transcript line being formatted
	writeErr  error
}

// begin writes the output's header, in the format of the capture's
// interface iface (-1 for a classic pcap).
func (rp *replayer) begin(iface int) error {
	var snaplen uint32
	var nanos bool
	rp.lt, snaplen, nanos = rp.src.format(iface)
	if _, _, _, err := ipInFrame(rp.lt, nil); err != nil {
		return err
	}
	if nanos {
		rp.pw = pcapgo.NewWriterNanos(rp.w)
	} else {
		rp.pw = pcapgo.NewWriter(rp.w)
	}
	if err := rp.pw.WriteFileHeader(snaplen, rp.lt); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// write writes a frame; the first error sticks in writeErr.
func (rp *replayer) write(ts time.Time, data []byte) {
	if rp.writeErr != nil {
		return
	}
	ci := gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: len(data)}
	if err := rp.pw.WritePacket(ci, data); err != nil {
		rp.writeErr = fmt.Errorf("write: %w", err)
	}
}

// frame replays one captured frame: released held frames first, then the
// frame itself, through the engine if it carries an IP packet of the leg.
func (rp *replayer) frame(data []byte, ci gopacket.CaptureInfo, flt layers.LinkType) error {
	if rp.pw == nil {
		if err := rp.begin(ci.InterfaceIndex); err != nil {
			return err
		}
	}
	if flt != rp.lt {
		return fmt.Errorf("frame %d: pcapng interfaces with different link types (%d and %d) are not supported", rp.sum.Frames+1, rp.lt, flt)
	}
	tag := uint64(rp.sum.Frames)
	rp.sum.Frames++
	if ci.Timestamp.After(rp.now) {
		rp.now = ci.Timestamp
	}
	rp.curTag, rp.frameTime = tag, ci.Timestamp
	rp.curPending = false
	rp.eng.Expire(rp.now, rp.opts.HoldTimeout, &rp.res)
	if err := rp.drain(); err != nil {
		return err
	}
	off, end, ok, _ := ipInFrame(rp.lt, data)
	if ci.CaptureLength < ci.Length {
		// Cut short by the capture's snap length: the engine would see a
		// packet that never was.
		rp.sum.Truncated++
		ok = false
	}
	if ok && rp.opts.Leg != 0 && int(data[off]>>4) != rp.opts.Leg {
		rp.sum.OtherLeg++
		ok = false
	}
	if !ok {
		rp.write(ci.Timestamp, data)
		return rp.writeErr
	}
	rp.sum.IP++
	rp.cur, rp.curPending = pendingFrame{head: data[:off], tail: data[end:], ts: ci.Timestamp}, true
	rp.eng.Process(data[off:end], tag, ci.Timestamp, &rp.res)
	err := rp.drain()
	if rp.curPending {
		// Held: its link-layer bytes must outlive the reader's buffer.
		rp.pending[tag] = rp.cur.clone()
		rp.curPending = false
	}
	return err
}

// drain writes what one engine call emitted and prints its rewrites.
func (rp *replayer) drain() error {
	var last pendingFrame
	lastTag := ^uint64(0)
	for _, em := range rp.res.Emits {
		var pf pendingFrame
		ok := false
		if em.Tag == rp.curTag && rp.curPending {
			pf, ok = rp.cur, true
			rp.curPending = false
		} else if pf, ok = rp.pending[em.Tag]; ok {
			delete(rp.pending, em.Tag)
		}
		if em.Extra && !ok && em.Tag == lastTag {
			// The rest of a split segment: a frame of its own, right
			// after the first part, with the same link header.
			pf, ok = last, true
		}
		if !ok {
			return fmt.Errorf("engine emitted frame %d, which is not pending (emitted twice or never given)", em.Tag+1)
		}
		last, lastTag = pf, em.Tag
		if em.Extra {
			rp.sum.Extra++
		}
		if em.Drop {
			rp.sum.Dropped++
			continue
		}
		rp.buf = append(append(append(rp.buf[:0], pf.head...), em.Packet...), pf.tail...)
		if em.Modified {
			rp.sum.Modified++
		}
		// A frame keeps its time; a held one leaves when it is released.
		ts := pf.ts
		if em.Tag != rp.curTag && rp.now.After(ts) {
			ts = rp.now
		}
		rp.write(ts, rp.buf)
	}
	for _, rw := range rp.res.Rewrites {
		rp.sum.Rewrites++
		// As fmt's "%s %v %v %v: %q -> %q\n" would print it, without
		// its garbage (a line per rewrite, hundreds of thousands of them).
		b := rp.frameTime.UTC().AppendFormat(rp.line[:0], "2006-01-02T15:04:05.000000Z07:00")
		b = append(b, ' ')
		b = rw.Flow.Client().AppendTo(b)
		b = append(b, " -> "...)
		b = rw.Flow.Server().AppendTo(b)
		b = append(append(append(append(append(b, ' '), rw.Kind.String()...), ' '), rw.Dir.String()...), ": "...)
		b = strconv.AppendQuote(b, bytesView(rw.Before))
		b = append(b, " -> "...)
		b = strconv.AppendQuote(b, bytesView(rw.After))
		rp.line = append(b, '\n')
		if _, err := rp.transcript.Write(rp.line); err != nil && rp.writeErr == nil {
			rp.writeErr = fmt.Errorf("transcript: %w", err)
		}
	}
	for _, a := range rp.res.Alerts {
		fmt.Fprintf(rp.transcript, "%s %v %v error: %s\n",
			rp.frameTime.UTC().Format("2006-01-02T15:04:05.000000Z07:00"), a.Flow, a.Kind, a.Text)
	}
	return rp.writeErr
}
