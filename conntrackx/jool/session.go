package jool

// Jool's session table: listings, and the lookups by IPv4 side that
// spare the mapper a whole listing.

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// SessionList lists the sessions of one protocol (IANA number).
func (j *Client) SessionList(proto uint8) ([]SessionEntry, error) {
	return sessionListing.all(j, proto)
}

func (j *Client) sessionPage(proto uint8, offset *SessionEntry) ([]SessionEntry, bool, error) {
	return sessionListing.page(j, proto, offset)
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
	err := sessionListing.each(j, proto, &off, func(page []SessionEntry) bool {
		for _, s := range page {
			if s.Src4 != src4 {
				return false // the next BIB entry's sessions
			}
			out = append(out, s)
		}
		return len(page) > 0
	})
	if err != nil {
		return nil, err
	}
	return out, nil
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

// Jool's TCP session states (enum tcp_state, RFC 6146 section 3.5.2).
const (
	TCPEstablished   uint8 = 0
	TCPV6Init        uint8 = 1
	TCPV4Init        uint8 = 2
	TCPV4FinRcv      uint8 = 3
	TCPV6FinRcv      uint8 = 4
	TCPV4FinV6FinRcv uint8 = 5
	TCPTrans         uint8 = 6
)

// SessionEntry is one session of Jool's session table. A session belongs
// to the BIB entry Src6 <-> Src4: the IPv6 node Src6 talks to Dst6, which
// the IPv4 node Dst4 sees as Src4.
type SessionEntry struct {
	Src6, Dst6 netip.AddrPort
	Src4, Dst4 netip.AddrPort
	Proto      uint8 // IANA number
	State      uint8 // TCP* for TCP; 0 otherwise
	Timer      uint8 // Jool's timer kind (0 established, 1 transitory)
	// Expires is how long the session has left, as the kernel reported it.
	Expires time.Duration
}

// Finished says whether a TCP session has seen both FINs or a reset.
func (s SessionEntry) Finished() bool {
	return s.State == TCPV4FinV6FinRcv || s.State == TCPTrans
}

// marshalSessionForeach builds one page request of a session listing. The
// protocol is always named; later pages add the last session received (the
// module reads only its IPv4 addresses) and start strictly after it.
func marshalSessionForeach(h joolHeader, proto uint8, offset *SessionEntry) (genetlink.Message, error) {
	jp, err := protoToJool(proto)
	if err != nil {
		return genetlink.Message{}, err
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint8(joolAttrProto, jp)
	if offset != nil {
		ae.Nested(joolAttrOffset, func(nae *netlink.AttributeEncoder) error {
			encodeTaddr6(nae, joolSessionSrc6, offset.Src6)
			encodeTaddr6(nae, joolSessionDst6, offset.Dst6)
			encodeTaddr4(nae, joolSessionSrc4, offset.Src4)
			encodeTaddr4(nae, joolSessionDst4, offset.Dst4)
			nae.Uint8(joolSessionProto, jp)
			nae.Uint8(joolSessionState, offset.State)
			nae.Uint32(joolSessionExpiration, uint32(offset.Expires/time.Millisecond))
			return nil
		})
	}
	attrs, err := ae.Encode()
	if err != nil {
		return genetlink.Message{}, err
	}
	return newJoolMessage(h, joolOpSessionForeach, attrs), nil
}

// unmarshalSessionEntries decodes the attributes of a session listing page.
func unmarshalSessionEntries(attrs []byte) ([]SessionEntry, error) {
	var out []SessionEntry
	err := decodeList(attrs, func(nad *netlink.AttributeDecoder) error {
		var s SessionEntry
		var jp uint8
		var seen int
		for nad.Next() {
			switch nad.Type() {
			case joolSessionSrc6:
				s.Src6 = decodeTaddr(nad, 16)
				seen |= 1
			case joolSessionDst6:
				s.Dst6 = decodeTaddr(nad, 16)
				seen |= 2
			case joolSessionSrc4:
				s.Src4 = decodeTaddr(nad, 4)
				seen |= 4
			case joolSessionDst4:
				s.Dst4 = decodeTaddr(nad, 4)
				seen |= 8
			case joolSessionProto:
				jp = nad.Uint8()
				seen |= 16
			case joolSessionState:
				s.State = nad.Uint8()
			case joolSessionTimer:
				s.Timer = nad.Uint8()
			case joolSessionExpiration:
				s.Expires = time.Duration(nad.Uint32()) * time.Millisecond
			}
		}
		if err := nad.Err(); err != nil {
			return err
		}
		if seen != 31 {
			return fmt.Errorf("session entry lacks an address or protocol")
		}
		p, err := protoFromJool(jp)
		if err != nil {
			return err
		}
		s.Proto = p
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: session listing: %v", errMalformed, err)
	}
	return out, nil
}
