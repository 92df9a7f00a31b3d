package pool

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Active health checks (NGINX Plus's health_check): a [HealthChecker] probes
// every peer of a group on its own goroutine and takes a peer out of
// selection after Fails consecutive failed probes, back after Passes
// consecutive successes. Several checkers may watch one group (one per
// server block with health_check, and briefly an old and a new
// configuration's during a reload): a peer is out while any of them holds it
// out.

// peerHealth is a Peer's active-check state, part of its stats so that a
// reload that keeps the peer (Inherit) keeps it. Lock-free: the balancers
// read down under the group's lock, checkers write it from their
// goroutines.
type peerHealth struct {
	// down counts the checkers that currently hold the peer out.
	down       atomic.Int32
	ok, failed atomic.Uint64
}

// Unhealthy reports whether an active health check holds the peer out of
// selection. Safe from any goroutine.
func (p *Peer) Unhealthy() bool { return p.stats.health.down.Load() > 0 }

// HealthChecks returns how many active health-check probes of the peer
// passed and failed so far. Safe from any goroutine.
func (p *Peer) HealthChecks() (ok, failed uint64) {
	return p.stats.health.ok.Load(), p.stats.health.failed.Load()
}

// HealthConfig is one health_check directive's parameters.
type HealthConfig struct {
	// Interval between two probes of a peer (interval=, default 5s).
	Interval time.Duration
	// Jitter delays each probe by a random time up to Jitter (jitter=,
	// default 0).
	Jitter time.Duration
	// Fails consecutive failed probes take a peer out (fails=, 1);
	// Passes consecutive successes bring it back (passes=, 1).
	Fails, Passes int
	// Timeout bounds one probe (health_check_timeout, 5s); the probe
	// function receives a context with this deadline.
	Timeout time.Duration
	// Mandatory starts every peer out until its first probe passes.
	Mandatory bool
	// Probe checks one peer: nil means healthy. It runs on the checker's
	// goroutines, one probe per peer at a time.
	Probe func(ctx context.Context, p *Peer) error
	// Logf receives one line per state change (up: the peer came back).
	// Called from the checker's goroutines; nil: no log.
	Logf func(up bool, format string, args ...any)
}

// HealthChecker runs the probes of one group.
type HealthChecker struct {
	g   *Group
	cfg HealthConfig

	mu      sync.Mutex
	held    map[*Peer]bool // peers this checker holds out
	stopped bool
	holding bool // Hold: no state changes; Run's end keeps held
}

// NewHealthChecker returns a checker of g's peers (peers marked down in
// the configuration are not probed). It holds out at once the peers that
// are out already, and all of them with Mandatory. Call Run to start it;
// Run or Stop releases what it holds.
func NewHealthChecker(g *Group, cfg HealthConfig) *HealthChecker {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	cfg.Fails, cfg.Passes = max(cfg.Fails, 1), max(cfg.Passes, 1)
	if cfg.Logf == nil {
		cfg.Logf = func(bool, string, ...any) {}
	}
	h := &HealthChecker{g: g, cfg: cfg, held: map[*Peer]bool{}}
	for _, p := range g.Peers() {
		// A peer another checker holds out (the replaced
		// configuration's, whose state a reload carries with the
		// peer's stats) stays out until this checker has seen Passes
		// successes: taken here, before the caller retires the other.
		if !p.Down && (cfg.Mandatory || p.Unhealthy()) {
			h.setOut(p, true)
		}
	}
	return h
}

// setOut records the checker's verdict on p; false once Stop ran. Called
// from the peer's probe goroutine.
func (h *HealthChecker) setOut(p *Peer, out bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || h.holding || h.held[p] == out {
		return false
	}
	if out {
		h.held[p] = true
		p.stats.health.down.Add(1)
	} else {
		delete(h.held, p)
		p.stats.health.down.Add(-1)
	}
	return true
}

// Hold freezes what the checker decided: from now on no peer changes
// state, and Run, when its context ends, returns without releasing the
// peers it holds out; Stop still releases them. For a graceful quit: cancel
// Run's context after Hold, and the probes end while the sessions still
// connecting see the group as last probed. Safe from any goroutine, more
// than once.
func (h *HealthChecker) Hold() {
	h.mu.Lock()
	h.holding = true
	h.mu.Unlock()
}

// Stop releases every peer the checker holds out, at once, and makes it
// hold none from now on; cancel Run's context too, to end the probes.
// Safe from any goroutine, more than once.
func (h *HealthChecker) Stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	for p := range h.held {
		p.stats.health.down.Add(-1)
	}
	clear(h.held)
}

// Run probes every peer at once and then every Interval until ctx is done;
// it returns after releasing every peer it held out (Stop, unless Hold
// came first), so a configuration that drops the check does not leave
// peers out. Each peer
// is probed on its own goroutine, so a hanging peer delays no other. When
// DNS re-resolution changes the group's peers, a new peer is probed at
// once (and, with Mandatory, held out until it passes) and a peer that
// left is no longer probed. Runs on the caller's goroutine (start it with
// go).
func (h *HealthChecker) Run(ctx context.Context) {
	var wg sync.WaitGroup
	watching := map[*Peer]context.CancelFunc{}
	first := true
	for {
		set := h.g.set.Load()
		in := make(map[*Peer]bool, len(set.peers))
		for _, p := range set.peers {
			if p.Down {
				continue
			}
			in[p] = true
			if watching[p] != nil {
				continue
			}
			if !first && h.cfg.Mandatory {
				h.setOut(p, true)
			}
			pctx, cancel := context.WithCancel(ctx)
			watching[p] = cancel
			wg.Add(1)
			go func() {
				defer wg.Done()
				h.watch(pctx, p)
			}()
		}
		for p, cancel := range watching {
			if !in[p] {
				cancel()
				delete(watching, p)
				h.setOut(p, false)
			}
		}
		first = false
		select {
		case <-ctx.Done():
			wg.Wait()
			h.mu.Lock()
			hold := h.holding
			h.mu.Unlock()
			if !hold {
				h.Stop()
			}
			return
		case <-set.changed:
		}
	}
}

// watch is the probe loop of one peer, on its own goroutine.
func (h *HealthChecker) watch(ctx context.Context, p *Peer) {
	h.mu.Lock()
	out := h.held[p]
	h.mu.Unlock()
	okRun, failRun := 0, 0
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
		err := h.cfg.Probe(pctx, p)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			p.stats.health.ok.Add(1)
			okRun, failRun = okRun+1, 0
			if out && okRun >= h.cfg.Passes {
				out = false
				if !h.setOut(p, false) {
					return
				}
				h.cfg.Logf(true, "peer %s of upstream %q is healthy after %d passed health checks", p, h.g.name, okRun)
			}
		} else {
			p.stats.health.failed.Add(1)
			failRun, okRun = failRun+1, 0
			if !out && failRun >= h.cfg.Fails {
				out = true
				if !h.setOut(p, true) {
					return
				}
				h.cfg.Logf(false, "peer %s of upstream %q is unhealthy: health check failed: %v", p, h.g.name, err)
			}
		}
		d := h.cfg.Interval
		if h.cfg.Jitter > 0 {
			d += rand.N(h.cfg.Jitter)
		}
		t.Reset(d)
	}
}
