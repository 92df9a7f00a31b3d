package pool

import (
	"errors"
	"sync/atomic"
	"time"
)

// What the runtime API (the engine's /api, NGINX Plus's shape) changes on a
// peer without a reload: drain or down (no new sessions; the open ones go
// on), max_conns, and, for round robin and least_conn, weight. A change
// holds until the next reload builds the group again from the
// configuration (a peer a reload carries over keeps its counters, not its
// changes).

// adminState is a peer's run-time changes. Its fields are atomics: the
// balancers read mode and maxConns under the group's lock, the API writes
// them from its goroutine.
type adminState struct {
	// mode is adminNone, adminDrain or adminDown.
	mode atomic.Uint32
	// maxConns is max_conns plus one, 0 when the configuration's holds.
	maxConns atomic.Int64
	// lastErr is the last failure (ObserveError), for the status page.
	lastErr atomic.Pointer[PeerError]
}

const (
	adminNone uint32 = iota
	adminDrain
	adminDown
)

// out reports whether the balancers must skip p: down in the
// configuration, drained or set down at run time, or held out by its
// health check.
func (p *Peer) out() bool {
	return p.Down || p.admin.mode.Load() != adminNone || p.Unhealthy()
}

// Draining reports whether the peer was drained at run time: it takes no
// new session, its open ones go on. Safe from any goroutine.
func (p *Peer) Draining() bool { return p.admin.mode.Load() == adminDrain }

// AdminDown reports whether the peer was set down at run time. Safe from
// any goroutine.
func (p *Peer) AdminDown() bool { return p.admin.mode.Load() == adminDown }

// SetDrain drains the peer (on) or takes it back (off, unless it was set
// down since). Safe from any goroutine.
func (p *Peer) SetDrain(on bool) {
	if on {
		p.admin.mode.Store(adminDrain)
		return
	}
	p.admin.mode.CompareAndSwap(adminDrain, adminNone)
}

// SetDown sets the peer down (on) or up (off: back from down or drain).
// Safe from any goroutine.
func (p *Peer) SetDown(on bool) {
	if on {
		p.admin.mode.Store(adminDown)
		return
	}
	p.admin.mode.Store(adminNone)
}

// SetMaxConns sets max_conns in force (0: no limit). Safe from any
// goroutine.
func (p *Peer) SetMaxConns(n int) { p.admin.maxConns.Store(int64(n) + 1) }

// MaxConnsNow returns max_conns in force: the run-time one, else the
// configuration's (0: no limit). Safe from any goroutine.
func (p *Peer) MaxConnsNow() int {
	if v := p.admin.maxConns.Load(); v > 0 {
		return int(v - 1)
	}
	return p.MaxConns
}

// errWeightFixed is SetWeight's error for a group whose balancer
// precomputes its weights (hash, random): a reload changes them.
var errWeightFixed = errors.New("weight can change at run time only with round robin, least_conn or least_time; change it in the configuration and reload")

// SetWeight sets p's weight (at least 1) in g, for round robin, least_conn
// and least_time; a reload goes back to the configuration's. Safe from any goroutine: it takes the group's lock.
func (g *Group) SetWeight(p *Peer, w int) error {
	if g.method != methodRR && g.method != methodLeastConn && g.method != methodLeastTime {
		return errWeightFixed
	}
	if w < 1 {
		return errors.New("weight must be at least 1")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	p.Weight = w // cfgWeight keeps the configuration's, for a reload
	p.effectiveWeight = w
	p.currentWeight = 0
	return nil
}

// WeightNow returns p's weight in g. Safe from any goroutine: it takes the
// group's lock.
func (g *Group) WeightNow(p *Peer) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return p.Weight
}

// PeerError is the last failure seen on a peer: when, and the error (its
// text is made when the status page shows it, not for each failure).
type PeerError struct {
	At  time.Time
	Err error
}

// ObserveError records err as the peer's last failure (the status page
// shows it). Safe from any goroutine; it allocates the record.
func (p *Peer) ObserveError(err error, at time.Time) {
	p.admin.lastErr.Store(&PeerError{At: at, Err: err})
}

// LastError returns the peer's last failure, nil if none. Safe from any
// goroutine.
func (p *Peer) LastError() *PeerError { return p.admin.lastErr.Load() }
