package rules

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeRuleset is a keeperKernel whose table an operator can flush.
type fakeRuleset struct {
	mu       sync.Mutex
	there    bool
	failNext int // installs that fail before one succeeds
	installs int
	events   chan struct{}
}

func (f *fakeRuleset) install() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNext > 0 {
		f.failNext--
		return errors.New("EBUSY")
	}
	f.there = true
	f.installs++
	return nil
}

func (f *fakeRuleset) remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.there = false
	return nil
}

func (f *fakeRuleset) present() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.there, nil
}

func (f *fakeRuleset) watch(ctx context.Context) (<-chan struct{}, error) {
	return f.events, nil
}

// flush is "nft flush ruleset": the table goes, the monitor tells.
func (f *fakeRuleset) flush() {
	f.mu.Lock()
	f.there = false
	f.mu.Unlock()
	f.events <- struct{}{}
}

// waitFor polls cond until it holds or the test has waited too long.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestKeeperRestoresAfterFlush(t *testing.T) {
	f := &fakeRuleset{events: make(chan struct{})}
	// A poll period far beyond the test: only the monitor's events can
	// make it restore.
	k := &Keeper{k: f, table: "ftpalg", poll: time.Hour, retry: time.Millisecond}
	if err := k.Install(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var events []KeeperEvent
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.Run(ctx, func(e KeeperEvent) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		})
	}()
	if !k.Installed() || k.Restores() != 0 {
		t.Fatalf("after Install: installed %v, restores %d", k.Installed(), k.Restores())
	}

	// The first restore fails: Run reports it, says the rules are not
	// installed, and tries again without waiting for another event.
	f.mu.Lock()
	f.failNext = 1
	f.mu.Unlock()
	f.flush()
	waitFor(t, "the restore", func() bool { return k.Restores() == 1 })
	if !k.Installed() {
		t.Error("restored, but Installed is false")
	}
	f.flush()
	waitFor(t, "the second restore", func() bool { return k.Restores() == 2 })
	cancel()
	<-done

	mu.Lock()
	defer mu.Unlock()
	var restored, failed int
	for _, e := range events {
		if e.Restored {
			restored++
		}
		if e.Err != nil {
			failed++
		}
	}
	if restored != 2 || failed != 1 {
		t.Errorf("events %+v: want 2 restores and 1 error", events)
	}
	if f.installs != 3 {
		t.Errorf("%d installs, want 3 (Install and two restores)", f.installs)
	}
}

// TestKeeperInstalledFalseWhileGone: while the table is gone and cannot be
// restored, Installed says so.
func TestKeeperInstalledFalseWhileGone(t *testing.T) {
	f := &fakeRuleset{events: make(chan struct{})}
	k := &Keeper{k: f, table: "ftpalg", poll: time.Hour, retry: time.Hour}
	if err := k.Install(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go k.Run(ctx, nil)
	f.mu.Lock()
	f.failNext = 1
	f.mu.Unlock()
	f.flush()
	waitFor(t, "Installed false", func() bool { return !k.Installed() })
	if k.Restores() != 0 {
		t.Errorf("restores %d, want 0", k.Restores())
	}
}

func TestRuleCounts(t *testing.T) {
	p, err := newPlan(&ShippedTayga)
	if err != nil {
		t.Fatal(err)
	}
	got := p.ruleCounts()
	// The divert chain: the shifted connections' rule (ShippedTayga is
	// fail-open), then one rule per direction for the established
	// connections and the counter of what is left; the track chain.
	if got[familyIP]["prerouting"] != 2 || got[familyIP][divertChain] != 4 || got[familyIP][trackChain] != 2 || got[familyIP][helperChain] != 2 ||
		len(got[familyIP6]) != 1 || got[familyIP6][helperChain] != 2 {
		t.Errorf("ruleCounts = %v", got)
	}
}
