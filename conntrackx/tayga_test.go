package conntrackx

import (
	"net/netip"
	"testing"

	"github.com/ti-mo/conntrack"
)

func tcpFlow(src, dst string, sport, dport uint16) conntrack.Flow {
	return conntrack.Flow{TupleOrig: conntrack.Tuple{
		IP:    conntrack.IPTuple{SourceAddress: netip.MustParseAddr(src), DestinationAddress: netip.MustParseAddr(dst)},
		Proto: conntrack.ProtoTuple{Protocol: protoTCP, SourcePort: sport, DestinationPort: dport},
	}}
}

func TestUnique(t *testing.T) {
	dst := netip.MustParseAddr("2001:db8:64::c633:6402")
	other := tcpFlow("2001:db8:6::9", "2001:db8:64::c633:6403", 40000, 21)
	udp := tcpFlow("2001:db8:6::8", "2001:db8:64::c633:6402", 40000, 21)
	udp.TupleOrig.Proto.Protocol = 17
	any6 := func(a netip.Addr) bool { return a.Is6() }
	tests := []struct {
		name  string
		flows []conntrack.Flow
		want  string
	}{
		{"none", nil, ""},
		{"one", []conntrack.Flow{other, udp, tcpFlow("2001:db8:6::2", "2001:db8:64::c633:6402", 40000, 21)}, "2001:db8:6::2"},
		{"same source twice", []conntrack.Flow{
			tcpFlow("2001:db8:6::2", "2001:db8:64::c633:6402", 40000, 21),
			tcpFlow("2001:db8:6::2", "2001:db8:64::c633:6402", 40000, 21),
		}, "2001:db8:6::2"},
		{"two sources: no answer", []conntrack.Flow{
			tcpFlow("2001:db8:6::2", "2001:db8:64::c633:6402", 40000, 21),
			tcpFlow("2001:db8:6::3", "2001:db8:64::c633:6402", 40000, 21),
		}, ""},
		{"other ports", []conntrack.Flow{
			tcpFlow("2001:db8:6::2", "2001:db8:64::c633:6402", 40001, 21),
			tcpFlow("2001:db8:6::3", "2001:db8:64::c633:6402", 40000, 2121),
		}, ""},
		{"rejected source", []conntrack.Flow{tcpFlow("203.0.113.5", "2001:db8:64::c633:6402", 40000, 21)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := unique(tt.flows, dst, 40000, 21, any6)
			if tt.want == "" {
				if ok {
					t.Errorf("unique = %v, want none", got)
				}
				return
			}
			if !ok || got != netip.MustParseAddr(tt.want) {
				t.Errorf("unique = %v, %v; want %s", got, ok, tt.want)
			}
		})
	}
}

func TestDialTaygaConntrackConfig(t *testing.T) {
	for _, cfg := range []*TaygaConntrackConfig{
		nil,
		{},
		{Prefix: netip.MustParsePrefix("2001:db8:64::/80")},
	} {
		if tc, err := DialTaygaConntrack(cfg); err == nil {
			tc.Close()
			t.Errorf("DialTaygaConntrack(%+v) succeeded, want an error", cfg)
		}
	}
}

func TestJoin(t *testing.T) {
	tc := &TaygaConntrack{cfg: TaygaConntrackConfig{Prefix: netip.MustParsePrefix("2001:db8:64::/96")}}
	udp6 := tcpFlow("2001:db8:6::2", "2001:db8:64::c633:6405", 5353, 53)
	udp6.TupleOrig.Proto.Protocol = protoUDP
	udp4 := tcpFlow("203.0.113.238", "198.51.100.5", 5353, 53)
	udp4.TupleOrig.Proto.Protocol = protoUDP
	flows6 := []conntrack.Flow{
		tcpFlow("2001:db8:6::2", "2001:db8:64::c633:6402", 40021, 21),
		tcpFlow("2001:db8:6::3", "2001:db8:64::c633:6402", 40022, 21),
		udp6,
		tcpFlow("2001:db8:6::4", "2001:db8:1::10", 40000, 21), // not through the prefix
	}
	flows4 := []conntrack.Flow{
		tcpFlow("203.0.113.238", "198.51.100.2", 40021, 21),
		tcpFlow("203.0.113.239", "198.51.100.2", 40022, 21),
		udp4,
		tcpFlow("198.51.100.7", "198.51.100.2", 40000, 21),
	}
	in4 := func(a netip.Addr) bool { return a.Is4() }
	host6 := func(a netip.Addr) bool { return a.Is6() && !tc.cfg.Prefix.Contains(a) }
	tests := []struct {
		name, host, want string
	}{
		{"6 to 4", "2001:db8:6::2", "203.0.113.238"},
		{"6 to 4 other host", "2001:db8:6::3", "203.0.113.239"},
		{"6 to 4 no flows through tayga", "2001:db8:6::4", ""},
		{"4 to 6", "203.0.113.238", "2001:db8:6::2"},
		{"4 to 6 unknown", "203.0.113.240", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := netip.MustParseAddr(tt.host)
			var got netip.Addr
			var ok bool
			if h.Is6() {
				got, ok = join(flows6, h, tc.extract, flows4, identity4, in4)
			} else {
				got, ok = join(flows4, h, identity4, flows6, tc.extract, host6)
			}
			if tt.want == "" {
				if ok {
					t.Errorf("join = %v, want none", got)
				}
				return
			}
			if !ok || got != netip.MustParseAddr(tt.want) {
				t.Errorf("join = %v, %v; want %s", got, ok, tt.want)
			}
		})
	}
	// Two different answers: none.
	clash := append(flows4[:len(flows4):len(flows4)], tcpFlow("203.0.113.250", "198.51.100.5", 5353, 53))
	clash[len(clash)-1].TupleOrig.Proto.Protocol = protoUDP
	if got, ok := join(flows6, netip.MustParseAddr("2001:db8:6::2"), tc.extract, clash, identity4, in4); ok {
		t.Errorf("join with two candidates = %v, want none", got)
	}
}
