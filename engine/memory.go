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
func (k *memKeeper) allocs() uint64 {
	metrics.Read(k.sample)
	if k.sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return k.sample[0].Value.Uint64()
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
