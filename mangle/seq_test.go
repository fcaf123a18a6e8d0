package mangle

import (
	"strings"
	"testing"
)

// The replacements of a history's regions live side by side in one
// buffer that grows through the size classes and is compacted when the
// oldest regions are forgotten: a retransmission over any region still
// comes out with that region's bytes.
func TestHistoryBytes(t *testing.T) {
	var p pools
	var h history
	const line = "PASV\r\n" // 6 bytes, at 1000, 1006, 1012, ...
	var want []string
	for i := 0; i < maxRegions; i++ {
		// Replacements of growing length, up to maxRegionBytes.
		b := strings.Repeat(string(rune('a'+i)), 8+i*(maxRegionBytes-8)/(maxRegions-1))
		if !h.add(&p, 1000+uint32(6*i), 6, []byte(b), 0, false) {
			t.Fatalf("region %d not added", i)
		}
		want = append(want, b)
	}
	if h.add(&p, 2000, 6, []byte("x"), 0, false) {
		t.Fatal("a full history took one more region")
	}
	check := func() {
		t.Helper()
		for i := 0; i < h.n; i++ {
			r := &h.regions[i]
			k := int(r.start-1000) / 6
			if got := string(h.appendSent(nil, r.start, []byte(line))); got != want[k] {
				t.Fatalf("region %d (%d bytes) sent as %q, want %q", k, r.nlen, got, want[k])
			}
		}
	}
	check()
	// The receiver acknowledged the first five: they fold into base.
	h.forget(1000 + 6*5)
	if h.n != maxRegions-5 {
		t.Fatalf("%d regions left, want %d", h.n, maxRegions-5)
	}
	check()
	if got, w := h.toSent(1000+6*maxRegions), uint32(1000+6*maxRegions); got-w != uint32(len(strings.Join(want, ""))-6*maxRegions) {
		t.Errorf("end of the regions maps to %d, %d past the original", got, int32(got-w))
	}
	h.forget(1000 + 6*maxRegions)
	if h.n != 0 || len(h.bytes) != 0 {
		t.Errorf("%d regions and %d bytes left after everything was acknowledged", h.n, len(h.bytes))
	}
	p.releaseHistory(&h)
	if h.regions != nil || h.bytes != nil {
		t.Error("buffers kept after release")
	}
	// One small replacement takes the smallest class.
	h.add(&p, 3000, 6, []byte("EPSV 2\r\n"), 0, false)
	if cap(h.bytes) != bytesClasses[0] || cap(h.regions) != regionClasses[0] {
		t.Errorf("one 8-byte replacement took %d bytes and %d regions", cap(h.bytes), cap(h.regions))
	}
}
