package jool

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The family the captured kernel announced.
var capturedFamily = genetlink.Family{ID: 0x20, Name: "Jool", Version: 2}

// replayKernel answers each request that equals a captured request with the
// captured reply, and fails on anything else: a fake Jool built from the
// capture.
func replayKernel(t *testing.T, pairs map[string]string) genltest.Func {
	t.Helper()
	type pair struct{ req, reply []byte }
	var table []pair
	for req, reply := range pairs {
		table = append(table, pair{readGolden(t, req), readGolden(t, reply)})
	}
	return genltest.ServeFamily(capturedFamily, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		if nreq.Header.Flags != netlink.Request {
			return nil, fmt.Errorf("request flags %v, want just Request", nreq.Header.Flags)
		}
		got, err := greq.MarshalBinary()
		if err != nil {
			return nil, err
		}
		for _, p := range table {
			if bytes.Equal(got, p.req) {
				var m genetlink.Message
				if err := m.UnmarshalBinary(p.reply); err != nil {
					return nil, err
				}
				return []genetlink.Message{m}, nil
			}
		}
		return nil, fmt.Errorf("no captured reply for request\n%s", hex.Dump(got))
	})
}

func dialFake(t *testing.T, fn genltest.Func, cfg *Config) *Client {
	t.Helper()
	j, err := newClient(genltest.Dial(fn), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

var capturedConfig = &Config{Version: 0x04010900}

func TestJoolBIBListPaging(t *testing.T) {
	j := dialFake(t, replayKernel(t, map[string]string{
		"bib-display-151-request-1.hex": "bib-display-151-reply-1.hex",
		"bib-display-151-request-2.hex": "bib-display-151-reply-2.hex",
		"bib-display-151-request-3.hex": "bib-display-151-reply-3.hex",
	}), capturedConfig)
	got, err := j.BIBList(ProtoTCP)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(readExpected151(t), got, equateNetip); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}

func TestJoolBIBAddRemove(t *testing.T) {
	j := dialFake(t, replayKernel(t, map[string]string{
		"bib-add-request.hex":              "bib-add-reply.hex",
		"bib-remove-request.hex":           "bib-add-reply.hex", // an empty success, like the captured one
		"bib-add-not-in-pool4-request.hex": "bib-add-not-in-pool4-reply.hex",
	}), capturedConfig)
	if err := j.BIBAdd(entry21); err != nil {
		t.Fatalf("BIBAdd: %v", err)
	}
	if err := j.BIBRemove(entry21); err != nil {
		t.Fatalf("BIBRemove: %v", err)
	}
	err := j.BIBAdd(entryNotInPool4)
	var je *Error
	if !errors.As(err, &je) || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("BIBAdd outside pool4: err = %v, want a *Error wrapping EINVAL", err)
	}
	if want := "jool bib add: The transport address '198.51.100.1#21' does not belong to pool4. Please add it there first. (invalid argument)"; err.Error() != want {
		t.Errorf("error text\n got %q\nwant %q", err.Error(), want)
	}
}

func TestJoolPool4AddRemove(t *testing.T) {
	j := dialFake(t, replayKernel(t, map[string]string{
		"pool4-add-request.hex": "pool4-add-reply.hex",
	}), capturedConfig)
	if err := j.Pool4Add(pool4Captured); err != nil {
		t.Fatalf("Pool4Add: %v", err)
	}
	// The removal: what the client sends is the add with command 20 and
	// the quick flag (TestMarshalPool4RemoveFromAddGolden); here only
	// that it goes out as such and its empty success is understood.
	var sent []byte
	fake := genltest.ServeFamily(capturedFamily, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
		sent, _ = greq.MarshalBinary()
		return []genetlink.Message{goldenMessage(t, "pool4-add-reply.hex")}, nil
	})
	j2 := dialFake(t, fake, capturedConfig)
	if err := j2.Pool4Remove(pool4Captured); err != nil {
		t.Fatalf("Pool4Remove: %v", err)
	}
	if len(sent) < 14 || sent[0] != joolOpPool4Remove || sent[4+9] != joolFlagQuick {
		t.Errorf("Pool4Remove sent\n%s\nwant command %d with the quick flag", hex.Dump(sent), joolOpPool4Remove)
	}
}

func TestJoolPool4SessionPool6(t *testing.T) {
	globalReq := mustMarshal(t, marshalGlobalForeach(capturedHeader), nil)
	j := dialFake(t, genltest.ServeFamily(capturedFamily, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
		got, _ := greq.MarshalBinary()
		var reply string
		switch {
		case bytes.Equal(got, readGolden(t, "pool4-display-request.hex")):
			reply = "pool4-display-reply.hex"
		case bytes.Equal(got, readGolden(t, "session-display-request.hex")):
			reply = "session-display-reply.hex"
		case bytes.Equal(got, globalReq):
			reply = "global-display-reply.hex"
		default:
			return nil, fmt.Errorf("unexpected request\n%s", hex.Dump(got))
		}
		return []genetlink.Message{goldenMessage(t, reply)}, nil
	}), capturedConfig)

	pool4, err := j.Pool4List(ProtoTCP)
	if err != nil || len(pool4) != 1 || pool4[0].Prefix != netip.MustParsePrefix("192.0.2.1/32") {
		t.Errorf("Pool4List = %v, %v", pool4, err)
	}
	sessions, err := j.SessionList(ProtoTCP)
	if err != nil || len(sessions) != 2 {
		t.Errorf("SessionList = %v, %v", sessions, err)
	}
	pool6, ok, err := j.Pool6()
	if err != nil || !ok || pool6 != netip.MustParsePrefix("64:ff9b::/96") {
		t.Errorf("Pool6 = %v, %v, %v", pool6, ok, err)
	}
}

// fakeJoolKernel is a small model of Jool's BIB and session tables that
// answers with replies built the way the module builds them, to test what
// the capture does not show: EEXIST, ESRCH, many pages, session lookups.
type fakeJoolKernel struct {
	t        *testing.T
	bib      []BIBEntry
	sessions []SessionEntry
	pageSize int
	requests int
}

func (k *fakeJoolKernel) reply(flags uint8, attrs []byte) []genetlink.Message {
	data := appendJoolHeader(nil, joolHeader{Version: Version41, Flags: flags, Instance: "default"})
	return []genetlink.Message{{Header: genetlink.Header{Command: 0, Version: 2}, Data: append(data, attrs...)}}
}

func (k *fakeJoolKernel) errorReply(errno unix.Errno, msg string) []genetlink.Message {
	ae := netlink.NewAttributeEncoder()
	ae.Uint16(joolErrCode, uint16(errno))
	ae.String(joolErrMsg, msg)
	b, err := ae.Encode()
	if err != nil {
		k.t.Fatal(err)
	}
	return k.reply(joolFlagError, b)
}

func (k *fakeJoolKernel) serve(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
	k.requests++
	data := greq.Data
	if len(data) < joolHeaderLen || string(data[:4]) != "jool" {
		return k.errorReply(unix.EINVAL, "Userspace request lacks a Jool header."), nil
	}
	if v := uint32(data[4])<<24 | uint32(data[5])<<16; v != Version41 {
		return k.errorReply(unix.EINVAL, "Version mismatch."), nil
	}
	root := map[uint16][]byte{}
	ad, err := netlink.NewAttributeDecoder(data[joolHeaderLen:])
	if err != nil {
		return nil, err
	}
	for ad.Next() {
		root[ad.Type()] = ad.Bytes()
	}
	// Re-type a nested root attribute as a list entry to reuse the decoders.
	entry := func(b []byte) []byte {
		out, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: netlink.Nested | joolAttrListEntry, Data: b}})
		return out
	}
	switch greq.Header.Command {
	case joolOpBIBAdd:
		es, err := unmarshalBIBEntries(entry(root[joolAttrOperand]))
		if err != nil {
			return nil, err
		}
		e := es[0]
		for i, old := range k.bib {
			if old.Addr6 == e.Addr6 && old.Addr4 == e.Addr4 {
				k.bib[i].Static = true
				return k.reply(0, nil), nil
			}
			if old.Addr6 == e.Addr6 || old.Addr4 == e.Addr4 {
				return k.errorReply(unix.EEXIST, fmt.Sprintf("Entry %v collides with %v.", e, old)), nil
			}
		}
		k.bib = append(k.bib, e)
		return k.reply(0, nil), nil
	case joolOpBIBRemove:
		es, err := unmarshalBIBEntries(entry(root[joolAttrOperand]))
		if err != nil {
			return nil, err
		}
		for i, old := range k.bib {
			if old.Addr6 == es[0].Addr6 && old.Addr4 == es[0].Addr4 {
				k.bib = append(k.bib[:i], k.bib[i+1:]...)
				return k.reply(0, nil), nil
			}
		}
		return k.errorReply(unix.ESRCH, "The entry wasn't in the database."), nil
	case joolOpBIBForeach:
		start := 0
		if off, ok := root[joolAttrOffset]; ok {
			es, err := unmarshalBIBEntries(entry(off))
			if err != nil {
				return nil, err
			}
			for i, e := range k.bib {
				if e.Addr4 == es[0].Addr4 {
					start = i + 1
				}
			}
		}
		var b []byte
		end := min(start+k.pageSize, len(k.bib))
		for _, e := range k.bib[start:end] {
			a, err := bibAttrs(joolAttrListEntry, e)
			if err != nil {
				return nil, err
			}
			b = append(b, a...)
		}
		var flags uint8
		if end < len(k.bib) {
			flags = joolFlagMore
		}
		return k.reply(flags, b), nil
	case joolOpSessionForeach:
		var after *SessionEntry
		if off, ok := root[joolAttrOffset]; ok {
			es, err := unmarshalSessionEntries(entry(off))
			if err != nil {
				return nil, err
			}
			after = &es[0]
		}
		ae := netlink.NewAttributeEncoder()
		n := 0
		more := false
		for _, s := range k.sessions {
			if after != nil && !sessionAfter(s, *after) {
				continue
			}
			if n == k.pageSize {
				more = true
				break
			}
			n++
			ae.Nested(joolAttrListEntry, func(nae *netlink.AttributeEncoder) error {
				encodeTaddr6(nae, joolSessionSrc6, s.Src6)
				encodeTaddr6(nae, joolSessionDst6, s.Dst6)
				encodeTaddr4(nae, joolSessionSrc4, s.Src4)
				encodeTaddr4(nae, joolSessionDst4, s.Dst4)
				nae.Uint8(joolSessionProto, joolProtoTCP)
				nae.Uint8(joolSessionState, s.State)
				nae.Uint8(joolSessionTimer, s.Timer)
				nae.Uint32(joolSessionExpiration, 1000)
				return nil
			})
		}
		b, err := ae.Encode()
		if err != nil {
			return nil, err
		}
		var flags uint8
		if more {
			flags = joolFlagMore
		}
		return k.reply(flags, b), nil
	}
	return k.errorReply(unix.EINVAL, "unsupported by the fake"), nil
}

// sessionAfter orders sessions as Jool does: by (Src4, Dst4), addresses
// before ports.
func sessionAfter(s, off SessionEntry) bool {
	if c := s.Src4.Compare(off.Src4); c != 0 {
		return c > 0
	}
	return s.Dst4.Compare(off.Dst4) > 0
}

func TestJoolErrorsFromFake(t *testing.T) {
	k := &fakeJoolKernel{t: t, pageSize: 3}
	j := dialFake(t, genltest.ServeFamily(capturedFamily, k.serve), nil)

	if err := j.BIBAdd(entry21); err != nil {
		t.Fatal(err)
	}
	if err := j.BIBAdd(entry21); err != nil {
		t.Errorf("adding the same entry again: %v, want success as Jool 4.1.9 answers", err)
	}
	clash := entry21
	clash.Addr6 = netip.MustParseAddrPort("[2001:db8::99]:21")
	err := j.BIBAdd(clash)
	if !errors.Is(err, unix.EEXIST) {
		t.Errorf("colliding add: err = %v, want EEXIST", err)
	}
	var je *Error
	if !errors.As(err, &je) || je.Op != "bib add" || je.Message == "" {
		t.Errorf("colliding add: err = %#v", err)
	}
	if err := j.BIBRemove(clash); !errors.Is(err, unix.ESRCH) {
		t.Errorf("removing a missing entry: err = %v, want ESRCH", err)
	}
}

func TestJoolListPagingFromFake(t *testing.T) {
	k := &fakeJoolKernel{t: t, pageSize: 4}
	for i := range 10 {
		k.bib = append(k.bib, BIBEntry{
			Addr6: netip.AddrPortFrom(netip.MustParseAddr("2001:db8::20"), uint16(1000+i)),
			Addr4: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(2200+i)),
			Proto: ProtoTCP, Static: true,
		})
	}
	c4 := netip.MustParseAddr("192.0.2.1")
	s4 := netip.MustParseAddr("198.51.100.7")
	for i := range 9 {
		k.sessions = append(k.sessions, SessionEntry{
			Src6:  netip.AddrPortFrom(netip.MustParseAddr("2001:db8::10"), uint16(40000+i)),
			Dst6:  netip.AddrPortFrom(netip.MustParseAddr("64:ff9b::c633:6407"), 21),
			Src4:  netip.AddrPortFrom(c4, uint16(3000+i)),
			Dst4:  netip.AddrPortFrom(s4, uint16(20+i%2)),
			Proto: ProtoTCP,
		})
	}
	j := dialFake(t, genltest.ServeFamily(capturedFamily, k.serve), nil)

	bib, err := j.BIBList(ProtoTCP)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(k.bib, bib, equateNetip); diff != "" {
		t.Errorf("bib (-want +got):\n%s", diff)
	}
	if k.requests != 3 {
		t.Errorf("%d requests for 10 entries in pages of 4, want 3", k.requests)
	}
	sessions, err := j.SessionList(ProtoTCP)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(k.sessions, sessions, equateNetip, cmp.FilterPath(func(p cmp.Path) bool {
		return p.Last().String() == ".Expires"
	}, cmp.Ignore())); diff != "" {
		t.Errorf("sessions (-want +got):\n%s", diff)
	}

	for _, want := range []SessionEntry{k.sessions[0], k.sessions[5], k.sessions[8]} {
		k.requests = 0
		got, ok, err := j.SessionFind(ProtoTCP, want.Src4, want.Dst4)
		if err != nil || !ok || got.Src6 != want.Src6 {
			t.Errorf("SessionFind(%v, %v) = %v, %v, %v; want %v", want.Src4, want.Dst4, got, ok, err, want.Src6)
		}
		if k.requests != 1 {
			t.Errorf("SessionFind made %d requests, want 1", k.requests)
		}
	}
	if _, ok, err := j.SessionFind(ProtoTCP, netip.AddrPortFrom(c4, 3001), netip.AddrPortFrom(s4, 20)); ok || err != nil {
		t.Errorf("SessionFind of a missing session: ok %v, err %v", ok, err)
	}

	// Six sessions on one BIB entry, sorted before the others: two pages.
	busy := netip.AddrPortFrom(c4, 2999)
	var want []SessionEntry
	for i := range 6 {
		want = append(want, SessionEntry{
			Src6: netip.AddrPortFrom(netip.MustParseAddr("2001:db8::10"), 39999),
			Dst6: netip.AddrPortFrom(netip.MustParseAddr("64:ff9b::c633:6407"), uint16(5000+i)),
			Src4: busy, Dst4: netip.AddrPortFrom(s4, uint16(5000+i)), Proto: ProtoTCP,
		})
	}
	k.sessions = append(slices.Clone(want), k.sessions...)
	k.requests = 0
	got, err := j.BIBSessions(ProtoTCP, busy)
	if err != nil {
		t.Fatal(err)
	}
	ignoreExpires := cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Expires" }, cmp.Ignore())
	if diff := cmp.Diff(want, got, equateNetip, ignoreExpires); diff != "" {
		t.Errorf("BIBSessions (-want +got):\n%s", diff)
	}
	if k.requests != 2 {
		t.Errorf("BIBSessions made %d requests for 6 sessions in pages of 4, want 2", k.requests)
	}
	if got, err := j.BIBSessions(ProtoTCP, netip.AddrPortFrom(c4, 3004)); err != nil || len(got) != 1 || got[0].Dst4 != k.sessions[6+4].Dst4 {
		t.Errorf("BIBSessions of a one-session entry = %v, %v", got, err)
	}
	if got, err := j.BIBSessions(ProtoTCP, netip.AddrPortFrom(c4, 1)); err != nil || len(got) != 0 {
		t.Errorf("BIBSessions of an entry without sessions = %v, %v", got, err)
	}
}

func TestDialJoolFamilyMissing(t *testing.T) {
	c := genltest.Dial(func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		if nreq.Header.Type == unix.GENL_ID_CTRL {
			return nil, genltest.Error(int(unix.ENOENT))
		}
		return nil, errors.New("unexpected request")
	})
	_, err := newClient(c, nil)
	if !errors.Is(err, ErrNotLoaded) {
		t.Fatalf("err = %v, want ErrNotLoaded", err)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v does not wrap ENOENT", err)
	}
}

func TestJoolConfigValidation(t *testing.T) {
	c := genltest.Dial(genltest.ServeFamily(capturedFamily, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		return nil, nil
	}))
	if _, err := newClient(c, &Config{Instance: "a-name-much-too-long"}); err == nil {
		t.Error("accepted an instance name of 20 bytes")
	}
	j, err := newClient(c, &Config{Instance: "nat64-ftp"})
	if err != nil {
		t.Fatal(err)
	}
	if j.hdr.Instance != "nat64-ftp" || j.hdr.Version != Version41 || j.family != 0x20 {
		t.Errorf("client %+v", j)
	}
}
