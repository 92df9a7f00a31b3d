package memory

import (
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"
)

// TestMemKeeper: memory is released once, after a burst that allocated
// enough has been quiet (no client, little allocation) for memQuiet; not
// while clients arrive, not without a burst, not twice for one burst.
func TestMemKeeper(t *testing.T) {
	t0 := time.Now()
	var freed atomic.Int32
	k := NewKeeper(t0, func() { freed.Add(1) })
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	// No burst yet: quiet, but nothing to release.
	for ms := 100; ms <= 1000; ms += 100 {
		if k.check(at(ms), 0) {
			t.Fatalf("released at %dms without a burst", ms)
		}
	}
	// A burst: clients arrive and memory is allocated.
	sink := make([]byte, Burst+(8<<20))
	accepted := uint64(0)
	for ms := 1100; ms <= 2000; ms += 100 {
		accepted += 50
		if k.check(at(ms), accepted) {
			t.Fatalf("released at %dms while clients arrived", ms)
		}
	}
	// Checks closer together than CheckEvery are skipped.
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

// fakeKeeper is a keeper whose allocation count is the test's and whose
// release is counted; release waits for the release goroutine.
type fakeKeeper struct {
	*Keeper
	alloc atomic.Uint64
	freed atomic.Int32
	t0    time.Time
}

func newFakeKeeper() *fakeKeeper {
	f := &fakeKeeper{t0: time.Now()}
	f.Keeper = NewKeeper(f.t0, nil)
	f.allocated = f.alloc.Load
	f.releasedAt, f.lastAllocs = 0, 0
	f.free = func() { f.freed.Add(1) }
	return f
}

// at is t0 plus ms milliseconds.
func (f *fakeKeeper) at(ms int) time.Time { return f.t0.Add(time.Duration(ms) * time.Millisecond) }

// settle waits for the release goroutine started by the last check.
func (f *fakeKeeper) settle() {
	for f.releasing.Load() {
		runtime.Gosched()
	}
}

// TestMemKeeperSessionsEnded: sessions that end with no new client and
// no allocation after them are released once (a burst of held sessions
// closed at once kept 79 MB resident of a 15 MB process for minutes when
// only arrivals counted); sessions ending one by one among many held ones
// wait for the cost of the last release.
func TestMemKeeperSessionsEnded(t *testing.T) {
	f := newFakeKeeper()
	// A burst: 1000 clients arrive and stay, allocating 40 MiB; released
	// once it is quiet, with the sessions held.
	ms, accepted := 0, uint64(0)
	for ; ms <= 1000; ms += 100 {
		accepted += 100
		f.alloc.Add(4 << 20)
		if f.Sessions(f.at(ms), accepted, int64(accepted)) {
			t.Fatalf("released at %dms while clients arrived", ms)
		}
	}
	releases := 0
	for ; ms <= 2000; ms += 100 {
		if f.Sessions(f.at(ms), accepted, int64(accepted)) {
			releases++
		}
		f.settle()
	}
	if releases != 1 || f.freed.Load() != 1 {
		t.Fatalf("%d releases after the burst of arrivals, want 1", releases)
	}
	if f.Pending() {
		t.Fatal("pending with nothing allocated and no session ended since the release")
	}
	// The sessions end; nothing arrives and nothing is allocated.
	for ; ms <= 2500; ms += 100 {
		if f.Sessions(f.at(ms), accepted, int64(accepted)-int64(ms-2000)*2) {
			t.Fatalf("released at %dms while sessions ended", ms)
		}
	}
	// 1000 of 1000 ended: released after memQuiet, memEndedGap after the
	// first release, whatever that cost.
	f.cost.Store(int64(time.Second))
	f.doneAt.Store(f.at(2000).UnixNano())
	releasedAt := -1
	for ; ms <= 6000; ms += 100 {
		if !f.Pending() && releasedAt < 0 {
			t.Fatalf("not pending at %dms with sessions ended since the release", ms)
		}
		if f.Sessions(f.at(ms), accepted, 0) {
			if releasedAt >= 0 {
				t.Fatalf("released twice for one end (%dms and %dms)", releasedAt, ms)
			}
			releasedAt = ms
		}
		f.settle()
	}
	if releasedAt < 0 || releasedAt > 2000+int((memEndedGap+memQuiet)/time.Millisecond)+200 {
		t.Fatalf("released at %dms after the sessions ended at 2500ms, want within %v", releasedAt, memEndedGap+memQuiet)
	}

	// 1000 held again, released; then they end one by one: each end
	// waits memCostRatio times the last release's cost (here 10 ms: 1 s).
	accepted += 1000
	f.alloc.Add(Burst)
	ms += 100
	for ; ms <= 8000; ms += 100 {
		f.Sessions(f.at(ms), accepted, 1000)
		f.settle()
	}
	if f.freed.Load() != 3 {
		t.Fatalf("%d releases, want 3", f.freed.Load())
	}
	f.cost.Store(int64(10 * time.Second / memCostRatio))
	f.doneAt.Store(f.at(8000).UnixNano())
	active := int64(1000)
	released := []int{}
	for ; ms <= 30000; ms += 100 {
		if ms%1000 == 0 {
			active-- // one session ends each second
		}
		if f.Sessions(f.at(ms), accepted, active) {
			released = append(released, ms)
			f.settle() // it measured its own cost: the test's stands
			f.cost.Store(int64(10 * time.Second / memCostRatio))
			f.doneAt.Store(f.at(ms).UnixNano())
		}
	}
	if len(released) != 2 || released[0] < 18000 || released[1]-released[0] < 10000 {
		t.Fatalf("sessions ending one by one released at %v ms, want every 10 s from 18000", released)
	}
}

// TestMemKeeperTrickle: after a burst, a trickle of clients far below its
// rate counts as quiet and the burst is released; the trickle itself is
// load, and is never released while it goes on.
func TestMemKeeperTrickle(t *testing.T) {
	f := newFakeKeeper()
	ms, accepted, ended := 0, uint64(0), uint64(0)
	step := func(arrive uint64) bool {
		ms += 50
		accepted += arrive
		ended += arrive // short sessions: each ends in its check
		f.alloc.Add(arrive * 30 << 10)
		r := f.Sessions(f.at(ms), accepted, int64(accepted-ended))
		f.settle()
		return r
	}
	for range 40 { // 2 s of 1000 clients per second
		if step(50) {
			t.Fatalf("released at %dms during the burst", ms)
		}
	}
	released := -1
	for range 40 { // 2 s of one client per check, 20 per second
		if step(1) && released < 0 {
			released = ms
		}
	}
	if released < 0 || released > 2000+int(memQuiet/time.Millisecond)+100 {
		t.Fatalf("burst released at %dms, want within %v of its end at 2000ms", released, memQuiet)
	}
	if f.freed.Load() != 1 {
		t.Fatalf("%d releases during the trickle, want 1", f.freed.Load())
	}
	for range 400 { // the trickle goes on
		step(1)
	}
	if f.freed.Load() != 1 {
		t.Fatalf("%d releases during a steady trickle, want 1", f.freed.Load())
	}
}

// TestFreeOSMemoryPools: a buffer dropped into a sync.Pool (where gnet
// and bytebufferpool keep the buffers of ended connections) survives one
// collection in the pool's victim cache; freeOSMemory frees it.
func TestFreeOSMemoryPools(t *testing.T) {
	var pool sync.Pool
	put := func() weak.Pointer[[8 << 20]byte] {
		b := new([8 << 20]byte)
		pool.Put(b)
		return weak.Make(b)
	}
	w := put()
	debug.FreeOSMemory()
	if w.Value() == nil {
		t.Log("one collection freed a pooled buffer: this runtime needs no second")
	}
	w = put()
	FreeOSMemory()
	if w.Value() != nil {
		t.Fatal("a pooled buffer survived freeOSMemory")
	}
	runtime.KeepAlive(&pool)
}
