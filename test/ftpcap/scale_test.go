package ftpcap

import (
	"bytes"
	"testing"
)

// The scale capture is deterministic, and its checker takes what was sent
// for what was sent (every connection untouched, every SYN counted) and
// refuses it as a translation.
func TestScaleCapture(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		testScaleCapture(t, ScaleConfig{Conns: 200, SYNs: 1000, Seed: 3, V6: v6})
	}
}

func testScaleCapture(t *testing.T, cfg ScaleConfig) {
	var a, b bytes.Buffer
	if err := WriteScale(&a, cfg); err != nil {
		t.Fatal(err)
	}
	if err := WriteScale(&b, cfg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two captures of the same config differ")
	}
	rep, err := CheckScale(bytes.NewReader(a.Bytes()), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := ScalePackets*cfg.Conns + cfg.SYNs; rep.Packets != want || rep.SYNs != cfg.SYNs || rep.Untouched != cfg.Conns || rep.NProblem != 0 {
		t.Errorf("%v; want %d packets, every connection untouched", rep, want)
	}
	if rep.Translated != 0 || rep.Complete != 0 || rep.OK() {
		t.Errorf("the input passes for a translation: %v", rep)
	}
	// Client i's address maps back to i.
	for _, i := range []int{0, 1, 59999, 60000, 123456} {
		c, _, _, _ := ScaleConn(i)
		if j, ok := scaleIndex(scaleLeg(c, cfg.V6)); !ok || j != i {
			t.Errorf("connection %d: client %v maps back to %d, %v", i, c, j, ok)
		}
	}
}
