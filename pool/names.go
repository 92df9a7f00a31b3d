package pool

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Names resolves host names when a session asks, for `proxy_pass` with
// variables, as NGINX's ngx_resolve_name does: through the `resolver` in
// force, with its valid=, ipv4= and ipv6= and resolver_timeout. An answer is
// kept for its TTL (or valid=); a name that does not exist (NXDOMAIN, or no
// record of the kinds asked for) for valid= or 10s, as NGINX keeps it. Any
// other failure (a timeout, SERVFAIL, REFUSED) is not kept: the next
// session asks again. Sessions that ask for a name while it is being
// looked up wait for that one query instead of sending their own, so a
// flood of sessions sends at most one query per name at a time.
//
// At most maxNames answers are kept (NewNames); past that the least
// recently used is forgotten, and while maxNames lookups are in flight a
// new name fails at once (ErrTooManyNames). A Names is safe for concurrent use.
type Names struct {
	r     *Resolver
	max   int
	stats *NameStats

	mu sync.Mutex
	m  map[string]*nameEntry
	// stop ends the lookups in flight (Close).
	stop   context.Context
	cancel context.CancelFunc
}

// NameStats counts what [Names] lookups came to, for the metrics. One
// NameStats may be shared by several Names (the resolvers of one
// configuration, and of the configurations a reload replaces), so that
// the counts never go back. Its fields are safe from any goroutine.
type NameStats struct {
	// Cached counts lookups answered from a kept answer (a negative one
	// too); OK and Failed the queries sent, by outcome (Failed: timeout,
	// SERVFAIL, NXDOMAIN and other errors), however many sessions waited
	// for each; Refused the names not sent (malformed, or too many in
	// flight).
	Cached, OK, Failed, Refused atomic.Uint64
}

// DefaultMaxNames is the number of names a [Names] keeps answers for when
// NewNames is given none.
const DefaultMaxNames = 4096

// nameEntry is one name's answer, or its lookup in flight.
type nameEntry struct {
	// done is closed when the lookup ended; addrs, err and expires are
	// set before and never change after.
	done    chan struct{}
	addrs   []netip.Addr
	err     error
	expires time.Time
	// used is when a session last asked for the name (guarded by
	// Names.mu), for the least-recently-used eviction.
	used time.Time
}

// NewNames returns a Names asking the name servers of cfg; maxNames bounds
// the answers kept (zero: DefaultMaxNames); stats counts the lookups (nil:
// a NameStats of its own). cfg.Logf, if set, is told of name servers that
// refuse a query.
func NewNames(cfg ResolverConfig, maxNames int, stats *NameStats) *Names {
	if maxNames <= 0 {
		maxNames = DefaultMaxNames
	}
	if stats == nil {
		stats = new(NameStats)
	}
	n := &Names{r: NewResolver(nil, cfg), max: maxNames, stats: stats, m: map[string]*nameEntry{}}
	n.stop, n.cancel = context.WithCancel(context.Background())
	return n
}

// Cached returns the addresses of name when an answer that has not
// expired is kept, without waiting. Safe from any goroutine; it is what an
// event loop may call.
func (n *Names) Cached(name string, now time.Time) ([]netip.Addr, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.m[name]
	if e == nil || !e.ended() || e.err != nil || !now.Before(e.expires) {
		return nil, false
	}
	e.used = now
	n.stats.Cached.Add(1)
	return e.addrs, true
}

// Lookup returns the addresses of name (IPv4 first), from the answer kept
// or from the name servers. It waits for the lookup, or until ctx is done
// (then it returns ctx's error; the lookup goes on for the others waiting
// for it). A failure reads as NGINX logs it: "110: Operation timed out",
// "3: Host not found". The slice returned is shared: do not modify it. It
// blocks: call it from a goroutine that may wait (a dial worker), never an
// event loop. A name that is not a domain name (an empty label, one over
// 63 bytes) fails at once with "1: Format error", without a query.
func (n *Names) Lookup(ctx context.Context, name string) ([]netip.Addr, error) {
	if _, ok := dns.IsDomainName(name); !ok || len(name) > 253 {
		// Nothing a name server could answer: not sent.
		n.stats.Refused.Add(1)
		return nil, rcodeError(dns.RcodeFormatError)
	}
	now := time.Now()
	n.mu.Lock()
	e := n.m[name]
	if e != nil && e.ended() && !now.Before(e.expires) {
		delete(n.m, name)
		e = nil
	}
	if e == nil {
		if !n.evictLocked(now) {
			n.mu.Unlock()
			n.stats.Refused.Add(1)
			return nil, ErrTooManyNames
		}
		e = &nameEntry{done: make(chan struct{})}
		n.m[name] = e
		go n.resolve(name, e)
	} else if e.ended() {
		n.stats.Cached.Add(1)
	}
	e.used = now
	n.mu.Unlock()
	select {
	case <-e.done:
		return e.addrs, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ended reports whether e's lookup is over. Reading its fields is safe
// then.
func (e *nameEntry) ended() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// resolve looks name up for e, on its own goroutine (so that the session
// that asked first may leave without failing the others), within
// resolver_timeout.
func (n *Names) resolve(name string, e *nameEntry) {
	ctx, cancel := context.WithTimeout(n.stop, n.r.cfg.Timeout)
	defer cancel()
	addrs, ttl, err := n.r.lookupHost(ctx, name)
	if err == nil {
		n.stats.OK.Add(1)
		e.addrs = ipv4First(addrs)
	} else {
		n.stats.Failed.Add(1)
		e.err = err
	}
	// A failure not kept (a timeout, SERVFAIL) expires now: the next
	// session asks again.
	if keep, kept := n.r.cfg.keepFor(ttl, err); kept {
		e.expires = time.Now().Add(keep)
	}
	n.mu.Lock()
	close(e.done)
	n.mu.Unlock()
}

// isNXDomain reports a name that does not exist.
func isNXDomain(err error) bool {
	var re *resolveError
	return errors.As(err, &re) && re.code == dns.RcodeNameError
}

// keepFor is how long an answer of ttl, or err, is kept, as NGINX's
// resolver does: valid= when set, else the answer's TTL, or negativeValid
// for a name that does not exist; never under a second (NGINX's clock
// counts whole seconds). kept is false for a failure that is not kept (a
// timeout, SERVFAIL): the name is asked again.
func (c ResolverConfig) keepFor(ttl time.Duration, err error) (keep time.Duration, kept bool) {
	switch {
	case err == nil:
	case isNXDomain(err):
		ttl = negativeValid
	default:
		return 0, false
	}
	if c.Valid > 0 {
		ttl = c.Valid
	}
	return max(ttl, time.Second), true
}

// ErrTooManyNames is Lookup's error when maxNames lookups are in flight
// at once: a name server that answers nothing must not grow the process
// without bound.
var ErrTooManyNames = errors.New("too many names being resolved at once")

// evictLocked makes room for one more name: it drops the expired answers,
// and if none was, the least recently used one. Lookups in flight stay, so
// it reports false when they fill the room. n.mu is held.
func (n *Names) evictLocked(now time.Time) bool {
	if len(n.m) < n.max {
		return true
	}
	var oldest string
	var oldestUsed time.Time
	for name, e := range n.m {
		if !e.ended() {
			continue
		}
		if !now.Before(e.expires) {
			delete(n.m, name)
			continue
		}
		if oldest == "" || e.used.Before(oldestUsed) {
			oldest, oldestUsed = name, e.used
		}
	}
	if len(n.m) >= n.max && oldest != "" {
		delete(n.m, oldest)
	}
	return len(n.m) < n.max
}

// Len returns how many names are kept or being looked up. Safe from any
// goroutine.
func (n *Names) Len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.m)
}

// Close ends the lookups in flight (their sessions get "110: Operation
// timed out"); later lookups fail at once the same way. Safe from any
// goroutine.
func (n *Names) Close() { n.cancel() }
