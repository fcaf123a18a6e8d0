package jool

import (
	"errors"
	"fmt"
	"net"
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
