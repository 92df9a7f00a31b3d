package pool

import (
	"sync/atomic"
	"time"
)

// least_time (NGINX Plus's method, in NGINX 1.31's open source): the peer
// with the least average time and the fewest active connections, weights
// counted; ties go to weighted round robin, as least_conn's do. The time
// is one of three, as the directive says: connect (the TCP connect and the
// TLS handshake, as $upstream_connect_time), first_byte (to the upstream's
// first byte) or last_byte (the whole session). Each peer of a least_time
// group keeps an exponentially weighted moving average of its group's
// measure, fed by the dialer (connect) and the engine (first and last
// byte); the peers of other groups keep none, so their sessions pay
// nothing for it. A reload that keeps a peer keeps its average
// (Inherit).

// Least-time measures, the values of [BalancerConfig.LeastTime].
const (
	LeastTimeConnect   = "connect"
	LeastTimeFirstByte = "first_byte"
	LeastTimeLastByte  = "last_byte"
)

// MethodLeastTime is least_time.
const MethodLeastTime = "least_time"

// measure indexes a peer's averages.
type measure uint8

const (
	measureConnect measure = iota
	measureFirstByte
	measureLastByte
	measures
)

// noMeasure is the measure of a peer whose group does not balance by
// least_time: none of its times is kept.
const noMeasure = measures

// peerTimes is a peer's moving average of its group's measure
// (Peer.timedBy), in nanoseconds (0: none yet).
type peerTimes struct {
	avg atomic.Int64
}

// ewmaShift weighs a new sample 1/8, as TCP's smoothed RTT does.
const ewmaShift = 3

// observe folds d into the average. Safe from any goroutine.
func (t *peerTimes) observe(d time.Duration) {
	if d <= 0 {
		d = 1
	}
	for {
		old := t.avg.Load()
		next := int64(d)
		if old != 0 {
			next = old + (int64(d)-old)>>ewmaShift
		}
		if t.avg.CompareAndSwap(old, max(next, 1)) {
			return
		}
	}
}

// ObserveConnectTime records a completed connect and handshake of d
// (least_time connect). The dialer calls it. Safe from any goroutine.
func (p *Peer) ObserveConnectTime(d time.Duration) { p.observeTime(measureConnect, d) }

// ObserveFirstByte records the time to the upstream's first byte of a
// session (least_time first_byte). Safe from any goroutine.
func (p *Peer) ObserveFirstByte(d time.Duration) { p.observeTime(measureFirstByte, d) }

// ObserveLastByte records the time of a whole session whose upstream
// connection opened at opened (least_time last_byte); the clock is read
// only by a peer that keeps that time. Safe from any goroutine.
func (p *Peer) ObserveLastByte(opened time.Time) {
	if p.timedBy == measureLastByte {
		p.times.observe(time.Since(opened))
	}
}

// observeTime folds d into p's average of m if m is what p's group
// compares; other times are dropped at the cost of one comparison.
func (p *Peer) observeTime(m measure, d time.Duration) {
	if m == p.timedBy {
		p.times.observe(d)
	}
}

// measureOf maps a least_time parameter to its measure.
func measureOf(s string) (measure, bool) {
	switch s {
	case LeastTimeConnect:
		return measureConnect, true
	case LeastTimeFirstByte:
		return measureFirstByte, true
	case LeastTimeLastByte:
		return measureLastByte, true
	}
	return 0, false
}

// leastTimeCost is what least_time compares, lower first: the average time
// (a peer not measured yet counts as the fastest, so that it gets measured)
// by the active connections plus one, over the weight. The active
// connections are the incomplete ones, so the inflight parameter (which in
// NGINX adds them to the average) changes nothing here: they always count.
func (g *Group) leastTimeCost(p *Peer) float64 {
	avg := float64(p.times.avg.Load())
	return (avg + 1) * float64(p.conns+1) / float64(p.Weight)
}

// getLeastTime is least_time: getLeastConn's walk with leastTimeCost.
// Called with the group's lock held.
func (s *Selection) getLeastTime(now time.Time) *Peer {
	t := s.tier()
	if t.single {
		return s.getRR(now)
	}
	g := s.g
	var best *Peer
	bi, bestCost := 0, 0.0
	many := false
	for i, p := range t.peers {
		if s.isTried(i) || !usable(p, now) {
			continue
		}
		c := g.leastTimeCost(p)
		switch {
		case best == nil || c < bestCost:
			best, bi, bestCost, many = p, i, c, false
		case c == bestCost:
			many = true
		}
	}
	if best == nil {
		if s.toBackup() {
			return s.getLeastTime(now)
		}
		return nil
	}
	if many {
		best, bi = s.wrrTied(t, bi, now, func(p *Peer) bool { return g.leastTimeCost(p) == bestCost })
	}
	s.picked(bi, best, now)
	return best
}
