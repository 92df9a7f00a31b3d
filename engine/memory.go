package engine

// Returning memory after a burst. A gateway takes its connections in
// bursts and then holds them, mostly idle. During a burst the heap grows
// by the handshakes' garbage (GOGC=200 lets it reach three times what is
// live); afterwards nothing allocates, so no collection runs, and the
// runtime's background scavenger hands the pages back to the kernel at
// its pace of about 1 % of a core, for seconds to minutes. Once a burst
// has ended, the engine does that at once: one collection and one full
// scavenge (debug.FreeOSMemory), which costs a few milliseconds for tens
// of thousands of held sessions and leaves the resident size close to
// what is live, and the process asleep.

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// Tuning of memKeeper.
const (
	// memCheckEvery is how often the ticker looks: it is awake anyway
	// while clients arrive, and wakes this often while a release is
	// pending (see pending).
	memCheckEvery = 50 * time.Millisecond
	// memQuiet is how long no client may have arrived, and allocation
	// must have stayed below memQuietAlloc per check, for the burst to
	// count as over.
	memQuiet      = 100 * time.Millisecond
	memQuietAlloc = 1 << 20
	// memBurst is how much must have been allocated since the last
	// release for a release to be worth its collection.
	memBurst = 32 << 20
)

// memKeeper decides when a burst has ended. It lives on the ticker
// goroutine (tickLoops) and is used only there.
type memKeeper struct {
	sample       []metrics.Sample
	lastCheck    time.Time
	lastAccepted uint64
	lastAllocs   uint64
	quietSince   time.Time
	// releasedAt is the allocation count at the last release.
	releasedAt uint64
	// free releases the memory: debug.FreeOSMemory; tests may count. It
	// runs on a goroutine of its own (a collection of a large heap takes
	// a while, and the ticker must go on); releasing is set meanwhile.
	free      func()
	releasing atomic.Bool
}

func newMemKeeper(now time.Time) *memKeeper {
	k := &memKeeper{
		sample:     []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}},
		lastCheck:  now,
		quietSince: now,
		free:       debug.FreeOSMemory,
	}
	k.releasedAt = k.allocs()
	k.lastAllocs = k.releasedAt
	return k
}

// allocs is the bytes allocated on the heap since the process started.
func (k *memKeeper) allocs() uint64 { return readUint64(k.sample) }

// readUint64 reads the one runtime metric of sample; 0 if it is not a
// uint64 (a metric this runtime does not have).
func readUint64(sample []metrics.Sample) uint64 {
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return sample[0].Value.Uint64()
}

// pending reports whether a burst may still be released: enough was
// allocated since the last release. The ticker wakes every memCheckEvery
// while it is, so that the release follows the end of a burst closely.
// Runs on the ticker goroutine.
func (k *memKeeper) pending() bool { return k.lastAllocs-k.releasedAt >= memBurst }

// check runs at most every memCheckEvery with the clients accepted so far
// and releases memory once a burst that allocated memBurst has been quiet
// for memQuiet. It reports whether it released. Runs on the ticker
// goroutine.
func (k *memKeeper) check(now time.Time, accepted uint64) bool {
	if now.Sub(k.lastCheck) < memCheckEvery {
		return false
	}
	k.lastCheck = now
	a := k.allocs()
	busy := accepted != k.lastAccepted || a-k.lastAllocs > memQuietAlloc
	k.lastAccepted, k.lastAllocs = accepted, a
	if busy {
		k.quietSince = now
		return false
	}
	if now.Sub(k.quietSince) < memQuiet || a-k.releasedAt < memBurst || k.releasing.Load() {
		return false
	}
	k.releasedAt, k.lastAllocs = a, a
	k.releasing.Store(true)
	go func() {
		defer k.releasing.Store(false)
		k.free()
	}()
	return true
}

// The collector's pace. With GOGC fixed, a collection runs whenever the
// heap has grown by GOGC % of what was live after the last one: while a
// proxy carries a few dozen sessions that is every few megabytes, a few
// hundred new connections (each handshake leaves ~30 KiB of garbage), and
// every cycle has a fixed cost (its phases, the sweep, the assists it asks
// of the allocating goroutines) however little is live. A GCPacer raises
// GOGC while little is live, so that a cycle comes at most every floor
// bytes of heap growth, and gives base back as the live heap grows: with
// tens of thousands of held sessions the heap is large anyway and base
// keeps it within (1 + base/100) of what is live.
//
// It runs after each collection, on the runtime's cleanup goroutine (a
// cleanup attached to an object that dies in every cycle), and so costs
// nothing while nothing allocates.

// GCPacer sets the collector's percentage after each collection from the
// live heap: the larger of base and what lets the heap reach floor before
// the next cycle. Build it with NewGCPacer.
type GCPacer struct {
	floor  uint64
	base   int
	ceil   int
	sample []metrics.Sample
	// set is debug.SetGCPercent; tests may record.
	set func(int) int
	// last is the percentage set last; it is used by NewGCPacer and then
	// only on the cleanup goroutine.
	last    int
	stopped atomic.Bool
	// observed, if set (tests), is given each cycle's percentage.
	observed func(pct int)
	// liveHeap is live; tests may replace it (the live heap of a test
	// binary is every parallel test's).
	liveHeap func() uint64
}

// gcSentinel is the object whose death marks a collection. It holds a
// pointer so that it is not tiny-allocated with others (a tiny block
// outlives its parts).
type gcSentinel struct{ _ *GCPacer }

// heapMinimum is the Go runtime's smallest heap goal at GOGC=100 (its
// defaultHeapMinimum, 4 MiB); the runtime scales it with GOGC, so GOGC
// must stay at or below floor/heapMinimum×100 for floor to be the goal.
const heapMinimum = 4 << 20

// NewGCPacer starts pacing the collector: GOGC is at least base, and high
// enough that the heap may reach floor bytes between collections. Safe to
// call once per process, from any goroutine; Stop ends it.
func NewGCPacer(floor uint64, base int) *GCPacer {
	return newGCPacer(floor, base, debug.SetGCPercent)
}

// newGCPacer is NewGCPacer with the setter of the percentage.
func newGCPacer(floor uint64, base int, set func(int) int) *GCPacer {
	p := &GCPacer{
		floor:  floor,
		base:   base,
		ceil:   max(base, int(floor*100/heapMinimum)),
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}},
		set:    set,
	}
	p.liveHeap = p.live
	p.apply(p.percent(p.liveHeap()))
	p.arm()
	return p
}

// Stop ends the pacing at the next collection and sets base. Safe from
// any goroutine.
func (p *GCPacer) Stop() {
	p.stopped.Store(true)
	p.set(p.base)
}

// arm attaches a cleanup to a new sentinel: it runs after the collection
// that finds the sentinel dead, that is the next one.
func (p *GCPacer) arm() {
	runtime.AddCleanup(new(gcSentinel), func(p *GCPacer) { p.collected() }, p)
}

// collected runs after each collection, on the runtime's cleanup
// goroutine.
func (p *GCPacer) collected() {
	if p.stopped.Load() {
		return
	}
	pct := p.percent(p.liveHeap())
	p.apply(pct)
	if p.observed != nil {
		p.observed(pct)
	}
	p.arm()
}

// live is the heap the last collection found live, in bytes.
func (p *GCPacer) live() uint64 { return readUint64(p.sample) }

// percent is the GOGC for a live heap of live bytes: the next goal is
// live×(1+GOGC/100), so floor/live−1 (in per cent) reaches floor; never
// below base, nor above what keeps the runtime's scaled heap minimum
// within floor.
func (p *GCPacer) percent(live uint64) int {
	if live == 0 {
		return p.ceil
	}
	pct := p.base
	if live < p.floor {
		pct = max(pct, int((p.floor-live)*100/live))
	}
	return min(pct, p.ceil)
}

// apply sets pct unless it is within an eighth of what is set already
// (so that a steady heap does not reset the pacer every cycle).
func (p *GCPacer) apply(pct int) {
	if d := pct - p.last; p.last != 0 && d < p.last/8 && -d < p.last/8 {
		return
	}
	p.last = pct
	p.set(pct)
}
