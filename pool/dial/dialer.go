package dial

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/tlsrelay/tlsrelay/pool"
)

// This file holds the Dialer: its goroutines, how a job reaches one, and a
// session's walk over its group, one attempt (attempt.go) per peer.

// Config sizes a Dialer. The zero value is what the engine uses: no
// bound, every job starts at once.
type Config struct {
	// MinWorkers goroutines always wait for jobs (a job handed to one
	// reuses its stack instead of starting a goroutine). Zero: 8.
	MinWorkers int
	// MaxWorkers, when positive, bounds the goroutines dialing at once;
	// jobs past it wait in a queue of Queue jobs. Each goroutine blocks
	// for a whole connect and handshake, so with a bound, peers that hang
	// hold every worker and stall the sessions of every other peer: use
	// it only where all jobs go to peers of the same health (tests). Zero,
	// the default: no bound, a job gets an idle goroutine or a new one at
	// once. What bounds the goroutines then is what bounds the sessions
	// (worker_connections): one per session being dialed.
	MaxWorkers int
	// IdleTimeout is how long a goroutine above MinWorkers waits for a
	// job before it exits. Zero: 10s.
	IdleTimeout time.Duration
	// Queue is how many jobs may wait for a worker when MaxWorkers is
	// set. Zero: 65536. Without MaxWorkers nothing waits.
	Queue int
}

// Dialer runs dial jobs on goroutines. A job is handed to a goroutine that
// waits for one, or to a new goroutine when none waits; MinWorkers of them
// stay when idle, the others exit after IdleTimeout without a job. Reusing
// a goroutine saves starting one and growing its stack (crypto/tls's
// handshake needs more than a new goroutine's); neither is held by one job
// longer than its connect and handshake, and nothing else is shared by two
// jobs while they wait on the network. A Config.MaxWorkers bound
// brings back a queue (see there). Submit is safe from any goroutine.
//
// Every dial runs under a context of its own, a child of the dialer's:
// Job.Cancel ends one dial (the client went away), Close ends all of
// them (the process stops), and either interrupts a connect or handshake
// at once instead of waiting for proxy_connect_timeout.
//
// The dialer also records what it learns into each peer, for metrics: the
// TCP connect time ([pool.Peer.ObserveConnect]), and for every TLS handshake its
// time and whether it resumed ([pool.Peer.ObserveHandshake]) or its failure class
// ([pool.Peer.ObserveHandshakeFailure]). [Dialer.Stats] reads its goroutines and
// queue, [Dialer.InFlight] its dials in progress.
type Dialer struct {
	cfg Config
	// jobs hands jobs to waiting goroutines: unbuffered without
	// MaxWorkers (a send succeeds only when a goroutine waits), the queue
	// with it.
	jobs   chan *Job
	wg     sync.WaitGroup
	stopMu sync.RWMutex
	closed bool
	// root is the parent of every job's context; Close cancels it.
	root       context.Context
	cancelRoot context.CancelFunc

	mu      sync.Mutex
	workers int // running
	idle    int // waiting for a job

	stats  dialerStats // atomics for Stats (stats.go)
	flight flightStats // atomics for InFlight
}

// NewDialer starts the minimum number of worker goroutines.
func NewDialer(c Config) *Dialer {
	if c.MinWorkers <= 0 {
		c.MinWorkers = 8
	}
	if c.MaxWorkers < 0 {
		c.MaxWorkers = 0
	}
	if c.MaxWorkers > 0 && c.MaxWorkers < c.MinWorkers {
		c.MaxWorkers = c.MinWorkers
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 10 * time.Second
	}
	queue := 0
	if c.MaxWorkers > 0 {
		if c.Queue <= 0 {
			c.Queue = 65536
		}
		queue = c.Queue
	} else {
		c.Queue = 0
	}
	d := &Dialer{cfg: c, jobs: make(chan *Job, queue)}
	d.root, d.cancelRoot = context.WithCancel(context.Background())
	d.mu.Lock()
	for i := 0; i < c.MinWorkers; i++ {
		d.spawnLocked(nil)
	}
	d.mu.Unlock()
	return d
}

// spawnLocked starts a worker goroutine, which runs first (if not nil)
// and then waits for jobs; d.mu is held.
func (d *Dialer) spawnLocked(first *Job) {
	d.workers++
	d.stats.workers.Store(int64(d.workers))
	if first == nil {
		d.idle++
	}
	d.wg.Add(1)
	go d.work(first)
}

// Workers returns how many worker goroutines run now. Safe from any
// goroutine.
func (d *Dialer) Workers() int {
	return int(d.stats.workers.Load())
}

// Submit starts j: at once on a goroutine of its own, or, with
// Config.MaxWorkers, when a worker is free. It never blocks. It
// returns net.ErrClosed after Close, and ErrQueueFull when a bounded
// dialer's queue is full; j.Done is not called then.
func (d *Dialer) Submit(j *Job) error {
	d.stopMu.RLock()
	defer d.stopMu.RUnlock()
	if d.closed {
		d.stats.rejected.Add(1)
		return net.ErrClosed
	}
	j.ctl = new(jobControl)
	if d.cfg.MaxWorkers == 0 {
		d.stats.queued.Add(1)
		select {
		case d.jobs <- j: // a waiting goroutine took it
		default:
			d.mu.Lock()
			d.spawnLocked(j)
			d.mu.Unlock()
		}
		return nil
	}
	select {
	case d.jobs <- j:
		d.stats.queued.Add(1)
	default:
		d.stats.rejected.Add(1)
		return ErrQueueFull
	}
	// Every queued job needs a worker that is not busy yet.
	d.mu.Lock()
	if d.idle < len(d.jobs) && d.workers < d.cfg.MaxWorkers {
		d.spawnLocked(nil)
	}
	d.mu.Unlock()
	return nil
}

// Close cancels every job (a connect or handshake in progress ends at
// once, queued jobs end without dialing; each Done is called with
// context.Canceled), refuses new ones, and waits for the worker goroutines
// to exit. Safe from any goroutine but a job's Done.
func (d *Dialer) Close() {
	d.stopMu.Lock()
	if !d.closed {
		d.closed = true
		close(d.jobs)
		d.cancelRoot()
	}
	d.stopMu.Unlock()
	d.wg.Wait()
}

// work runs first (if not nil), then the jobs handed to it until Close, or
// until it has waited IdleTimeout for one and more than MinWorkers run.
// Runs on its own goroutine.
func (d *Dialer) work(first *Job) {
	defer d.wg.Done()
	if first != nil {
		d.runJob(first)
		d.mu.Lock()
		d.idle++
		d.mu.Unlock()
	}
	idle := time.NewTimer(d.cfg.IdleTimeout)
	defer idle.Stop()
	for {
		select {
		case j, ok := <-d.jobs:
			if !ok {
				return
			}
			d.mu.Lock()
			d.idle--
			d.mu.Unlock()
			d.runJob(j)
			d.mu.Lock()
			d.idle++
			d.mu.Unlock()
			idle.Reset(d.cfg.IdleTimeout)
		case <-idle.C:
			d.mu.Lock()
			if d.workers > d.cfg.MinWorkers {
				d.workers--
				d.stats.workers.Store(int64(d.workers))
				d.idle--
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
			idle.Reset(d.cfg.IdleTimeout)
		}
	}
}

// runJob runs j under a context of its own and calls its Done. Runs on a
// worker goroutine.
func (d *Dialer) runJob(j *Job) {
	d.stats.busy.Add(1)
	ctx, cancel, ok := j.begin(d.root)
	var r Result
	if ok {
		r = d.run(ctx, j)
	} else {
		r = Result{Err: context.Canceled}
	}
	if r.Err != nil && ctx.Err() != nil {
		d.flight.cancelled.Add(1)
	}
	cancel()
	j.Done(r)
	d.stats.busy.Add(-1)
}

// run walks the session's group until a peer answers, none is left, or ctx
// is cancelled. Runs on a worker goroutine.
func (d *Dialer) run(ctx context.Context, j *Job) Result {
	if j.Prepare != nil {
		if err := j.Prepare(ctx); err != nil {
			if ctx.Err() != nil {
				return Result{Err: context.Canceled}
			}
			return Result{Err: err}
		}
	}
	// proxy_next_upstream_timeout counts from here, after any lookup, as
	// NGINX's peer.start_time is set once the name is resolved.
	start := time.Now()
	var lastErr error
	for {
		if ctx.Err() != nil || j.Cancelled != nil && j.Cancelled() {
			return Result{Err: context.Canceled}
		}
		now := time.Now()
		p, err := j.Sel.Next(now)
		if err != nil {
			if lastErr != nil && errors.Is(err, pool.ErrNoTriesLeft) {
				return Result{Err: lastErr}
			}
			return Result{Err: err}
		}
		if res, ok := j.Warm.Take(p); ok {
			j.record(Attempt{Peer: p, Warm: true})
			j.Sel.Connected(p, time.Now())
			return res
		}
		res, a := attempt(ctx, j, p, attemptOpts{flight: &d.flight})
		if a.Err != nil && ctx.Err() != nil {
			// Cancelled, not failed: the peer is not to blame, and the
			// session that asked is gone or going.
			j.Sel.Release(p)
			return Result{Err: context.Canceled}
		}
		j.record(a)
		if a.Err == nil {
			j.Sel.Connected(p, time.Now())
			return res
		}
		if a.Local {
			// Out of descriptors or memory here: no peer is to blame, and
			// the next one would fail the same way.
			j.Sel.Release(p)
			if j.OnFailure != nil {
				j.OnFailure(a, false)
			}
			return Result{Err: a.Err}
		}
		lastErr = a.Err
		disabled := j.Sel.Failed(p, time.Now())
		if j.OnFailure != nil {
			j.OnFailure(a, disabled)
		}
		if !j.NextUpstream {
			return Result{Err: lastErr}
		}
		if j.NextUpstreamTimeout > 0 && time.Since(start) >= j.NextUpstreamTimeout {
			return Result{Err: lastErr}
		}
	}
}
