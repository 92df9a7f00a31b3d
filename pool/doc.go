// Package pool holds tlsrelay's upstream groups: the servers of an
// `upstream {}` block (or the implicit group of `proxy_pass host:port`),
// their parameters, the balancers that pick one of them for a client
// session, the passive health accounting of `max_fails`/`fail_timeout`
// that `proxy_next_upstream` relies on, the scheduling of active health
// checks (`health_check`), DNS re-resolution of `server ... resolve`, each
// peer's counters, and the carry-over of all that across a reload.
//
// It makes no connection to an upstream and uses no TLS (crypto/tls is
// linked in only by github.com/miekg/dns, the resolver's DNS client):
// package pool/dial, which imports it, connects to the peers (TCP connect,
// PROXY header, TLS handshake) for sessions, pre-warming and health
// probes, and reports each outcome to a [Selection] and to the [Peer]'s
// counters.
//
// # Groups and peers
//
// [NewGroup] builds a [Group] from a [GroupConfig] at load time. Server names
// are resolved then, as NGINX does without `resolve`: a name that resolves to
// several addresses gives several [Peer] values with the same parameters, in
// the resolver's order with IPv4 addresses first. Backup servers form a
// second tier that is consulted only when no primary server can be used.
//
// # DNS re-resolution
//
// A server with `resolve` ([ServerConfig.Resolve], and `service=` for SRV)
// has no addresses at load time: a [Resolver] (resolve.go) asks DNS for
// them while the configuration serves, again at each answer's TTL, and
// publishes the group's new peer set when they change. Peers that stay are
// the same *Peer (their state goes on); new addresses are new peers; a
// removed peer is no longer selected while its sessions go on.
//
// # Balancers
//
// The methods are those of NGINX's stream module, matched to its source
// (ngx_stream_upstream_round_robin.c and the hash, least_conn and random
// modules) so that the same configuration spreads the same clients the same
// way:
//
//   - "" (default): smooth weighted round robin, with effective weights that
//     drop by weight/max_fails on each failure and recover by one per pass.
//   - "least_conn": fewest active connections per weight; ties are broken by
//     weighted round robin among the tied peers.
//   - "hash": Cache::Memcached-compatible hashing of a per-session key, with
//     rehashing (at most 20 steps) past unusable peers, then round robin.
//     With Consistent, a ketama ring of 160 points per unit of weight.
//   - "random": weighted random; with Two, the less loaded of two distinct
//     random picks. The random source is injectable ([GroupConfig.Rand]).
//
// A peer is skipped while it is `down`, while it is banned (max_fails failures,
// the last less than fail_timeout ago), while it is at max_conns, and when the
// session has already tried it. After fail_timeout one probe is let through;
// a successful connect revives the peer.
//
// # Sessions
//
// A [Selection] is one client session's walk over a group: NGINX's per-request
// peer data (the tried bitmap, the tries count, the hash state). Each call to
// [Selection.Next] that returns a peer is ended by exactly one call to
// [Selection.Failed] (the connect, PROXY header, TLS handshake or verification
// failed) or [Selection.Release] (the session is over), with
// [Selection.Connected] in between on success.
//
// Failed and Release both end the connection Next counted: a peer that
// failed is not released afterwards. [Selection.TriesLeft] says whether
// proxy_next_upstream may try again; Next still works on the first call of a
// session that has no tries (all servers down), and then reports
// ErrNoLivePeers.
//
// # Health
//
// Passive: [Selection.Failed] counts a failure against max_fails within
// fail_timeout. Active: a [HealthChecker] (health.go) probes every peer on
// a goroutine of its own with the probe function it is given (the engine's
// connects through pool/dial's Probe) and holds a peer out of selection
// after Fails failed probes in a row, until it passes Passes.
//
// # Counters
//
// A [Peer] counts its selections, failures, connect and handshake times
// and handshake outcomes (stats.go) with atomics, for metrics; the dialer
// records them. Handshake failures are counted in [FailureClasses] slots
// whose meaning and names pool/dial gives (dial.FailureClass), so that
// counting them needs no TLS here.
//
// # Where this differs from NGINX
//
//   - State is shared by all event loops, as NGINX with `zone`; without
//     `zone` each NGINX worker balances on its own, so with several workers
//     NGINX's sequence is an interleaving of per-worker sequences.
//   - NGINX measures fail_timeout on a clock of whole seconds, so its bans
//     last up to a second longer; here they last exactly fail_timeout.
//   - The natural number of tries counts servers not marked down, as current
//     NGINX does (1.22 also counted down servers; the outcome is the same,
//     since down servers are never picked).
//   - Backup servers with hash or random balancing are an error in
//     [NewGroup] as well as in the configuration layer (NGINX's parser
//     refuses the `backup` parameter in such groups).
//   - A single-server group keeps NGINX's behaviour (no failure accounting,
//     no retry), documented at [Selection.Failed].
//
// # Concurrency
//
// A Group is shared by all event loops and is safe for concurrent use: one
// mutex per group guards the balancer state and the health counters, the
// equivalent of NGINX's `zone` (state shared by all workers) rather than its
// per-worker default. The set of peers is immutable once published: a
// resolution that changes it builds a new set (tiers, weights, the
// consistent hashing ring) and swaps an atomic pointer, so a balancer never
// sees a set change under it; a Selection keeps the set it started on for
// all its tries. A Selection belongs to one session and is used from one
// goroutine at a time (the session's event loop, or the pool/dial
// goroutine it is handed to for the duration of a dial job). Peer counters
// are atomics and may be read from any goroutine.
package pool
