package dial

import (
	"crypto/tls"
	"sync/atomic"

	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// This file holds what the dialer counts for metrics besides the peers'
// own counters (which pool keeps): its goroutines and queue, and the
// meaning of the slots of pool.Peer.HandshakeFailures. Every read method is
// safe from any goroutine and takes no lock.

// Slot i of pool.Peer.HandshakeFailures counts tlsbridge.Reason(i) for
// ReasonUnknownCA..ReasonClosedAfterHandshake, slot 0 any other failure: the build
// fails here (a negative constant converted to uint) unless pool has
// exactly one slot per reason.
const _ = uint(pool.FailureClasses-int(tlsbridge.ReasonClosedAfterHandshake)-1) + uint(int(tlsbridge.ReasonClosedAfterHandshake)+1-pool.FailureClasses)

// FailureClass returns the slot of r in pool.Peer.HandshakeFailures, the
// argument of pool.Peer.ObserveHandshakeFailure: 0 ("other") for a reason
// that is no failure or that pool has no slot for.
func FailureClass(r tlsbridge.Reason) int {
	if r > tlsbridge.ReasonNone && int(r) < pool.FailureClasses {
		return int(r)
	}
	return 0
}

// FailureClassName returns the label of slot i of
// pool.Peer.HandshakeFailures: "other" for 0, else the tlsbridge.Reason's
// name ("unknown_ca", "timeout", ...), the class NGINX users know from
// $upstream_ssl_error's logs.
func FailureClassName(i int) string {
	if i <= 0 || i >= pool.FailureClasses {
		return "other"
	}
	return tlsbridge.Reason(i).String()
}

// keyGroups are the key exchange groups of pool.Peer.HandshakeGroups'
// slots 1 and up; slot 0 counts "none" (a TLS 1.2 resumption, which makes
// no key exchange) and any other group.
var keyGroups = [pool.KeyGroups - 1]tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521, tls.SecP256r1MLKEM768}

// GroupSlot returns the slot of a handshake's key exchange group in
// pool.Peer.HandshakeGroups.
func GroupSlot(id tls.CurveID) int {
	for i, g := range keyGroups {
		if g == id {
			return i + 1
		}
	}
	return 0
}

// GroupSlotName returns the group label of slot i: OpenSSL's name
// (tlsbridge.GroupName), or "other" for slot 0.
func GroupSlotName(i int) string {
	if i <= 0 || i >= pool.KeyGroups {
		return "other"
	}
	return tlsbridge.GroupName(keyGroups[i-1])
}

// Stats are a Dialer's gauges and counters at one time.
type Stats struct {
	// QueueDepth is the number of jobs waiting for a worker; QueueCapacity
	// the most that may wait (Config.Queue).
	QueueDepth, QueueCapacity int
	// Workers is the number of worker goroutines running, Busy how many of
	// them run a job, MaxWorkers the bound (Config.MaxWorkers).
	Workers, Busy, MaxWorkers int
	// Queued counts the jobs Submit accepted, Rejected those it refused
	// with ErrQueueFull.
	Queued, Rejected uint64
}

// dialerStats are the Dialer's atomics.
type dialerStats struct {
	workers, busy    atomic.Int64
	queued, rejected atomic.Uint64
}

// Stats reads the dialer's gauges and counters without taking its locks.
// Safe from any goroutine.
func (d *Dialer) Stats() Stats {
	w, b := int(d.stats.workers.Load()), int(d.stats.busy.Load())
	return Stats{
		QueueDepth:    len(d.jobs),
		QueueCapacity: cap(d.jobs),
		Workers:       w,
		Busy:          min(max(b, 0), w),
		MaxWorkers:    d.cfg.MaxWorkers,
		Queued:        d.stats.queued.Load(),
		Rejected:      d.stats.rejected.Load(),
	}
}

// flightStats count the dials in progress, by step, and the cancelled jobs.
type flightStats struct {
	connecting, handshaking atomic.Int64
	cancelled               atomic.Uint64
}

// InFlight are the dials a Dialer runs at one time, by step, with the
// jobs cancelled so far.
type InFlight struct {
	// Connecting counts TCP connects in progress (the PROXY header
	// included); Handshaking TLS handshakes in progress. Pre-warming
	// dials (Connect) count too.
	Connecting, Handshaking int
	// Cancelled counts the jobs that ended because Job.Cancel or
	// Close was called while they ran.
	Cancelled uint64
}

// InFlight reads the dials in progress without taking a lock. Safe from
// any goroutine.
func (d *Dialer) InFlight() InFlight {
	return InFlight{
		Connecting:  int(max(d.flight.connecting.Load(), 0)),
		Handshaking: int(max(d.flight.handshaking.Load(), 0)),
		Cancelled:   d.flight.cancelled.Load(),
	}
}
