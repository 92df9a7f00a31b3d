package memory

// Returning memory after a burst. A gateway takes its connections in
// bursts and then holds them, mostly idle. During a burst the heap grows
// by the handshakes' garbage (GOGC=200 lets it reach three times what is
// live); afterwards nothing allocates, so no collection runs, and the
// runtime's background scavenger hands the pages back to the kernel at
// its pace of about 1 % of a core, for seconds to minutes. Once a burst
// has ended, the engine does that at once: two collections and one full
// scavenge, which costs a few milliseconds for tens of thousands of held
// sessions and leaves the resident size close to what is live, and the
// process asleep.
//
// A burst is over when the sessions stop coming and going, not only when
// they stop coming: sessions that end free their buffers and TLS state,
// and with no new client nothing would allocate, so nothing would collect
// them until the runtime's forced collection two minutes later, and the
// scavenger would trickle the pages back after that (a burst of 5,000
// held sessions closed at once left 79 MB resident of a 15 MB idle
// process; a client that flooded a session left 300 MB). And it is over
// when arrivals fall well below the burst's rate, not only to none: a
// trickle of new clients after a burst allocates too little for the
// collector's pace and would hold the burst's heap just as long.
//
// Two collections, because the buffers of ended connections go back to
// sync.Pools (gnet's ring buffers and byte slices, bytebufferpool): the
// first collection moves a pool's contents to its victim cache, the
// second frees them. debug.FreeOSMemory alone runs one.

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// Tuning of Keeper. CheckEvery and Burst are exported for the engine's
// ticker and tests.
const (
	// CheckEvery is how often the ticker looks: it is awake anyway
	// while clients arrive, and wakes this often while a release is
	// pending (see pending).
	CheckEvery = 50 * time.Millisecond
	// memQuiet is how long the sessions must have stayed quiet, and
	// allocation below memQuietAlloc per check, for the burst to count as
	// over. Quiet is no session that began or ended in a check, or, after
	// a burst, at most 1/memQuietShare of the most a check saw since the
	// last release (a trickle after a burst).
	memQuiet      = 100 * time.Millisecond
	memQuietAlloc = 1 << 20
	memQuietShare = 16
	// Burst is how much must have been allocated since the last
	// release for a release to be worth its collection.
	Burst = 32 << 20
	// After a release, one for sessions that ended without a burst of
	// allocation waits memEndedGap; and unless half the sessions the last
	// release saw have ended, memCostRatio times the CPU time the last
	// release took (its collections and scavenge), so that sessions
	// ending one by one among many held ones cost at most 1/memCostRatio
	// of a core in collections.
	memEndedGap  = time.Second
	memCostRatio = 100
)

// Keeper decides when a burst has ended and then releases memory. It
// lives on one goroutine (the engine's ticker) and is used only there;
// the release it starts runs on a goroutine of its own.
type Keeper struct {
	sample []metrics.Sample
	// allocated is allocs; tests may replace it (a test binary's
	// allocation is every parallel test's).
	allocated    func() uint64
	lastCheck    time.Time
	lastAccepted uint64
	lastEnded    uint64
	lastAllocs   uint64
	quietSince   time.Time
	// peak is the most sessions begun or ended in one check since the
	// last release.
	peak uint64
	// releasedAt is the allocation count at the last release, endedAt
	// the sessions ended by then and heldAt those open then.
	releasedAt, endedAt, heldAt uint64
	// free releases the memory: two collections and a scavenge (see
	// FreeOSMemory) unless NewKeeper was given another. It runs on a goroutine of its own (a
	// collection of a large heap takes a while, and the ticker must go
	// on); releasing is set meanwhile, and cost is then the CPU time the
	// release took and doneAt when it ended (UnixNano). cpu is used by
	// that goroutine only, one release at a time.
	free      func()
	releasing atomic.Bool
	cost      atomic.Int64
	doneAt    atomic.Int64
	cpu       []metrics.Sample
}

// NewKeeper makes the keeper of the goroutine that calls it, at now.
// free releases the memory (nil: FreeOSMemory); it runs on a goroutine of
// its own, one release at a time.
func NewKeeper(now time.Time, free func()) *Keeper {
	if free == nil {
		free = FreeOSMemory
	}
	k := &Keeper{
		sample:     []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}},
		lastCheck:  now,
		quietSince: now,
		free:       free,
		cpu: []metrics.Sample{
			{Name: "/cpu/classes/gc/total:cpu-seconds"},
			{Name: "/cpu/classes/scavenge/total:cpu-seconds"},
		},
	}
	k.allocated = k.allocs
	k.releasedAt = k.allocated()
	k.lastAllocs = k.releasedAt
	return k
}

// FreeOSMemory collects twice, so that what sits in sync.Pools (the
// buffers of ended connections) is freed too, and returns every free page
// to the kernel. Any goroutine.
func FreeOSMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// allocs is the bytes allocated on the heap since the process started.
func (k *Keeper) allocs() uint64 { return readUint64(k.sample) }

// readUint64 reads the one runtime metric of sample; 0 if it is not a
// uint64 (a metric this runtime does not have).
func readUint64(sample []metrics.Sample) uint64 {
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return sample[0].Value.Uint64()
}

// Pending reports whether a burst may still be released: enough was
// allocated since the last release, or sessions ended since. The ticker
// wakes every CheckEvery while it is, so that the release follows the
// end of a burst closely. Runs on the keeper's goroutine.
func (k *Keeper) Pending() bool {
	return k.lastAllocs-k.releasedAt >= Burst || k.lastEnded != k.endedAt
}

// check is Sessions for a caller that knows only the clients accepted so
// far: sessions that end count as none. Runs on the keeper's goroutine.
func (k *Keeper) check(now time.Time, accepted uint64) bool {
	return k.Sessions(now, accepted, int64(accepted-k.lastEnded))
}

// Sessions runs at most every CheckEvery with the clients accepted so
// far and the sessions open now, and releases memory once the sessions
// and the allocation have been quiet for memQuiet after a burst that
// allocated Burst, or after sessions ended. It reports whether it
// started a release. Runs on the keeper's goroutine.
func (k *Keeper) Sessions(now time.Time, accepted uint64, active int64) bool {
	if now.Sub(k.lastCheck) < CheckEvery {
		return false
	}
	k.lastCheck = now
	a := k.allocated()
	ended := k.lastEnded
	if e := accepted - uint64(max(active, 0)); e > ended && e <= accepted {
		ended = e
	}
	moved := accepted - k.lastAccepted + ended - k.lastEnded
	busy := a-k.lastAllocs > memQuietAlloc || moved > k.peak/memQuietShare
	k.peak = max(k.peak, moved)
	k.lastAccepted, k.lastEnded, k.lastAllocs = accepted, ended, a
	if busy {
		k.quietSince = now
		return false
	}
	if now.Sub(k.quietSince) < memQuiet || k.releasing.Load() {
		return false
	}
	burst := a-k.releasedAt >= Burst
	if !burst {
		wait := memEndedGap
		if ended-k.endedAt < (k.heldAt+1)/2 {
			wait = max(wait, memCostRatio*time.Duration(k.cost.Load()))
		}
		if ended == k.endedAt || now.Sub(time.Unix(0, k.doneAt.Load())) < wait {
			return false
		}
	}
	k.releasedAt, k.endedAt, k.heldAt, k.peak = a, ended, accepted-ended, 0
	k.releasing.Store(true)
	go k.release()
	return true
}

// release runs free and records what it cost. It runs on a goroutine of
// its own, one at a time (releasing).
func (k *Keeper) release() {
	before := k.cpuSeconds()
	k.free()
	k.cost.Store(int64((k.cpuSeconds() - before) * float64(time.Second)))
	k.doneAt.Store(time.Now().UnixNano())
	k.releasing.Store(false)
}

// cpuSeconds is the CPU time the runtime has spent collecting and
// scavenging, as its metrics estimate it (they are brought up to date by
// each collection).
func (k *Keeper) cpuSeconds() float64 {
	metrics.Read(k.cpu)
	var s float64
	for _, v := range k.cpu {
		if v.Value.Kind() == metrics.KindFloat64 {
			s += v.Value.Float64()
		}
	}
	return s
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
	// The next sentinel first: whoever learns of this cycle (a test)
	// may collect again at once, and that collection must find it.
	p.arm()
	if p.observed != nil {
		p.observed(pct)
	}
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
