package jool

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ErrNotLoaded is returned by Dial when the kernel has no "Jool"
// generic netlink family: the jool kernel module is not loaded (or the
// namespace cannot see it).
var ErrNotLoaded = errors.New("jool module not loaded")

// Config configures a Jool client. A nil *Config means defaults.
type Config struct {
	// Instance is the Jool instance to talk to (default "default").
	Instance string
	// NetNS is a network namespace file descriptor; 0 means the current
	// namespace. Jool finds its instance in the namespace of the thread
	// that sends a request, not in the socket's, so with NetNS the client
	// runs every request on one goroutine locked to an OS thread that
	// entered the namespace; that goroutine exits still locked when the
	// client is closed, so its thread is never reused in the wrong
	// namespace.
	NetNS int
	// Version is the version announced in every request, major<<24 |
	// minor<<16 | revision<<8 | development (default Version41). The
	// module rejects a request whose major.minor differ from its own.
	Version uint32
}

// Client is a client of a Jool NAT64 instance's Generic Netlink API (the API
// the `jool` command uses). It is safe for concurrent use: requests are
// serialized on one socket.
type Client struct {
	c      *genetlink.Conn
	family uint16
	hdr    joolHeader

	// th runs the requests inside Config.NetNS (nil without one).
	th     *nsThread
	mu     sync.Mutex // serializes requests; guards closed
	closed bool
}

// Dial opens a Generic Netlink socket and looks up Jool's family.
func Dial(cfg *Config) (*Client, error) {
	if cfg != nil && cfg.NetNS != 0 {
		return dialNetNS(cfg)
	}
	c, err := genetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("dial jool: %w", err)
	}
	j, err := newClient(c, cfg)
	if err != nil {
		c.Close()
		return nil, err
	}
	return j, nil
}

// dialNetNS dials from a thread inside cfg.NetNS that then serves
// every request of the client.
func dialNetNS(cfg *Config) (*Client, error) {
	th, err := startNSThread(cfg.NetNS)
	if err != nil {
		return nil, fmt.Errorf("dial jool: %w", err)
	}
	var j *Client
	err = th.run(func() error {
		c, err := genetlink.Dial(nil)
		if err != nil {
			return fmt.Errorf("dial jool: %w", err)
		}
		if j, err = newClient(c, cfg); err != nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		th.stop()
		return nil, err
	}
	j.th = th
	return j, nil
}

// nsThread runs functions on one goroutine locked to an OS thread that
// entered a network namespace.
type nsThread struct{ calls chan func() }

func startNSThread(netns int) (*nsThread, error) {
	th := &nsThread{calls: make(chan func())}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is in another namespace, so it must
		// end with this goroutine rather than go back to the scheduler.
		runtime.LockOSThread()
		if err := unix.Setns(netns, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- nil
		for f := range th.calls {
			f()
		}
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	return th, nil
}

// run runs f on the thread and returns its error.
func (th *nsThread) run(f func() error) error {
	errc := make(chan error, 1)
	th.calls <- func() { errc <- f() }
	return <-errc
}

// stop ends the goroutine (and its thread).
func (th *nsThread) stop() { close(th.calls) }

// newClient sets a client up over an open connection (a fake one in tests).
func newClient(c *genetlink.Conn, cfg *Config) (*Client, error) {
	h := joolHeader{Version: Version41, Instance: joolDefaultIname}
	if cfg != nil {
		if cfg.Instance != "" {
			h.Instance = cfg.Instance
		}
		if cfg.Version != 0 {
			h.Version = cfg.Version
		}
	}
	if err := validInstance(h.Instance); err != nil {
		return nil, err
	}
	f, err := c.GetFamily(joolFamily)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("dial jool: %w (generic netlink family %q: %w)", ErrNotLoaded, joolFamily, err)
		}
		return nil, fmt.Errorf("dial jool: look up family %q: %w", joolFamily, err)
	}
	return &Client{c: c, family: f.ID, hdr: h}, nil
}

// do runs f where requests must be made: on the namespace's goroutine
// when there is one, else right here. After Close it returns
// net.ErrClosed.
func (j *Client) do(f func() error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return net.ErrClosed
	}
	if j.th == nil {
		return f()
	}
	return j.th.run(f)
}

// Close closes the socket (and ends the namespace's goroutine).
func (j *Client) Close() error {
	err := j.do(j.c.Close)
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.closed && j.th != nil {
		j.th.stop()
	}
	j.closed = true
	return err
}

// execute sends one request and returns the attributes of its reply,
// with the reply's Jool flags. Jool answers every request with exactly one
// message, an error report or the data.
func (j *Client) execute(op string, m genetlink.Message) (flags uint8, attrs []byte, err error) {
	var msgs []genetlink.Message
	err = j.do(func() error {
		var err error
		msgs, err = j.c.Execute(m, j.family, netlink.Request)
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("jool %s: %w", op, err)
	}
	if len(msgs) != 1 {
		return 0, nil, fmt.Errorf("jool %s: %w: %d reply messages, want 1", op, errMalformed, len(msgs))
	}
	return parseJoolReply(op, msgs[0].Data)
}

// BIBAdd adds e as a static BIB entry. Adding an entry that already exists
// with the same addresses succeeds (Jool makes it static); one that
// collides with a different entry fails with a *Error wrapping EEXIST;
// an IPv4 address not in pool4 fails with EINVAL.
func (j *Client) BIBAdd(e BIBEntry) error {
	m, err := marshalBIBAdd(j.hdr, e)
	if err != nil {
		return fmt.Errorf("jool bib add: %w", err)
	}
	_, _, err = j.execute("bib add", m)
	return err
}

// BIBRemove removes the BIB entry e (with its sessions). A missing entry
// fails with a *Error wrapping ESRCH.
func (j *Client) BIBRemove(e BIBEntry) error {
	m, err := marshalBIBRemove(j.hdr, e)
	if err != nil {
		return fmt.Errorf("jool bib remove: %w", err)
	}
	_, _, err = j.execute("bib remove", m)
	return err
}

// maxPages bounds a listing, against a kernel that never clears the "more"
// flag. Jool sends about 50 BIB entries per page.
const maxPages = 1 << 16

// BIBList lists the BIB entries of one protocol (IANA number), both static
// and dynamic, sorted by IPv4 transport address as Jool keeps them.
func (j *Client) BIBList(proto uint8) ([]BIBEntry, error) {
	var all []BIBEntry
	var offset *BIBEntry
	for range maxPages {
		m, err := marshalBIBForeach(j.hdr, proto, offset)
		if err != nil {
			return nil, fmt.Errorf("jool bib list: %w", err)
		}
		flags, attrs, err := j.execute("bib list", m)
		if err != nil {
			return nil, err
		}
		page, err := unmarshalBIBEntries(attrs)
		if err != nil {
			return nil, fmt.Errorf("jool bib list: %w", err)
		}
		all = append(all, page...)
		if flags&joolFlagMore == 0 {
			return all, nil
		}
		if len(page) == 0 {
			return nil, fmt.Errorf("jool bib list: %w: empty page marked as not the last", errMalformed)
		}
		last := page[len(page)-1]
		offset = &last
	}
	return nil, fmt.Errorf("jool bib list: %w: more than %d pages", errMalformed, maxPages)
}

// Pool4List lists the pool4 ranges of one protocol (IANA number).
func (j *Client) Pool4List(proto uint8) ([]Pool4Entry, error) {
	var all []Pool4Entry
	var offset *Pool4Entry
	for range maxPages {
		m, err := marshalPool4Foreach(j.hdr, proto, offset)
		if err != nil {
			return nil, fmt.Errorf("jool pool4 list: %w", err)
		}
		flags, attrs, err := j.execute("pool4 list", m)
		if err != nil {
			return nil, err
		}
		page, err := unmarshalPool4Entries(attrs)
		if err != nil {
			return nil, fmt.Errorf("jool pool4 list: %w", err)
		}
		all = append(all, page...)
		if flags&joolFlagMore == 0 {
			return all, nil
		}
		if len(page) == 0 {
			return nil, fmt.Errorf("jool pool4 list: %w: empty page marked as not the last", errMalformed)
		}
		last := page[len(page)-1]
		offset = &last
	}
	return nil, fmt.Errorf("jool pool4 list: %w: more than %d pages", errMalformed, maxPages)
}

// SessionList lists the sessions of one protocol (IANA number).
func (j *Client) SessionList(proto uint8) ([]SessionEntry, error) {
	var all []SessionEntry
	var offset *SessionEntry
	for range maxPages {
		page, more, err := j.sessionPage(proto, offset)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if !more {
			return all, nil
		}
		if len(page) == 0 {
			return nil, fmt.Errorf("jool session list: %w: empty page marked as not the last", errMalformed)
		}
		last := page[len(page)-1]
		offset = &last
	}
	return nil, fmt.Errorf("jool session list: %w: more than %d pages", errMalformed, maxPages)
}

func (j *Client) sessionPage(proto uint8, offset *SessionEntry) ([]SessionEntry, bool, error) {
	m, err := marshalSessionForeach(j.hdr, proto, offset)
	if err != nil {
		return nil, false, fmt.Errorf("jool session list: %w", err)
	}
	flags, attrs, err := j.execute("session list", m)
	if err != nil {
		return nil, false, err
	}
	page, err := unmarshalSessionEntries(attrs)
	if err != nil {
		return nil, false, fmt.Errorf("jool session list: %w", err)
	}
	return page, flags&joolFlagMore != 0, nil
}

// SessionFind returns the session whose IPv4 side is src4 -> dst4 (src4 is
// the pool4 side, the BIB entry's IPv4 address), with one request instead
// of a whole listing: Jool keeps sessions sorted by (src4, dst4) and a
// listing resumes strictly after a given (src4, dst4), so asking for the
// page after (src4, dst4 - 1) yields the wanted session first if it exists.
func (j *Client) SessionFind(proto uint8, src4, dst4 netip.AddrPort) (SessionEntry, bool, error) {
	before, ok := prevAddrPort(dst4)
	if !ok {
		// Nothing sorts before 0.0.0.0:0: list from the start.
		page, _, err := j.sessionPage(proto, nil)
		if err != nil {
			return SessionEntry{}, false, err
		}
		for _, s := range page {
			if s.Src4 == src4 && s.Dst4 == dst4 {
				return s, true, nil
			}
		}
		return SessionEntry{}, false, nil
	}
	off := SessionEntry{
		Src6: netip.AddrPortFrom(netip.IPv6Unspecified(), 0),
		Dst6: netip.AddrPortFrom(netip.IPv6Unspecified(), 0),
		Src4: src4,
		Dst4: before,
	}
	page, _, err := j.sessionPage(proto, &off)
	if err != nil {
		return SessionEntry{}, false, err
	}
	if len(page) > 0 && page[0].Src4 == src4 && page[0].Dst4 == dst4 {
		return page[0], true, nil
	}
	return SessionEntry{}, false, nil
}

// BIBSessions returns the sessions of the BIB entry whose IPv4 side is
// src4, without listing the whole table: a listing resumed after
// (src4, 0.0.0.0:0) starts with that entry's sessions, then goes on to the
// next entries'.
func (j *Client) BIBSessions(proto uint8, src4 netip.AddrPort) ([]SessionEntry, error) {
	var out []SessionEntry
	off := SessionEntry{
		Src6: netip.AddrPortFrom(netip.IPv6Unspecified(), 0),
		Dst6: netip.AddrPortFrom(netip.IPv6Unspecified(), 0),
		Src4: src4,
		Dst4: netip.AddrPortFrom(netip.IPv4Unspecified(), 0),
	}
	for range maxPages {
		page, more, err := j.sessionPage(proto, &off)
		if err != nil {
			return nil, err
		}
		for _, s := range page {
			if s.Src4 != src4 {
				return out, nil
			}
			out = append(out, s)
		}
		if !more || len(page) == 0 {
			return out, nil
		}
		off = page[len(page)-1]
	}
	return nil, fmt.Errorf("jool session list: %w: more than %d pages", errMalformed, maxPages)
}

// prevAddrPort returns the IPv4 transport address just before a in Jool's
// order (address, then port).
func prevAddrPort(a netip.AddrPort) (netip.AddrPort, bool) {
	if a.Port() > 0 {
		return netip.AddrPortFrom(a.Addr(), a.Port()-1), true
	}
	p := a.Addr().Prev()
	if !p.IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(p, 65535), true
}

// Pool6 returns the instance's pool6, the RFC 6052 prefix of the NAT64.
// ok is false when the instance has none configured.
func (j *Client) Pool6() (pool6 netip.Prefix, ok bool, err error) {
	// The globals reply may be paged, but pool6 is the second attribute,
	// always on the first page.
	_, attrs, err := j.execute("global display", marshalGlobalForeach(j.hdr))
	if err != nil {
		return netip.Prefix{}, false, err
	}
	pool6, ok, err = unmarshalGlobalPool6(attrs)
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("jool global display: %w", err)
	}
	return pool6, ok, nil
}
