//go:build linux && integration

package rules

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpalg/ftpalg/internal/testenv"
)

// dialFrom connects from client address from and port sport to the
// router's port 21 and reads the greeting.
func (p pair) dialFrom(from string, sport int, timeout time.Duration) error {
	return p.client.do(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from), Port: sport}}
		c, err := d.Dial("tcp", net.JoinHostPort(router4, "21"))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		buf := make([]byte, 64)
		if _, err := c.Read(buf); err != nil {
			return err
		}
		return nil
	})
}

// TestIntegrationRulesShifted runs without a queue reader, with Bypass:
// the connections in the set of shifted connections are dropped (fail
// closed), every other FTP connection passes (fail open). Install preloads
// the set; Shifted adds and deletes at run time.
func TestIntegrationRulesShifted(t *testing.T) {
	testenv.NeedRoot(t, "ip", "nft")
	p := newPair(t)
	c1 := Conn{Client: netip.MustParseAddrPort(client4s[0] + ":40001"), Server: netip.MustParseAddrPort(router4 + ":21")}
	c2 := Conn{Client: netip.MustParseAddrPort(client4s[1] + ":40002"), Server: netip.MustParseAddrPort(router4 + ":21")}
	cfg := &Config{Translator: Tayga, QueueNum: 9, Bypass: true, NetNS: p.router.FD, Shifted: []Conn{c1}}
	if err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	p.serve(t, 21)
	list := p.router.Run(t, "nft", "list", "set", "ip", "ftpalg", "shifted")
	if !strings.Contains(list, fmt.Sprintf("%s . 40001 . %s . 21", client4s[0], router4)) ||
		!strings.Contains(list, fmt.Sprintf("%s . 21 . %s . 40001", router4, client4s[0])) {
		t.Errorf("set lacks the preloaded connection:\n%s", list)
	}
	if err := p.dialFrom(client4s[0], 40001, 500*time.Millisecond); err == nil {
		t.Errorf("shifted connection passed without a daemon; want it dropped")
	}
	if err := p.dialFrom(client4s[1], 40002, 3*time.Second); err != nil {
		t.Errorf("unshifted connection: %v; want it to pass (bypass)", err)
	}
	s, err := OpenShifted(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Add(c2); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(c2); err != nil {
		t.Errorf("second Add: %v", err)
	}
	if err := s.Delete(c1); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(c1); err != nil {
		t.Errorf("Delete of an absent connection: %v", err)
	}
	if err := p.dialFrom(client4s[1], 40002, 500*time.Millisecond); err == nil {
		t.Errorf("connection added at run time passed; want it dropped")
	}
	if err := p.dialFrom(client4s[0], 40001, 3*time.Second); err != nil {
		t.Errorf("deleted connection: %v; want it to pass", err)
	}
}
