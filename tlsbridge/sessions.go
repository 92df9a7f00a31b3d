package tlsbridge

import (
	"crypto/tls"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// Session store defaults.
const (
	// DefaultTicketsPerKey is how many tickets a key keeps, newest first.
	DefaultTicketsPerKey = 4
	// DefaultSessionMaxAge caps the age of a stored session. TLS 1.3 tickets
	// also expire at the lifetime the server gave (crypto/tls caps it at 7
	// days); TLS 1.2 clients are not told a lifetime that crypto/tls keeps,
	// so this cap is all there is. 2h is OpenSSL 3.0's default session
	// timeout, which most OpenSSL-based upstreams use.
	DefaultSessionMaxAge = 2 * time.Hour
	// maxPending bounds the handed-out tickets awaiting Observe per key.
	maxPending = 64
	// maxSlots bounds the number of keys (proxy_ssl_name with
	// $remote_addr makes one per client address); past it, keys without
	// tickets are forgotten.
	maxSlots = 1 << 16
)

// SessionStoreOptions shape a SessionStore. The zero value is the defaults.
type SessionStoreOptions struct {
	// TicketsPerKey is how many sessions are kept per (endpoint, policy,
	// name) key. Default DefaultTicketsPerKey.
	TicketsPerKey int
	// MaxAge drops sessions older than this. Default DefaultSessionMaxAge.
	MaxAge time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// SessionStore holds upstream TLS sessions for all event loops and
// policies. It is safe for concurrent use.
//
// Sessions are keyed by upstream endpoint, policy fingerprint and the
// evaluated verify and SNI names. crypto/tls's own key (the server name) is
// ignored: it would make every backend behind one name share one slot.
type SessionStore struct {
	perKey int
	maxAge time.Duration
	now    func() time.Time

	mu        sync.Mutex
	slots     map[string]*sessionSlot     // guarded by mu
	endpoints map[string]*endpointCounter // guarded by mu

	// Running counts for Counters, updated where the store mutates under
	// its locks and read without them.
	nTickets, nKeys                   atomic.Int64
	stored, evicted, expired, refused atomic.Uint64
}

// StoreCounters are a SessionStore's gauges and counters at one time. Only
// keys the store still shares count (see the key limit): then
// Stored - Evicted - Expired - Refused = Tickets.
type StoreCounters struct {
	// Tickets is the number of sessions held now. Expired sessions are
	// dropped lazily, when their key is next used or Snapshot runs, and
	// count until then.
	Tickets int64
	// Keys is the number of (endpoint, policy, names) keys held now.
	Keys int64
	// Stored counts sessions stored (tickets received).
	Stored uint64
	// Evicted counts sessions dropped to make room: past TicketsPerKey,
	// past the key limit, or by Flush.
	Evicted uint64
	// Expired counts sessions dropped at their expiry (MaxAge or the
	// lifetime the server gave).
	Expired uint64
	// Refused counts sessions dropped because the upstream did not resume
	// with them (a full handshake, or a failed one, after the offer).
	Refused uint64
}

// Counters reads the store's gauges and counters without taking its locks.
// Safe from any goroutine.
func (s *SessionStore) Counters() StoreCounters {
	return StoreCounters{Tickets: s.nTickets.Load(), Keys: s.nKeys.Load(), Stored: s.stored.Load(),
		Evicted: s.evicted.Load(), Expired: s.expired.Load(), Refused: s.refused.Load()}
}

// NewSessionStore returns an empty store.
func NewSessionStore(o SessionStoreOptions) *SessionStore {
	s := &SessionStore{perKey: o.TicketsPerKey, maxAge: o.MaxAge, now: o.Now,
		slots: make(map[string]*sessionSlot), endpoints: make(map[string]*endpointCounter)}
	if s.perKey <= 0 {
		s.perKey = DefaultTicketsPerKey
	}
	if s.maxAge <= 0 {
		s.maxAge = DefaultSessionMaxAge
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// SessionStats are the handshake counts of one upstream endpoint.
type SessionStats struct {
	// Full counts completed full handshakes, refused resumptions included.
	Full uint64
	// Resumed counts completed abbreviated handshakes.
	Resumed uint64
	// Refused counts full handshakes where a ticket was offered and the
	// upstream did not accept it (the ticket is dropped).
	Refused uint64
	// Failed counts failed handshakes; FailedResumptions those that had
	// offered a ticket (the dialer retries them once without one).
	Failed, FailedResumptions uint64
	// Tickets is the number of sessions stored now, over all policies.
	Tickets int
}

type endpointCounter struct {
	full, resumed, refused, failed, failedResume atomic.Uint64
}

// sessionSlot is the ticket list of one key.
type sessionSlot struct {
	store    *SessionStore
	endpoint string
	counts   *endpointCounter
	mu       sync.Mutex
	tickets  []*ticket // newest first; guarded by mu
	pending  []*ticket // handed out by Get, oldest first; guarded by mu
	failures int       // Put(nil) calls not yet seen by observe; guarded by mu
	detached bool      // forgotten by the store, out of its counts; guarded by mu
	// life is the server-given lifetime of the slot's tickets as last
	// read from one (0: none, a TLS 1.2 session), at lifeAt; guarded by
	// mu. Reading it means serializing the session (certificates
	// included), so it is read again only every lifeRecheck.
	life   time.Duration
	lifeAt time.Time
}

// lifeRecheck is how long a slot trusts the ticket lifetime it read last.
// A server whose lifetime changed meanwhile costs at worst a ticket kept
// past its end (the server then answers with a full handshake) or dropped
// early.
const lifeRecheck = time.Minute

// dropped accounts for n tickets leaving the slot into counter c. Called
// with sl.mu held.
func (sl *sessionSlot) dropped(n int, c *atomic.Uint64) {
	if n == 0 || sl.detached {
		return
	}
	sl.store.nTickets.Add(-int64(n))
	c.Add(uint64(n))
}

type ticket struct {
	cs      *tls.ClientSessionState
	expires time.Time
	uses    int
}

// slot returns the slot of key, making it if needed.
func (s *SessionStore) slot(key, endpoint string) *sessionSlot {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[key]
	if sl == nil {
		if len(s.slots) >= maxSlots {
			s.pruneLocked()
		}
		c := s.endpoints[endpoint]
		if c == nil {
			c = new(endpointCounter)
			s.endpoints[endpoint] = c
		}
		sl = &sessionSlot{store: s, endpoint: endpoint, counts: c}
		s.slots[key] = sl
		s.nKeys.Add(1)
	}
	return sl
}

// pruneLocked forgets keys that hold no ticket, or half of all keys if
// every one holds some. Views keep working on a forgotten slot; its tickets
// are simply no longer shared with new views.
func (s *SessionStore) pruneLocked() {
	for k, sl := range s.slots {
		sl.mu.Lock()
		empty := len(sl.tickets) == 0
		if empty {
			sl.detached = true
		}
		sl.mu.Unlock()
		if empty {
			delete(s.slots, k)
			s.nKeys.Add(-1)
		}
	}
	for k, sl := range s.slots {
		if len(s.slots) < maxSlots/2 {
			break
		}
		sl.mu.Lock()
		sl.dropped(len(sl.tickets), &s.evicted)
		sl.detached = true
		sl.mu.Unlock()
		delete(s.slots, k)
		s.nKeys.Add(-1)
	}
}

// count records a handshake made without session reuse.
func (s *SessionStore) count(endpoint string, resumed bool, err error) {
	s.mu.Lock()
	c := s.endpoints[endpoint]
	if c == nil {
		c = new(endpointCounter)
		s.endpoints[endpoint] = c
	}
	s.mu.Unlock()
	switch {
	case err != nil:
		c.failed.Add(1)
	case resumed:
		c.resumed.Add(1)
	default:
		c.full.Add(1)
	}
}

// view returns the tls.ClientSessionCache of one key.
func (s *SessionStore) view(key, endpoint string) *sessionView {
	return &sessionView{slot: s.slot(key, endpoint)}
}

// Stats returns the counts of one endpoint ("ip:port").
func (s *SessionStore) Stats(endpoint string) SessionStats {
	return s.Snapshot()[endpoint]
}

// Snapshot returns the counts of every endpoint seen.
func (s *SessionStore) Snapshot() map[string]SessionStats {
	s.mu.Lock()
	out := make(map[string]SessionStats, len(s.endpoints))
	for ep, c := range s.endpoints {
		out[ep] = SessionStats{Full: c.full.Load(), Resumed: c.resumed.Load(), Refused: c.refused.Load(),
			Failed: c.failed.Load(), FailedResumptions: c.failedResume.Load()}
	}
	slots := make([]*sessionSlot, 0, len(s.slots))
	for _, sl := range s.slots {
		slots = append(slots, sl)
	}
	s.mu.Unlock()
	now := s.now()
	for _, sl := range slots {
		sl.mu.Lock()
		sl.expireLocked(now)
		n := len(sl.tickets)
		sl.mu.Unlock()
		st := out[sl.endpoint]
		st.Tickets += n
		out[sl.endpoint] = st
	}
	return out
}

// Flush drops every stored session (counts are kept).
func (s *SessionStore) Flush() {
	s.mu.Lock()
	slots := make([]*sessionSlot, 0, len(s.slots))
	for _, sl := range s.slots {
		slots = append(slots, sl)
	}
	s.mu.Unlock()
	for _, sl := range slots {
		sl.mu.Lock()
		sl.dropped(len(sl.tickets), &s.evicted)
		sl.tickets, sl.pending = nil, nil
		sl.mu.Unlock()
	}
}

// expireLocked drops expired tickets.
func (sl *sessionSlot) expireLocked(now time.Time) {
	kept := sl.tickets[:0]
	for _, t := range sl.tickets {
		if now.Before(t.expires) {
			kept = append(kept, t)
		}
	}
	clear(sl.tickets[len(kept):])
	sl.dropped(len(sl.tickets)-len(kept), &sl.store.expired)
	sl.tickets = kept
}

// get hands out a ticket: the newest one not used yet, else the newest.
func (sl *sessionSlot) get() *tls.ClientSessionState {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	sl.expireLocked(sl.store.now())
	if len(sl.tickets) == 0 {
		return nil
	}
	pick := sl.tickets[0]
	for _, t := range sl.tickets {
		if t.uses == 0 {
			pick = t
			break
		}
	}
	pick.uses++
	if len(sl.pending) >= maxPending {
		sl.pending = sl.pending[1:]
	}
	sl.pending = append(sl.pending, pick)
	return pick.cs
}

// put stores a new ticket, newest first.
func (sl *sessionSlot) put(cs *tls.ClientSessionState) {
	now := sl.store.now()
	t := &ticket{cs: cs, expires: now.Add(sl.store.maxAge)}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if now.Sub(sl.lifeAt) >= lifeRecheck || now.Before(sl.lifeAt) { // never read: lifeAt is zero
		sl.life, sl.lifeAt = 0, now
		if life, ok := tls13Lifetime(cs); ok {
			sl.life = life
		}
	}
	if sl.life > 0 && now.Add(sl.life).Before(t.expires) {
		t.expires = now.Add(sl.life)
	}
	sl.tickets = append(sl.tickets, nil)
	copy(sl.tickets[1:], sl.tickets)
	sl.tickets[0] = t
	if !sl.detached {
		sl.store.stored.Add(1)
		sl.store.nTickets.Add(1)
	}
	if len(sl.tickets) > sl.store.perKey {
		sl.dropped(len(sl.tickets)-sl.store.perKey, &sl.store.evicted)
		clear(sl.tickets[sl.store.perKey:])
		sl.tickets = sl.tickets[:sl.store.perKey]
	}
}

// dropPendingLocked removes the oldest handed-out ticket from the slot and
// returns whether there was one.
func (sl *sessionSlot) dropPendingLocked() bool {
	if len(sl.pending) == 0 {
		return false
	}
	t := sl.pending[0]
	sl.pending[0] = nil
	sl.pending = sl.pending[1:]
	for i, x := range sl.tickets {
		if x == t {
			sl.tickets = append(sl.tickets[:i], sl.tickets[i+1:]...)
			sl.tickets[len(sl.tickets):cap(sl.tickets)][0] = nil
			sl.dropped(1, &sl.store.refused)
			break
		}
	}
	return true
}

// observe records the outcome of one handshake on this key and reports
// whether the dialer should retry once with a full handshake.
func (sl *sessionSlot) observe(resumed bool, err error) (retry bool) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	switch {
	case err != nil:
		if sl.failures > 0 {
			// crypto/tls called Put(nil): the handshake had offered a
			// ticket, which put already dropped.
			sl.failures--
			sl.counts.failedResume.Add(1)
			sl.counts.failed.Add(1)
			return Classify(err) != ReasonTimeout
		}
		sl.counts.failed.Add(1)
	case resumed:
		if len(sl.pending) > 0 {
			sl.pending[0] = nil
			sl.pending = sl.pending[1:]
		}
		sl.counts.resumed.Add(1)
	default:
		if sl.dropPendingLocked() {
			sl.counts.refused.Add(1)
		}
		sl.counts.full.Add(1)
	}
	return false
}

// sessionView is the tls.ClientSessionCache of one key. It ignores the key
// crypto/tls passes.
type sessionView struct {
	slot *sessionSlot
}

var _ tls.ClientSessionCache = (*sessionView)(nil)

// Get implements tls.ClientSessionCache.
func (v *sessionView) Get(string) (*tls.ClientSessionState, bool) {
	cs := v.slot.get()
	return cs, cs != nil
}

// Put implements tls.ClientSessionCache. crypto/tls calls Put(k, nil) when a
// handshake that offered a session failed; that ticket is dropped.
func (v *sessionView) Put(_ string, cs *tls.ClientSessionState) {
	if cs != nil {
		v.slot.put(cs)
		return
	}
	v.slot.mu.Lock()
	if v.slot.dropPendingLocked() {
		v.slot.failures++
	}
	v.slot.mu.Unlock()
}

// tls13Lifetime returns the server-given lifetime of a TLS 1.3 session,
// from its receipt. crypto/tls does not export it; it is use_by minus
// created_at of the client session encoding (crypto/tls ticket.go: uint64
// created_at after version, type and flags; ... uint64 use_by; uint32
// age_add at the end for TLS 1.3 client sessions), both in seconds. It is
// sanity-checked (at most 7 days, RFC 8446 4.6.1, with a day's slack) so
// that a changed encoding falls back to MaxAge.
func tls13Lifetime(cs *tls.ClientSessionState) (time.Duration, bool) {
	_, st, err := cs.ResumptionState()
	if err != nil || st == nil {
		return 0, false
	}
	b, err := st.Bytes()
	if err != nil || len(b) < 13+12 {
		return 0, false
	}
	version := binary.BigEndian.Uint16(b[0:2])
	if version != tls.VersionTLS13 || b[2] != 2 /* client */ {
		return 0, false
	}
	created := binary.BigEndian.Uint64(b[5:13])
	useBy := binary.BigEndian.Uint64(b[len(b)-12 : len(b)-4])
	if useBy <= created || useBy > created+uint64(8*24*time.Hour/time.Second) {
		return 0, false
	}
	return time.Duration(useBy-created) * time.Second, true
}
