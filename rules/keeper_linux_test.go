//go:build linux

package rules

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The keeper needs a namespace fd when any thread of the process is in
// another namespace than the caller's, not only the thread group leader.
func TestSameNetNS(t *testing.T) {
	a := unix.Stat_t{Dev: 4, Ino: 100}
	b := unix.Stat_t{Dev: 4, Ino: 200}
	for _, c := range []struct {
		others []unix.Stat_t
		want   bool
	}{
		{nil, true},
		{[]unix.Stat_t{a, a, a}, true},
		{[]unix.Stat_t{a, b, a}, false}, // the leader moved with the caller, another thread did not
		{[]unix.Stat_t{b}, false},
	} {
		if got := sameNetNS(a, c.others); got != c.want {
			t.Errorf("sameNetNS(%v, %v) = %v, want %v", a.Ino, c.others, got, c.want)
		}
	}
}
