package pool

import (
	"sync/atomic"
	"time"
)

// This file holds the facts a Peer counts for metrics: every
// record method is a few atomic additions, safe from any goroutine, takes no
// lock and does not allocate; every read method is safe from any goroutine.
// A peer's counters live as long as the Peer, so a peer carried over a
// configuration reload keeps them.

// HistogramBuckets is the number of finite buckets of a [Histogram].
const HistogramBuckets = 16

// HistogramBounds returns the inclusive upper bounds of a [Histogram]'s
// finite buckets, from 100µs (a loopback TCP connect) to 10s (a handshake
// near proxy_connect_timeout's usual values); a last bucket takes the rest.
func HistogramBounds() [HistogramBuckets]time.Duration {
	return [HistogramBuckets]time.Duration{
		100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
		time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
		10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
		100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
	}
}

// Histogram is a lock-free histogram of durations with the fixed buckets of
// [HistogramBounds]. The zero value is empty and ready. Observe and Snapshot
// are safe from any goroutine; a Snapshot taken while Observe runs may see
// an observation in the count and not yet in the sum, never the reverse
// inconsistency of buckets that disagree with the count.
type Histogram struct {
	counts [HistogramBuckets + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    atomic.Int64                        // nanoseconds
}

// Observe records one duration. It does not allocate or lock.
func (h *Histogram) Observe(d time.Duration) {
	i := 0
	for _, b := range HistogramBounds() {
		if d <= b {
			break
		}
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// HistogramSnapshot is a Histogram read at one time, in Prometheus's terms.
type HistogramSnapshot struct {
	// Count is the number of observations.
	Count uint64
	// Sum is the sum of the observations.
	Sum time.Duration
	// Cumulative[i] is the number of observations <= HistogramBounds()[i].
	Cumulative [HistogramBuckets]uint64
}

// Snapshot reads the histogram.
func (h *Histogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	for i := range h.counts {
		s.Count += h.counts[i].Load()
		if i < HistogramBuckets {
			s.Cumulative[i] = s.Count
		}
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}

// FailureClasses is the number of slots of [Peer.HandshakeFailures]: slot 0
// counts failures of no known class ("other"), each other slot one class of
// failure. The dialer (package pool/dial) gives the slots their meaning, one
// for each tlsbridge.Reason of a failure, and names them: this package
// counts handshakes without knowing TLS. pool/dial does not build when the
// two disagree.
const FailureClasses = 15

// KeyGroups is the number of slots of [Peer.HandshakeGroups]: the key
// exchange groups of completed handshakes. The dialer gives the slots
// their meaning (dial.GroupSlot) and names (dial.GroupSlotName).
const KeyGroups = 7

// peerStats are a Peer's handshake and connect facts.
type peerStats struct {
	selected, failures atomic.Uint64 // times selected; failed attempts
	hsFull, hsResumed  atomic.Uint64
	hsFailed           [FailureClasses]atomic.Uint64
	hsGroups           [KeyGroups]atomic.Uint64
	handshakeTime      Histogram    // successful handshakes
	connectTime        Histogram    // successful TCP connects
	checkedNano        atomic.Int64 // mirror of Peer.checked, for State
	health             peerHealth   // active health checks (health.go)
}

// ObserveConnect records a successful TCP connect that took d. The dialer
// calls it; safe from any goroutine, lock-free, no allocation.
func (p *Peer) ObserveConnect(d time.Duration) { p.stats.connectTime.Observe(d) }

// ObserveHandshake records a completed TLS handshake that took d, resumed or
// full. The dialer calls it; safe from any goroutine, lock-free, no
// allocation.
func (p *Peer) ObserveHandshake(d time.Duration, resumed bool) {
	if resumed {
		p.stats.hsResumed.Add(1)
	} else {
		p.stats.hsFull.Add(1)
	}
	p.stats.handshakeTime.Observe(d)
}

// ObserveHandshakeFailure records a failed TLS handshake (verification
// included) in slot class of [Peer.HandshakeFailures] (dial.FailureClass
// gives a failure's slot; one out of range counts as "other", slot 0). The
// dialer calls it for failures during the handshake; the engine may call it
// for a failure it learns later (a TLS 1.3 client certificate refused at the
// first read). Safe from any goroutine, lock-free, no allocation.
func (p *Peer) ObserveHandshakeFailure(class int) {
	if class < 0 || class >= FailureClasses {
		class = 0
	}
	p.stats.hsFailed[class].Add(1)
}

// Handshakes returns the peer's TLS handshakes so far: completed full and
// resumed ones, and failed ones (all classes). A handshake retried without
// a ticket after a failed resumption counts twice: once failed, once as
// what the retry gave. Safe from any goroutine.
func (p *Peer) Handshakes() (full, resumed, failed uint64) {
	for i := range p.stats.hsFailed {
		failed += p.stats.hsFailed[i].Load()
	}
	return p.stats.hsFull.Load(), p.stats.hsResumed.Load(), failed
}

// HandshakeFailures returns the failed handshakes by class, indexed as
// dial.FailureClass says (slot 0: "other"). Safe from any goroutine.
func (p *Peer) HandshakeFailures() [FailureClasses]uint64 {
	var out [FailureClasses]uint64
	for i := range p.stats.hsFailed {
		out[i] = p.stats.hsFailed[i].Load()
	}
	return out
}

// ObserveHandshakeGroup counts a completed handshake's key exchange group
// in slot (dial.GroupSlot; out of range counts in slot 0). Safe from any
// goroutine, lock-free, no allocation.
func (p *Peer) ObserveHandshakeGroup(slot int) {
	if slot < 0 || slot >= KeyGroups {
		slot = 0
	}
	p.stats.hsGroups[slot].Add(1)
}

// HandshakeGroups returns the completed handshakes by key exchange group,
// indexed as dial.GroupSlot says. Safe from any goroutine.
func (p *Peer) HandshakeGroups() [KeyGroups]uint64 {
	var out [KeyGroups]uint64
	for i := range p.stats.hsGroups {
		out[i] = p.stats.hsGroups[i].Load()
	}
	return out
}

// HandshakeTime returns the durations of the peer's completed handshakes.
// Safe from any goroutine.
func (p *Peer) HandshakeTime() HistogramSnapshot { return p.stats.handshakeTime.Snapshot() }

// ConnectTime returns the durations of the peer's successful TCP connects.
// Safe from any goroutine.
func (p *Peer) ConnectTime() HistogramSnapshot { return p.stats.connectTime.Snapshot() }

// PeerState is a peer's availability, as a scrape reports it.
type PeerState uint8

// Peer states.
const (
	// PeerUp: the balancers may pick the peer (max_conns aside).
	PeerUp PeerState = iota
	// PeerBanned: max_fails failures, the last within fail_timeout; no
	// session picks it (but one probe after fail_timeout).
	PeerBanned
	// PeerDown: the server is marked `down` in the configuration, or set
	// down at run time (the API).
	PeerDown
	// PeerUnhealthy: an active health check holds the peer out.
	PeerUnhealthy
	// PeerDraining: drained at run time (the API): no new session, the
	// open ones go on.
	PeerDraining
)

// PeerStates is the number of PeerState values.
const PeerStates = 5

// String returns "up", "banned", "down", "unhealthy" or "draining".
func (s PeerState) String() string {
	switch s {
	case PeerUp:
		return "up"
	case PeerBanned:
		return "banned"
	case PeerDown:
		return "down"
	case PeerUnhealthy:
		return "unhealthy"
	case PeerDraining:
		return "draining"
	}
	return "unknown"
}

// State returns the peer's state at now, from the same facts the balancers
// use (a peer being probed after its fail_timeout is banned until the probe
// succeeds). It reads atomics only, so it may lag a concurrent failure by
// one call. Safe from any goroutine.
func (p *Peer) State(now time.Time) PeerState {
	if p.Down || p.AdminDown() {
		return PeerDown
	}
	if p.Draining() {
		return PeerDraining
	}
	if p.Unhealthy() {
		return PeerUnhealthy
	}
	if p.MaxFails > 0 && p.nFails.Load() >= int64(p.MaxFails) &&
		now.Sub(time.Unix(0, p.stats.checkedNano.Load())) <= p.FailTimeout {
		return PeerBanned
	}
	return PeerUp
}

// setChecked sets p.checked and its mirror. Called with the group's lock
// held.
func (p *Peer) setChecked(now time.Time) {
	p.checked = now
	p.stats.checkedNano.Store(now.UnixNano())
}
