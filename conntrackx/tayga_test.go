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
