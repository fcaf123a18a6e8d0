//go:build linux

package rules

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// fakeKernel answers nftables batches without a kernel: it acknowledges
// every message, except that without nft_queue it fails a rule holding a
// "queue" expression with ENOENT, as the kernel does.
type fakeKernel struct {
	hasQueue bool
	batches  [][]netlink.Message // the nftables messages of each batch
}

func (k *fakeKernel) conn(t *testing.T) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		var batch []netlink.Message
		var replies []netlink.Message
		for _, m := range req {
			if m.Header.Type>>8 == unix.NFNL_SUBSYS_NFTABLES {
				batch = append(batch, m)
			}
			if m.Header.Flags&netlink.Acknowledge == 0 {
				continue
			}
			var errno int32
			if !k.hasQueue && msgType(m) == unix.NFT_MSG_NEWRULE && bytes.Contains(m.Data, []byte("queue\x00")) {
				errno = -int32(unix.ENOENT)
			}
			data := binary.NativeEndian.AppendUint32(nil, uint32(errno))
			replies = append(replies, netlink.Message{
				Header: netlink.Header{Type: netlink.Error, Sequence: m.Header.Sequence, PID: m.Header.PID},
				Data:   append(data, make([]byte, 16)...), // errno, then the request's header
			})
		}
		if len(batch) > 0 {
			k.batches = append(k.batches, batch)
		}
		return replies, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func msgType(m netlink.Message) uint16 { return uint16(m.Header.Type) & 0xff }

// summary names the messages of a batch: "newtable ip ftpalg", "newrule
// queue", "newrule target NFQUEUE", ...
func summary(batch []netlink.Message) []string {
	names := map[uint16]string{
		unix.NFT_MSG_NEWTABLE: "newtable", unix.NFT_MSG_DELTABLE: "deltable",
		unix.NFT_MSG_NEWCHAIN: "newchain", unix.NFT_MSG_NEWRULE: "newrule",
		unix.NFT_MSG_NEWSET: "newset", unix.NFT_MSG_NEWSETELEM: "newsetelem",
		unix.NFT_MSG_NEWOBJ: "newobj",
	}
	var s []string
	for _, m := range batch {
		line := names[msgType(m)]
		switch msgType(m) {
		case unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_DELTABLE:
			fam := map[byte]string{unix.NFPROTO_IPV4: "ip", unix.NFPROTO_IPV6: "ip6"}[m.Data[0]]
			ad, _ := netlink.NewAttributeDecoder(m.Data[4:])
			for ad.Next() {
				if ad.Type() == unix.NFTA_TABLE_NAME {
					line += " " + fam + " " + ad.String()
				}
			}
		case unix.NFT_MSG_NEWRULE:
			switch {
			case bytes.Contains(m.Data, []byte("queue\x00")):
				line += " queue"
			case bytes.Contains(m.Data, []byte("target\x00")) && bytes.Contains(m.Data, []byte("NFQUEUE\x00")):
				line += " target NFQUEUE"
			case bytes.Contains(m.Data, []byte("objref\x00")):
				line += " objref"
			case bytes.Contains(m.Data, []byte("immediate\x00")) && bytes.Contains(m.Data, []byte(divertChain+"\x00")):
				line += " jump"
			}
			if bytes.Contains(m.Data, []byte("lookup\x00")) {
				line += " lookup"
			}
		}
		s = append(s, line)
	}
	return s
}

func TestInstallChoosesQueueExpression(t *testing.T) {
	p, err := newPlan(&Config{Translator: Jool, QueueNum: 0x0102, Queues: 3, Bypass: true, Table: "t"})
	if err != nil {
		t.Fatal(err)
	}
	for _, hasQueue := range []bool{true, false} {
		k := &fakeKernel{hasQueue: hasQueue}
		if err := p.install(k.conn(t)); err != nil {
			t.Fatalf("hasQueue=%v: %v", hasQueue, err)
		}
		if len(k.batches) != 2 {
			t.Fatalf("hasQueue=%v: %d batches, want the probe and the ruleset", hasQueue, len(k.batches))
		}
		probe := summary(k.batches[0])
		if len(probe) != 4 || !strings.HasPrefix(probe[0], "newtable ip ftpalg_probe_") ||
			probe[2] != "newrule queue" || probe[3] != strings.Replace(probe[0], "newtable", "deltable", 1) {
			t.Errorf("hasQueue=%v: probe batch %q, want a scratch table with a queue rule, deleted again", hasQueue, probe)
		}
		rule := "newrule queue"
		if !hasQueue {
			rule = "newrule target NFQUEUE"
		}
		want := []string{
			"newtable ip t", "deltable ip t", "newtable ip6 t", "deltable ip6 t",
			"newtable ip t",
			"newset", // the shifted connections, queued without bypass first
			"newchain", "newchain", "newchain",
			"newrule jump", "newrule jump",
			rule + " lookup", rule, rule,
		}
		if diff := cmp.Diff(want, summary(k.batches[1])); diff != "" {
			t.Errorf("hasQueue=%v: ruleset batch (-want +got):\n%s", hasQueue, diff)
		}
		if !hasQueue {
			// struct xt_NFQ_info_v3 in host order: queue 0x0102, 3
			// queues, flags bypass, padding.
			info := binary.NativeEndian.AppendUint16(nil, 0x0102)
			info = binary.NativeEndian.AppendUint16(info, 3)
			info = binary.NativeEndian.AppendUint16(info, 1)
			info = binary.NativeEndian.AppendUint16(info, 0)
			// The rule of shifted connections: flags 0, never bypass.
			shifted := bytes.Clone(info)
			binary.NativeEndian.PutUint16(shifted[4:], 0)
			// The NFQUEUE rules in order: the shifted connections' first.
			n := 0
			for _, m := range k.batches[1] {
				if msgType(m) != unix.NFT_MSG_NEWRULE || !bytes.Contains(m.Data, []byte("NFQUEUE\x00")) {
					continue
				}
				if n == 0 && !bytes.Contains(m.Data, shifted) || n != 0 && !bytes.Contains(m.Data, info) {
					t.Errorf("NFQUEUE rule %d lacks its xt_NFQ_info_v3", n)
				}
				n++
			}
			if n != 3 {
				t.Errorf("%d NFQUEUE rules, want 3", n)
			}
		}
	}
}

func TestRemoveBatch(t *testing.T) {
	k := &fakeKernel{}
	conn := k.conn(t)
	deleteTables(conn, "ftpalg")
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	want := []string{"newtable ip ftpalg", "deltable ip ftpalg", "newtable ip6 ftpalg", "deltable ip6 ftpalg"}
	if diff := cmp.Diff(want, summary(k.batches[0])); diff != "" {
		t.Errorf("remove batch (-want +got):\n%s", diff)
	}
}

func TestInstallHelperBothFamilies(t *testing.T) {
	p, err := newPlan(&Config{Translator: Tayga, Leg: LegIPv6, Helper: true, Table: "t", Scope: exampleTaygaScope})
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{hasQueue: true}
	if err := p.install(k.conn(t)); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"newtable ip t", "deltable ip t", "newtable ip6 t", "deltable ip6 t",
		"newtable ip6 t", "newobj", "newset", "newsetelem", "newchain", "newchain", "newchain",
		"newrule jump lookup", "newrule jump lookup", "newrule queue", "newrule queue",
		"newrule objref lookup", "newrule objref lookup",
		"newtable ip t", "newobj", "newset", "newsetelem", "newchain",
		"newrule objref lookup", "newrule objref lookup",
	}
	if diff := cmp.Diff(want, summary(k.batches[1])); diff != "" {
		t.Errorf("ruleset batch (-want +got):\n%s", diff)
	}
	// The ct helper objects, of protocol TCP, one per family: the carrier
	// on the rewritten leg, the FTP helper on the other.
	var l3 []uint16
	for _, m := range k.batches[1] {
		if msgType(m) != unix.NFT_MSG_NEWOBJ {
			continue
		}
		helper := "ftp"
		if len(l3) == 0 {
			helper = "sane"
		}
		if !bytes.Contains(m.Data, []byte(helper)) {
			t.Errorf("ct helper object %d is not of type %s: % x", len(l3), helper, m.Data)
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			t.Fatal(err)
		}
		for ad.Next() {
			if ad.Type() != unix.NFTA_OBJ_DATA {
				continue
			}
			inner, err := netlink.NewAttributeDecoder(ad.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			inner.ByteOrder = binary.BigEndian
			for inner.Next() {
				switch inner.Type() {
				case unix.NFTA_CT_HELPER_L3PROTO:
					l3 = append(l3, inner.Uint16())
				case unix.NFTA_CT_HELPER_L4PROTO:
					if inner.Uint8() != unix.IPPROTO_TCP {
						t.Errorf("helper l4proto %d, want TCP", inner.Uint8())
					}
				}
			}
		}
	}
	if diff := cmp.Diff([]uint16{unix.NFPROTO_IPV6, unix.NFPROTO_IPV4}, l3); diff != "" {
		t.Errorf("helper l3proto per object (-want +got):\n%s", diff)
	}
}
