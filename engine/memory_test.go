package engine

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestMemKeeper: memory is released once, after a burst that allocated
// enough has been quiet (no client, little allocation) for memQuiet; not
// while clients arrive, not without a burst, not twice for one burst.
func TestMemKeeper(t *testing.T) {
	t0 := time.Now()
	k := newMemKeeper(t0)
	var freed atomic.Int32
	k.free = func() { freed.Add(1) }
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	// No burst yet: quiet, but nothing to release.
	for ms := 100; ms <= 1000; ms += 100 {
		if k.check(at(ms), 0) {
			t.Fatalf("released at %dms without a burst", ms)
		}
	}
	// A burst: clients arrive and memory is allocated.
	sink := make([]byte, memBurst+(8<<20))
	accepted := uint64(0)
	for ms := 1100; ms <= 2000; ms += 100 {
		accepted += 50
		if k.check(at(ms), accepted) {
			t.Fatalf("released at %dms while clients arrived", ms)
		}
	}
	// Checks closer together than memCheckEvery are skipped.
	if k.check(at(2050), accepted) {
		t.Fatal("a check 50ms after the last one released")
	}
	// Quiet: released once memQuiet has passed, then not again.
	released := -1
	for ms := 2100; ms <= 3500; ms += 100 {
		if k.check(at(ms), accepted) {
			if released >= 0 {
				t.Fatalf("released twice for one burst (%dms and %dms)", released, ms)
			}
			released = ms
		}
	}
	for k.releasing.Load() {
		runtime.Gosched() // the release runs on its own goroutine
	}
	if released < 2000+int(memQuiet/time.Millisecond) || freed.Load() != 1 {
		t.Fatalf("released at %dms (%d times), want once, at or after %v of quiet", released, freed.Load(), memQuiet)
	}
	runtime.KeepAlive(sink)
}
