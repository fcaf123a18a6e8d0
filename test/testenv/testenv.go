// Package testenv is what the project's integration tests share: the check
// for root and tools (a skip, or a failure when CI is set), network
// namespaces made for one test, and polling instead of sleeping.
//
// Only tests import it.
package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// CI reports whether the CI environment variable is set: then a test that
// cannot run here fails instead of skipping.
func CI() bool { return os.Getenv("CI") != "" }

// SkipOrFail skips t with why, or fails it when CI is set.
func SkipOrFail(t testing.TB, why string) {
	t.Helper()
	if CI() {
		t.Fatal(why)
	}
	t.Skip(why)
}

// NeedRoot skips (or under CI fails) a test that is not run as root or
// does not find one of tools in PATH.
func NeedRoot(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root")
	}
	NeedTools(t, tools...)
}

// NeedTools skips (or under CI fails) a test that does not find one of
// tools in PATH.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			SkipOrFail(t, "needs "+tool)
		}
	}
}

// Run runs a command and returns its combined output; it fails t if the
// command fails.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Poll is the interval of Eventually.
const Poll = 10 * time.Millisecond

// Eventually calls cond every Poll until it returns true, and fails t with
// what if that has not happened within timeout. The timeout only bounds a
// hang; no test depends on how soon cond holds.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not after %v: %s", timeout, what)
		}
		time.Sleep(Poll)
	}
}
