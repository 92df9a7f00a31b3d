package pool

import (
	"hash/crc32"
	"math/rand/v2"
	"time"
)

// The balancers below follow NGINX 1.22's stream modules step by step
// (ngx_stream_upstream_round_robin.c, _least_conn_module.c, _hash_module.c,
// _random_module.c). All run with the group's lock held.

// maxHashTries is how many unusable picks the hash and random balancers
// accept before falling back to round robin.
const maxHashTries = 20

// usable reports whether p may be picked now, tried bitmap aside: not down
// or drained, not banned by max_fails within fail_timeout, not at
// max_conns.
func usable(p *Peer, now time.Time) bool {
	if p.out() {
		return false
	}
	if p.MaxFails > 0 && p.fails >= p.MaxFails && now.Sub(p.checked) <= p.FailTimeout {
		return false
	}
	if mc := p.MaxConnsNow(); mc > 0 && p.conns >= mc {
		return false
	}
	return true
}

// picked does what every balancer does to the peer it returns besides
// counting the connection: mark it tried and, when its fail_timeout window
// is over, open a new one (the probe).
func (s *Selection) picked(i int, p *Peer, now time.Time) {
	s.setTried(i)
	if now.Sub(p.checked) > p.FailTimeout {
		p.setChecked(now)
	}
}

// getRR is ngx_stream_upstream_get_round_robin_peer.
func (s *Selection) getRR(now time.Time) *Peer {
	t := s.tier()
	var p *Peer
	if t.single {
		// One server: never banned, never marked tried.
		p = t.peers[0]
		if mc := p.MaxConnsNow(); p.out() || (mc > 0 && p.conns >= mc) {
			p = nil
		}
	} else {
		p = s.smoothWRR(t, now, anyServer)
	}
	if p == nil && s.toBackup() {
		return s.getRR(now)
	}
	return p
}

// anyServer makes smoothWRR consider the peers of every server.
const anyServer = -1

// smoothWRR is ngx_stream_upstream_get_peer: smooth weighted round robin over
// the usable, untried peers of t (only those of one server unless server is
// anyServer, as the consistent hash needs).
func (s *Selection) smoothWRR(t *tier, now time.Time, server int) *Peer {
	var best *Peer
	bi := 0
	total := 0
	for i, p := range t.peers {
		if (server != anyServer && t.server[i] != server) || s.isTried(i) || !usable(p, now) {
			continue
		}
		p.currentWeight += p.effectiveWeight
		total += p.effectiveWeight
		if p.effectiveWeight < p.Weight {
			p.effectiveWeight++
		}
		if best == nil || p.currentWeight > best.currentWeight {
			best, bi = p, i
		}
	}
	if best == nil {
		return nil
	}
	best.currentWeight -= total
	s.picked(bi, best, now)
	return best
}

// getLeastConn is ngx_stream_upstream_get_least_conn_peer.
func (s *Selection) getLeastConn(now time.Time) *Peer {
	t := s.tier()
	if t.single {
		return s.getRR(now)
	}
	var best *Peer
	bi := 0
	many := false
	for i, p := range t.peers {
		if s.isTried(i) || !usable(p, now) {
			continue
		}
		if best == nil || p.conns*best.Weight < best.conns*p.Weight {
			best, bi, many = p, i, false
		} else if p.conns*best.Weight == best.conns*p.Weight {
			many = true
		}
	}
	if best == nil {
		if s.toBackup() {
			return s.getLeastConn(now)
		}
		return nil
	}
	if many {
		first := best
		best, bi = s.wrrTied(t, bi, now, func(p *Peer) bool { return p.conns*first.Weight == first.conns*p.Weight })
	}
	s.picked(bi, best, now)
	return best
}

// wrrTied is the weighted round robin among the usable, untried peers of t
// from index from on that tied says are tied with t.peers[from] (the
// least_conn and least_time tie break, as NGINX's least_conn). Called with
// the group's lock held.
func (s *Selection) wrrTied(t *tier, from int, now time.Time, tied func(*Peer) bool) (*Peer, int) {
	best, bi := t.peers[from], from
	total := 0
	for i := from; i < len(t.peers); i++ {
		p := t.peers[i]
		if s.isTried(i) || !usable(p, now) || !tied(p) {
			continue
		}
		p.currentWeight += p.effectiveWeight
		total += p.effectiveWeight
		if p.effectiveWeight < p.Weight {
			p.effectiveWeight++
		}
		if p.currentWeight > best.currentWeight {
			best, bi = p, i
		}
	}
	best.currentWeight -= total
	return best, bi
}

// crc32Bytes is ngx_crc32_long.
func crc32Bytes(b []byte) uint32 { return crc32.ChecksumIEEE(b) }

// getHash is ngx_stream_upstream_get_hash_peer: Cache::Memcached-compatible
// ((crc32([REHASH] KEY) >> 16) & 0x7fff) + PREV_HASH, modulo the total weight.
func (s *Selection) getHash(now time.Time) *Peer {
	t := &s.set.primary
	if s.hashTries > maxHashTries || t.single || len(s.key) == 0 || t.totalWeight == 0 {
		return s.getRR(now)
	}
	for {
		var h uint32
		if s.rehash > 0 {
			h = crc32Decimal(0, s.rehash)
		}
		h = crc32.Update(h, crc32.IEEETable, s.key)
		s.hash += (h >> 16) & 0x7fff
		s.rehash++

		w := int(s.hash % uint32(t.totalWeight))
		i := 0
		for w >= t.peers[i].Weight {
			w -= t.peers[i].Weight
			i++
		}
		if p := t.peers[i]; !s.isTried(i) && usable(p, now) {
			s.picked(i, p, now)
			return p
		}
		s.hashTries++
		if s.hashTries > maxHashTries {
			return s.getRR(now)
		}
	}
}

// crc32Decimal is crc32.Update with the decimal digits of n, without the
// slice that would make crc32.Update's argument escape to the heap.
func crc32Decimal(crc uint32, n int) uint32 {
	var digits [20]byte
	i := len(digits)
	for {
		i--
		digits[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	tab := crc32.IEEETable
	crc = ^crc
	for _, d := range digits[i:] {
		crc = tab[byte(crc)^d] ^ crc>>8
	}
	return ^crc
}

// findPoint returns the index of the first ring point >= hash (len(points)
// when there is none), as ngx_stream_upstream_find_chash_point.
func findPoint(points []chashPoint, hash uint32) int {
	i, j := 0, len(points)
	for i < j {
		k := (i + j) / 2
		switch {
		case hash > points[k].hash:
			i = k + 1
		case hash < points[k].hash:
			j = k
		default:
			return k
		}
	}
	return i
}

// getCHash is ngx_stream_upstream_get_chash_peer: walk the ring from the
// key's point; at each point, weighted round robin among the usable, untried
// peers of that point's server.
func (s *Selection) getCHash(now time.Time) *Peer {
	t := &s.set.primary
	points := s.set.points
	if s.hashTries > maxHashTries || t.single || len(s.key) == 0 || len(points) == 0 {
		return s.getRR(now)
	}
	for {
		if best := s.smoothWRR(t, now, points[s.hash%uint32(len(points))].server); best != nil {
			return best
		}
		s.hash++
		s.hashTries++
		if s.hashTries > maxHashTries {
			return s.getRR(now)
		}
	}
}

// peekRandom is ngx_stream_upstream_peek_random_peer: a peer index drawn
// with probability proportional to weight.
func (s *Selection) peekRandom(t *tier) int {
	var x uint64
	if s.g.rand != nil {
		x = s.g.rand.Uint64()
	} else {
		x = rand.Uint64()
	}
	x %= uint64(t.totalWeight)
	i, j := 0, len(t.peers)
	for j-i > 1 {
		k := (i + j) / 2
		if x < uint64(t.ranges[k]) {
			j = k
		} else {
			i = k
		}
	}
	return i
}

// getRandom is ngx_stream_upstream_get_random_peer.
func (s *Selection) getRandom(now time.Time) *Peer {
	t := &s.set.primary
	if s.hashTries > maxHashTries || len(t.peers) < 2 {
		return s.getRR(now)
	}
	for {
		i := s.peekRandom(t)
		if p := t.peers[i]; !s.isTried(i) && usable(p, now) {
			s.picked(i, p, now)
			return p
		}
		s.hashTries++
		if s.hashTries > maxHashTries {
			return s.getRR(now)
		}
	}
}

// getRandom2 is ngx_stream_upstream_get_random2_peer: two distinct usable
// random picks, keep the one with fewer connections per weight (the second
// on a tie).
func (s *Selection) getRandom2(now time.Time) *Peer {
	t := &s.set.primary
	if s.hashTries > maxHashTries || len(t.peers) < 2 {
		return s.getRR(now)
	}
	var prev *Peer
	pi := 0
	for {
		i := s.peekRandom(t)
		p := t.peers[i]
		if p != prev && !s.isTried(i) && usable(p, now) {
			if prev != nil {
				if p.conns*prev.Weight > prev.conns*p.Weight {
					p, i = prev, pi
				}
				s.picked(i, p, now)
				return p
			}
			prev, pi = p, i
		}
		s.hashTries++
		if s.hashTries > maxHashTries {
			return s.getRR(now)
		}
	}
}
