package dial

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsrelay/tlsrelay/pool"
)

// Pre-warmed upstream connections (proxy_ssl_prewarm, tlsrelay's own
// directive): a Warm keeps up to Size connections per peer with their TLS
// handshake done, so that a session whose balancer picked that peer pays
// neither the connect nor the handshake. The balancer still picks the peer
// (Job.Warm is consulted after pool.Selection.Next), so balancing,
// max_conns and the max_fails accounting stay NGINX's; a connection
// waiting in a Warm is no active connection of its peer (as NGINX's idle
// keepalive connections are not). One refiller goroutine per peer dials
// through Dialer.Connect, the dialer's own path, and closes connections
// older than MaxIdle or that the upstream closed.

// WarmResult is what became of a pre-warmed connection, for metrics.
type WarmResult uint8

// Pre-warmed connection outcomes.
const (
	// WarmUsed: handed to a session.
	WarmUsed WarmResult = iota
	// WarmExpired: closed unused after MaxIdle.
	WarmExpired
	// WarmClosed: the upstream closed it (or broke it) while it waited.
	WarmClosed
	// WarmFailed: dialing or handshaking it failed.
	WarmFailed
)

// WarmResults is the number of WarmResult values.
const WarmResults = 4

// String returns "used", "expired", "closed" or "failed".
func (r WarmResult) String() string {
	switch r {
	case WarmUsed:
		return "used"
	case WarmExpired:
		return "expired"
	case WarmClosed:
		return "closed"
	case WarmFailed:
		return "failed"
	}
	return "unknown"
}

// Bounds of a Warm's refill backoff after a failed dial.
const (
	warmBackoffMin = 100 * time.Millisecond
	warmBackoffMax = 30 * time.Second
)

// warmSweep is how often a refiller polls its idle connections (to store
// late session tickets and notice upstreams that closed them) when no
// expiry is due sooner.
const warmSweep = time.Second

// WarmConfig configures a Warm.
type WarmConfig struct {
	// Size is how many ready connections to keep per peer (at least 1).
	Size int
	// MaxIdle is how long a ready connection may wait; older ones are
	// closed and replaced. Zero: 30s.
	MaxIdle time.Duration
	// Job is the template of every dial: TLS, FullTLS, Observe,
	// ConnectTimeout and Socket as for a session of the server (no
	// ProxyHeader: the header would need a client). It must not depend on
	// a session.
	Job Job
}

// WarmHooks are what a running Warm reports to. Nil fields are left out.
type WarmHooks struct {
	// Count is told every outcome. Called on a refiller or on the dial
	// worker that took the connection.
	Count func(WarmResult)
	// Logf logs a failed dial (once, when a peer's refills start failing;
	// failed set) and the peer's recovery (failed clear). Called on the
	// peer's refiller.
	Logf func(p *pool.Peer, failed bool, err error)
}

// Warm is a set of pre-warmed connections for one group and one TLS
// policy (a server block). Take is safe from any goroutine; Start and Stop
// run on the goroutine that publishes or retires the configuration.
type Warm struct {
	cfg   WarmConfig
	peers map[*pool.Peer]*warmPeer
	// Set by Start, before any refiller runs; read only after.
	d     *Dialer
	hooks WarmHooks

	// total mirrors the ready connections of all peers, for Total.
	total   atomic.Int64
	stopped atomic.Bool
	// life orders Start and Stop: a Warm stopped first never starts.
	life   sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// warmPeer is one peer's stack of ready connections.
type warmPeer struct {
	p    *pool.Peer
	kick chan struct{} // a Take left room: refill now

	mu    sync.Mutex
	ready []warmConn // oldest first; Take pops the newest
	// stopped: Stop ran; nothing is pushed any more.
	stopped bool
}

// warmConn is one ready connection and when its handshake completed.
type warmConn struct {
	res Result
	at  time.Time
}

// NewWarm returns a Warm for g's primary peers: backup peers (used only
// when no primary can be) and peers marked down are never warmed, and
// sessions reach them by dialing. It holds nothing until Start.
func NewWarm(g *pool.Group, cfg WarmConfig) *Warm {
	cfg.Size = max(cfg.Size, 1)
	if cfg.MaxIdle <= 0 {
		cfg.MaxIdle = 30 * time.Second
	}
	w := &Warm{cfg: cfg, peers: map[*pool.Peer]*warmPeer{}}
	for _, p := range g.Peers() {
		if p.Down || p.Backup {
			continue
		}
		w.peers[p] = &warmPeer{p: p, kick: make(chan struct{}, 1)}
	}
	return w
}

// Start starts one refiller goroutine per peer, dialing through d and
// reporting to h; until then Take finds nothing. A second Start, or one
// after Stop, does nothing.
func (w *Warm) Start(d *Dialer, h WarmHooks) {
	w.life.Lock()
	defer w.life.Unlock()
	if w.cancel != nil || w.stopped.Load() {
		return
	}
	w.d, w.hooks = d, h
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	for _, wp := range w.peers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.refill(ctx, wp)
		}()
	}
}

// Stop ends the refillers (a dial in progress is cancelled), waits for
// them, and closes every ready connection. Safe from any goroutine, more
// than once; Take finds nothing afterwards.
func (w *Warm) Stop() {
	w.life.Lock()
	if w.stopped.Swap(true) {
		w.life.Unlock()
		return
	}
	cancel := w.cancel
	w.life.Unlock()
	if cancel != nil {
		cancel()
	}
	w.wg.Wait()
	for _, wp := range w.peers {
		wp.mu.Lock()
		wp.stopped = true
		ready := wp.ready
		wp.ready = nil
		w.total.Add(-int64(len(ready)))
		wp.mu.Unlock()
		for _, c := range ready {
			c.res.TLS.Close()
		}
	}
}

// Total returns how many connections are ready now, all peers together.
// It reads one atomic (for a scrape). Safe from any goroutine.
func (w *Warm) Total() int { return int(w.total.Load()) }

// Ready returns how many connections to p are ready now. Safe from any
// goroutine.
func (w *Warm) Ready(p *pool.Peer) int {
	if w == nil {
		return 0
	}
	wp := w.peers[p]
	if wp == nil {
		return 0
	}
	wp.mu.Lock()
	defer wp.mu.Unlock()
	return len(wp.ready)
}

// Take returns a ready connection to p, the newest one, if there is one
// that is younger than MaxIdle and that the upstream has not closed (it is
// polled first: what the upstream sent meanwhile, a session ticket or the
// first bytes of a protocol where the server speaks first, is kept for the
// session). Connections found stale are closed and counted. It returns
// false when none is ready (or w is nil): the caller dials. Safe from any
// goroutine (a dial worker).
func (w *Warm) Take(p *pool.Peer) (Result, bool) {
	if w == nil || w.stopped.Load() {
		return Result{}, false
	}
	wp := w.peers[p]
	if wp == nil {
		return Result{}, false
	}
	for {
		wp.mu.Lock()
		n := len(wp.ready)
		if n == 0 {
			wp.mu.Unlock()
			return Result{}, false
		}
		c := wp.ready[n-1]
		wp.ready[n-1] = warmConn{}
		wp.ready = wp.ready[:n-1]
		w.total.Add(-1)
		wp.mu.Unlock()
		wp.wake()
		if time.Since(c.at) > w.cfg.MaxIdle {
			w.discard(c, WarmExpired)
			continue
		}
		if err := c.res.TLS.Poll(); err != nil {
			w.discard(c, WarmClosed)
			continue
		}
		w.count(WarmUsed)
		return c.res, true
	}
}

// wake asks the peer's refiller to refill now, without blocking.
func (wp *warmPeer) wake() {
	select {
	case wp.kick <- struct{}{}:
	default:
	}
}

func (w *Warm) count(r WarmResult) {
	if w.hooks.Count != nil {
		w.hooks.Count(r)
	}
}

// discard closes a connection that will not be used and counts why.
func (w *Warm) discard(c warmConn, r WarmResult) {
	c.res.TLS.Close()
	w.count(r)
}

// refill keeps wp's stack full until ctx ends: it sweeps the stack (expired
// and closed connections out), dials while there is room, and otherwise
// waits for a Take, the next expiry or the next sweep. After a failed dial
// it waits, from 100ms doubling up to 30s, before the next. A peer the
// balancers cannot pick now (banned, unhealthy) is not dialed. Runs on the
// peer's refiller goroutine.
func (w *Warm) refill(ctx context.Context, wp *warmPeer) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var backoff time.Duration
	var retryAt time.Time // after a failed dial: no dial before
	for {
		now := time.Now()
		next := w.sweep(wp, now)
		room := w.room(wp)
		if room && !now.Before(retryAt) && wp.p.State(now) == pool.PeerUp {
			j := w.cfg.Job
			res, a := w.d.Connect(ctx, &j, wp.p)
			if ctx.Err() != nil {
				if a.Err == nil {
					res.TLS.Close()
				}
				return
			}
			if a.Err != nil {
				w.count(WarmFailed)
				if backoff == 0 && w.hooks.Logf != nil {
					w.hooks.Logf(wp.p, true, a.Err)
				}
				backoff = min(max(2*backoff, warmBackoffMin), warmBackoffMax)
				retryAt = time.Now().Add(backoff)
				continue
			}
			if backoff > 0 && w.hooks.Logf != nil {
				w.hooks.Logf(wp.p, false, nil)
			}
			backoff, retryAt = 0, time.Time{}
			if !w.push(wp, res) {
				res.TLS.Close()
				return
			}
			continue
		}
		wait := min(warmSweep, w.cfg.MaxIdle)
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(now), time.Millisecond))
		}
		if room && retryAt.After(now) {
			wait = min(wait, retryAt.Sub(now))
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-wp.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// room reports whether wp holds fewer than Size connections.
func (w *Warm) room(wp *warmPeer) bool {
	wp.mu.Lock()
	defer wp.mu.Unlock()
	return len(wp.ready) < w.cfg.Size
}

// push adds a fresh connection; false once Stop ran.
func (w *Warm) push(wp *warmPeer, res Result) bool {
	wp.mu.Lock()
	defer wp.mu.Unlock()
	if wp.stopped {
		return false
	}
	wp.ready = append(wp.ready, warmConn{res: res, at: time.Now()})
	w.total.Add(1)
	return true
}

// sweep closes wp's connections that are older than MaxIdle or that the
// upstream closed, polling the others (which stores late session tickets),
// and returns when the oldest remaining one expires (zero: none left).
// Runs on the peer's refiller, under wp.mu: a poll does not block.
func (w *Warm) sweep(wp *warmPeer, now time.Time) time.Time {
	var gone []warmConn
	var why []WarmResult
	wp.mu.Lock()
	kept := wp.ready[:0]
	for _, c := range wp.ready {
		switch {
		case now.Sub(c.at) > w.cfg.MaxIdle:
			gone, why = append(gone, c), append(why, WarmExpired)
		case c.res.TLS.Poll() != nil:
			gone, why = append(gone, c), append(why, WarmClosed)
		default:
			kept = append(kept, c)
		}
	}
	clear(wp.ready[len(kept):])
	wp.ready = kept
	w.total.Add(-int64(len(gone)))
	var next time.Time
	if len(kept) > 0 {
		next = kept[0].at.Add(w.cfg.MaxIdle)
	}
	wp.mu.Unlock()
	for i, c := range gone {
		w.discard(c, why[i])
	}
	return next
}
