package engine

import (
	"runtime"
	"slices"
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

func TestGCPacerPercent(t *testing.T) {
	const mib = 1 << 20
	p := &GCPacer{floor: 64 * mib, base: 200, ceil: 1600}
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 1600},        // nothing measured yet: the ceiling
		{1 * mib, 1600},  // 6300 would put the runtime's minimum above the floor
		{4 * mib, 1500},  // 4 × 16 = 64
		{16 * mib, 300},  // 16 × 4 = 64
		{21 * mib, 204},  // just above base
		{32 * mib, 200},  // 100 would be below base
		{64 * mib, 200},  // at the floor
		{900 * mib, 200}, // held sessions: base
	} {
		if got := p.percent(c.live); got != c.want {
			t.Errorf("percent(%d MiB) = %d, want %d", c.live/mib, got, c.want)
		}
		// The goal the runtime would use stays at or above the floor
		// whenever the ceiling allows, and never far above it.
		goal := max(c.live*uint64(100+p.percent(c.live))/100, heapMinimum*uint64(p.percent(c.live))/100)
		if c.live < p.floor && goal < p.floor-p.floor/16 {
			t.Errorf("live %d MiB: goal %d MiB is below the floor", c.live/mib, goal/mib)
		}
	}
}

func TestGCPacerApplyHysteresis(t *testing.T) {
	var set []int
	p := &GCPacer{set: func(v int) int { set = append(set, v); return 0 }}
	for _, v := range []int{800, 850, 750, 1000, 1000, 200} {
		p.apply(v)
	}
	if want := []int{800, 1000, 200}; !slices.Equal(set, want) {
		t.Errorf("set %v, want %v", set, want)
	}
}

// TestGCPacerFollowsLiveHeap runs real collections: after each one the
// pacer reads the live heap and sets the percentage for it. The live heap
// is the fake's (a test binary's is every parallel test's); the reader of
// the real one is checked on its own.
func TestGCPacerFollowsLiveHeap(t *testing.T) {
	const mib = 1 << 20
	var set, live atomic.Int64
	live.Store(900 * mib)
	p := newGCPacer(64*mib, 200, func(v int) int { set.Store(int64(v)); return 100 })
	p.liveHeap = func() uint64 { return uint64(live.Load()) }
	cycles := make(chan int, 16)
	p.observed = func(pct int) {
		select { // never block the runtime's cleanup goroutine
		case cycles <- pct:
		default:
		}
	}
	defer p.Stop()
	// collect runs one collection and returns the percentage the pacer
	// computed after it.
	collect := func() int {
		t.Helper()
		for len(cycles) > 0 {
			<-cycles
		}
		runtime.GC()
		select {
		case pct := <-cycles:
			return pct
		case <-time.After(20 * time.Second): // a bound for a broken pacer, not a sync
			t.Fatal("no cleanup ran after a collection")
			return 0
		}
	}
	for _, c := range []struct {
		live int64
		want int
	}{{900 * mib, 200}, {4 * mib, 1500}, {16 * mib, 300}, {1 * mib, 1600}, {300 * mib, 200}} {
		live.Store(c.live)
		if pct := collect(); pct != c.want || set.Load() != int64(c.want) {
			t.Errorf("live %d MiB: computed %d, set %d; want %d", c.live/mib, pct, set.Load(), c.want)
		}
	}

	// The real reader sees what is held.
	hold := make([]*[mib]byte, 64)
	for i := range hold {
		hold[i] = new([mib]byte)
	}
	runtime.GC()
	if got := p.live(); got < 64*mib {
		t.Errorf("live heap %d MiB with 64 MiB held", got/mib)
	}
	runtime.KeepAlive(hold)
}
