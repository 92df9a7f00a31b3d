package pool

import (
	"time"
)

// Selection is one client session's walk over a group: which peers it tried,
// how many tries it has left, and the hash state, as NGINX keeps them per
// session. It is used by one goroutine at a time: the session's event loop,
// or the dial worker the session handed it to (with a happens-before edge,
// such as a channel send, at each handoff); the group's shared state is
// locked inside each method.
//
// Every peer that Next returns must be given back exactly once, with Failed
// or Release.
type Selection struct {
	g         *Group
	set       *peerSet  // the group's peers when the session started
	backup    bool      // walking the backup tier (NGINX's rrp->peers = peers->next)
	tried     [2]uint64 // NGINX's tried bitmap, for tiers of up to 128 peers
	triedMore []uint64  // the bitmap of larger tiers
	start     time.Time
	triesLeft int
	attempts  int

	key       []byte
	hash      uint32 // plain hash: accumulated value; consistent: ring index
	rehash    int
	hashTries int // steps taken by hash or random before falling back to round robin
}

// NewSelection starts a session's walk over g. hashKey is the evaluated hash
// key (ignored by other methods; empty means round robin). tries is
// proxy_next_upstream_tries: zero means no limit beyond the natural one, the
// number of servers not marked down. now is the session's start, for
// proxy_next_upstream_timeout. Safe from any goroutine; the Selection belongs
// to the caller.
func (g *Group) NewSelection(hashKey string, tries int, now time.Time) *Selection {
	s := new(Selection)
	g.InitSelection(s, hashKey, tries, now)
	return s
}

// InitSelection is NewSelection into a Selection the caller owns (embedded in
// a session, or reused), so that starting a session need not allocate.
func (g *Group) InitSelection(s *Selection, hashKey string, tries int, now time.Time) {
	set := g.set.Load()
	var more []uint64
	if words := (set.maxTier + 63) / 64; words > len(s.tried) {
		if cap(s.triedMore) >= words {
			more = s.triedMore[:words]
			clear(more)
		} else {
			more = make([]uint64, words)
		}
	}
	*s = Selection{g: g, set: set, start: now, key: append(s.key[:0], hashKey...), triedMore: more}
	s.triesLeft = set.tries()
	if tries > 0 && s.triesLeft > tries {
		s.triesLeft = tries
	}
	if g.method == methodCHash && len(s.key) > 0 {
		s.hash = uint32(findPoint(set.points, crc32Bytes(s.key)))
	}
}

// Group returns the group the selection walks.
func (s *Selection) Group() *Group { return s.g }

// Start returns the time given to NewSelection.
func (s *Selection) Start() time.Time { return s.start }

// Tried returns how many peers Next returned so far.
func (s *Selection) Tried() int { return s.attempts }

// TriesLeft returns how many more attempts the session may make after a
// failure (NGINX's peer.tries): Failed decrements it, and a failure on a
// single-server group sets it to zero.
func (s *Selection) TriesLeft() int { return s.triesLeft }

// Next picks the next peer to connect to and counts a connection on it. It
// returns an error wrapping ErrNoLivePeers when no peer can be used, and
// ErrNoTriesLeft when a previous attempt failed and no tries are left.
// It does not allocate. Runs on the goroutine that owns the session.
func (s *Selection) Next(now time.Time) (*Peer, error) {
	if s.attempts > 0 && s.triesLeft == 0 {
		return nil, ErrNoTriesLeft
	}
	g := s.g
	g.mu.Lock()
	var p *Peer
	switch g.method {
	case methodRR:
		p = s.getRR(now)
	case methodLeastConn:
		p = s.getLeastConn(now)
	case methodHash:
		p = s.getHash(now)
	case methodCHash:
		p = s.getCHash(now)
	case methodRandom:
		p = s.getRandom(now)
	case methodRandom2:
		p = s.getRandom2(now)
	case methodLeastTime:
		p = s.getLeastTime(now)
	}
	if p == nil {
		g.mu.Unlock()
		return nil, g.errNoLive
	}
	p.conns++
	p.nConns.Store(int64(p.conns))
	g.mu.Unlock()
	p.stats.selected.Add(1)
	s.attempts++
	return p, nil
}

// Failed records that connecting to p failed (TCP connect, PROXY header, TLS
// handshake or verification, or their timeouts): the max_fails/fail_timeout
// accounting and the drop of p's effective weight, as NGINX's free with
// NGX_PEER_FAILED. It ends p's connection and uses up one try. It reports
// whether p reached max_fails, when NGINX logs "upstream server temporarily
// disabled".
//
// In a group of one server (without backups) failures are not counted and no
// try is left afterwards: NGINX's behaviour, which makes max_fails and
// fail_timeout meaningless there (known problem #16 of the reference); it is
// kept so that a configuration behaves as under NGINX.
// Runs on the goroutine that owns the session.
func (s *Selection) Failed(p *Peer, now time.Time) (disabled bool) {
	disabled, single := s.Lease().fail(p, now)
	switch {
	case single:
		s.triesLeft = 0
	case s.triesLeft > 0:
		s.triesLeft--
	}
	return disabled
}

// Connected records that the connection to p is established (after the TLS
// handshake and verification): if p was probed after its fail_timeout, its
// failures are forgotten, as NGINX's notify on connect. Runs on the
// goroutine that owns the session.
func (s *Selection) Connected(p *Peer, now time.Time) {
	g := s.g
	g.mu.Lock()
	revive(p)
	g.mu.Unlock()
}

// Release ends p's connection when the session is over (or gives up before
// connecting for a reason that is not p's fault), as NGINX's free without
// NGX_PEER_FAILED. Runs on the goroutine that owns the session.
func (s *Selection) Release(p *Peer) {
	s.Lease().Release(p)
}

// Lease is what a session keeps of its Selection once its upstream
// connection is open: enough to give the peer back, with Release or Failed,
// as the Selection's own methods would. It is a few words where the
// Selection is over a hundred bytes, so that a session holding an idle
// connection need not keep its whole walk. The zero Lease holds nothing and
// must not be used. Runs on the goroutine that owns the session.
type Lease struct {
	g      *Group
	set    *peerSet
	backup bool
}

// Lease returns what Release and Failed need of s, for after the walk.
func (s *Selection) Lease() Lease { return Lease{g: s.g, set: s.set, backup: s.backup} }

// tier returns the tier the lease's peer was chosen from.
func (l Lease) tier() *tier {
	if l.backup {
		return &l.set.backup
	}
	return &l.set.primary
}

// Release is Selection.Release after the walk.
func (l Lease) Release(p *Peer) {
	l.g.mu.Lock()
	p.conns--
	p.nConns.Store(int64(p.conns))
	if !l.tier().single {
		revive(p)
	}
	l.g.mu.Unlock()
}

// Failed is Selection.Failed after the walk (no try is left to use up).
func (l Lease) Failed(p *Peer, now time.Time) (disabled bool) {
	disabled, _ = l.fail(p, now)
	return disabled
}

// fail does the accounting of Failed and reports whether p's tier is a
// single server, whose failures are not counted.
func (l Lease) fail(p *Peer, now time.Time) (disabled, single bool) {
	p.stats.failures.Add(1)
	l.g.mu.Lock()
	defer l.g.mu.Unlock()
	p.conns--
	p.nConns.Store(int64(p.conns))
	if l.tier().single {
		return false, true
	}
	p.fails++
	p.nFails.Store(int64(p.fails))
	p.accessed = now
	p.setChecked(now)
	if p.MaxFails > 0 {
		p.effectiveWeight -= p.Weight / p.MaxFails
		disabled = p.fails >= p.MaxFails
	}
	if p.effectiveWeight < 0 {
		p.effectiveWeight = 0
	}
	return disabled, false
}

// revive forgets p's failures if a selection after the last failure opened a
// new fail_timeout window. Called with the group's lock held.
func revive(p *Peer) {
	if p.accessed.Before(p.checked) {
		p.fails = 0
		p.nFails.Store(0)
	}
}

// tier returns the tier the session walks.
func (s *Selection) tier() *tier { return s.Lease().tier() }

func (s *Selection) isTried(i int) bool {
	if s.triedMore != nil {
		return s.triedMore[i/64]&(1<<(i%64)) != 0
	}
	return s.tried[i/64]&(1<<(i%64)) != 0
}

func (s *Selection) setTried(i int) {
	if s.triedMore != nil {
		s.triedMore[i/64] |= 1 << (i % 64)
		return
	}
	s.tried[i/64] |= 1 << (i % 64)
}

// toBackup switches the session to the backup tier, if there is one and it
// is not there yet, clearing the tried bitmap.
func (s *Selection) toBackup() bool {
	if s.backup || len(s.set.backup.peers) == 0 {
		return false
	}
	s.backup = true
	clear(s.tried[:])
	clear(s.triedMore)
	return true
}
