package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/syserr"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// ErrQueueFull is returned when a Dialer with a bound (Config.MaxWorkers)
// has more sessions waiting for a worker than its queue holds.
var ErrQueueFull = errors.New("dial: queue full")

// ErrHandshakeTimeout is the error of a TLS handshake that did not finish
// within proxy_connect_timeout. NGINX logs nothing specific for it (known
// problem #12 of the reference); we name it.
var ErrHandshakeTimeout = errors.New("TLS handshake timed out")

// ErrConnectTimeout is the error of a TCP connect that did not finish within
// proxy_connect_timeout.
var ErrConnectTimeout = errors.New("upstream timed out (110: Connection timed out)")

// ErrNoSocket is wrapped by the error of an attempt that could not even
// create its socket for want of a local resource (EMFILE, ENFILE, ENOBUFS,
// ENOMEM): the process, not the peer, is at fault. Such an attempt ends the
// walk without charging the peer, as NGINX's NGX_ERROR from
// ngx_event_connect_peer ("socket() failed (24: Too many open files)",
// logged at alert, the session finalized with 500, no next upstream).
var ErrNoSocket = errors.New("no local resources for an upstream socket")

// Attempt is one try of a session on one peer, for $upstream_addr and
// $upstream_connect_time.
type Attempt struct {
	Peer *pool.Peer
	// Connect is the TCP connect time; Handshake the TLS handshake time (0
	// without TLS). Both are zero when the attempt failed before them.
	Connect, Handshake time.Duration
	Err                error
	// Handshaking: the attempt failed in the TLS handshake (NGINX's
	// "while SSL handshaking to upstream"), not while connecting.
	Handshaking bool
	// Local: the attempt failed before reaching the peer, for want of a
	// local resource (Err wraps ErrNoSocket); the peer was released, not
	// charged, and no other peer is tried.
	Local bool
	// Warm: the attempt took a pre-warmed connection (Job.Warm), so
	// Connect and Handshake are zero: the session paid for neither.
	Warm bool
}

// SocketOptions are the upstream socket's options (proxy_bind,
// proxy_socket_keepalive, proxy_socket_rcvbuf/sndbuf, tcp_nodelay). The
// zero value is the system's defaults, keepalive off and Nagle on; the
// engine sets NoDelay from tcp_nodelay (on by default, as in NGINX).
type SocketOptions struct {
	KeepAlive      bool
	Rcvbuf, Sndbuf int
	NoDelay        bool
	// Bind is the source address; the zero Addr lets the system choose.
	Bind netip.Addr
	// Transparent binds to a non-local address (IP_TRANSPARENT; needs
	// CAP_NET_ADMIN).
	Transparent bool
}

// Job asks for an upstream connection for one client session. The
// session fills it on its event loop and must not touch it (or its
// pool.Selection) again until Done has been called, except to Cancel it and,
// once Cancel has returned, to read Attempts.
type Job struct {
	// Sel is the session's walk over its group.
	Sel *pool.Selection
	// TLS returns the client configuration for a peer; nil TLS means a
	// plaintext upstream.
	TLS func(p *pool.Peer) (*tls.Config, error)
	// Observe, if set, is told the outcome of every handshake (cs is the
	// state after a successful one). It returns true when the handshake
	// failed after offering a session ticket and deserves one retry with
	// a full handshake, for which FullTLS gives the configuration.
	Observe func(p *pool.Peer, cs tls.ConnectionState, err error) (retryFull bool)
	FullTLS func(p *pool.Peer) (*tls.Config, error)
	// ConnectTimeout bounds the TCP connect and, afresh, the handshake.
	ConnectTimeout time.Duration
	// NextUpstream is proxy_next_upstream; NextUpstreamTimeout bounds the
	// whole walk (0: no limit).
	NextUpstream        bool
	NextUpstreamTimeout time.Duration
	// Socket are the upstream socket's options.
	Socket SocketOptions
	// ProxyHeader, if set, returns the PROXY protocol header to write in
	// clear before the handshake, given the upstream connection's local
	// address.
	ProxyHeader func(local net.Addr) []byte
	// Cancelled, if set, is polled between steps: the client went away.
	// Cancel, which also interrupts a connect or handshake in progress,
	// is the prompt way to say so.
	Cancelled func() bool
	// OnFailure, if set, is called on the worker after each failed attempt
	// (to log it), with whether the peer is now disabled.
	OnFailure func(a Attempt, disabled bool)
	// Warm, if set, holds pre-warmed connections of the session's server:
	// once the balancer picked a peer, a ready connection to that peer is
	// taken from it instead of dialing one.
	Warm *Warm
	// Done is called on the worker goroutine exactly once with the outcome.
	Done func(r Result)

	// Attempts is filled as the walk goes; it is the session's after Done,
	// or once Cancel has returned (the attempt cut short by Cancel is not
	// in it).
	Attempts []Attempt

	// ctl is the job's cancellation state, made by Submit. A pointer, so
	// that a Job used as a template (WarmConfig.Job) can be copied.
	ctl *jobControl
}

// jobControl is what Cancel and the goroutine running a job share.
type jobControl struct {
	mu sync.Mutex
	// stopped: Cancel was called; the job adds no more Attempts.
	stopped bool
	// cancel ends the job's context; nil until the job starts running.
	cancel context.CancelFunc
}

// Cancel ends the job as soon as it can: a TCP connect or TLS handshake in
// progress is interrupted (the socket is closed, so the peer sees the
// connection go), no other peer is tried, the peer being tried is released
// without being charged a failure, and Done is called with
// context.Canceled, unless the dial had already succeeded, in which case
// Done gets the connection as usual and the caller closes it. Once Cancel
// has returned the job no longer touches Attempts, so the caller may read
// them before Done. Cancel does nothing for a job that Submit did not
// take; it may be called more than once. It runs on any goroutine that
// Submit happened before (the session's loop, in the engine).
func (j *Job) Cancel() {
	c := j.ctl
	if c == nil {
		return
	}
	c.mu.Lock()
	c.stopped = true
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// begin starts the job's context under the dialer's root context, or
// reports that the job was cancelled before it started. Runs on the job's
// goroutine.
func (j *Job) begin(root context.Context) (context.Context, context.CancelFunc, bool) {
	ctx, cancel := context.WithCancel(root)
	c := j.ctl
	if c == nil {
		return ctx, cancel, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		cancel()
		return ctx, cancel, false
	}
	c.cancel = cancel
	return ctx, cancel, true
}

// record appends a finished attempt to Attempts unless the job was
// cancelled. Runs on the job's goroutine.
func (j *Job) record(a Attempt) {
	if c := j.ctl; c != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.stopped {
			return
		}
	}
	j.Attempts = append(j.Attempts, a)
}

// Result is the outcome of a Job.
type Result struct {
	Peer *pool.Peer
	// Raw is the connected socket (*net.TCPConn, or *net.UnixConn for a
	// unix domain socket peer): the caller hands it to its event loop.
	Raw net.Conn
	// TLS drives the session's TLS connection, or is nil for plaintext.
	TLS *tlsbridge.Conn
	// State is the handshake's outcome (zero without TLS).
	State tls.ConnectionState
	// Err is set when no peer could be reached; Raw and TLS are nil then.
	Err error
}

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

// flightStats count the dials in progress, by step, and the cancelled jobs.
type flightStats struct {
	connecting, handshaking atomic.Int64
	cancelled               atomic.Uint64
}

// InFlight are the dials a Dialer runs at one time, by step, with the
// jobs cancelled so far.
type InFlight struct {
	// Connecting counts TCP connects in progress (the PROXY header
	// included); Handshaking TLS handshakes in progress. Pre-warming
	// dials (Connect) count too.
	Connecting, Handshaking int
	// Cancelled counts the jobs that ended because Job.Cancel or
	// Close was called while they ran.
	Cancelled uint64
}

// InFlight reads the dials in progress without taking a lock. Safe from
// any goroutine.
func (d *Dialer) InFlight() InFlight {
	return InFlight{
		Connecting:  int(max(d.flight.connecting.Load(), 0)),
		Handshaking: int(max(d.flight.handshaking.Load(), 0)),
		Cancelled:   d.flight.cancelled.Load(),
	}
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
		res, a := d.attempt(ctx, j, p)
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

// Connect dials one connection to p the way a session's attempt does (TCP
// connect, PROXY header, TLS handshake, one retry with a full handshake)
// but outside any pool.Selection: the balancer's accounting is the caller's.
// j's Sel, Warm, Cancelled, OnFailure and Done are not used. Cancelling
// ctx ends a connect or handshake in progress. It blocks, on the caller's
// goroutine (the pre-warming refillers, warm.go).
func (d *Dialer) Connect(ctx context.Context, j *Job, p *pool.Peer) (Result, Attempt) {
	return d.attempt(ctx, j, p)
}

// attempt connects to one peer and handshakes. A handshake that failed
// after offering a session ticket is retried once on a new connection with
// a full handshake (the ticket is dropped by Observe): servers that mishandle
// resumption ("digest check failed") then still work, and the retry does
// not count against the peer.
func (d *Dialer) attempt(ctx context.Context, j *Job, p *pool.Peer) (Result, Attempt) {
	res, a, retry := d.attemptOnce(ctx, j, p, j.TLS)
	if retry && j.FullTLS != nil && ctx.Err() == nil {
		res, a, _ = d.attemptOnce(ctx, j, p, j.FullTLS)
	}
	return res, a
}

// attemptOnce is one connection to p: connect, PROXY header, handshake
// with the configuration tlsFor gives (nil: plaintext). Cancelling parent
// closes the socket, which ends a connect, header write or handshake at
// once; the attempt's error then wraps context.Canceled and the peer is
// not charged (no handshake failure is observed). It reports whether the
// handshake deserves a retry with a full one. Runs on the caller's
// goroutine (a worker, or a refiller through Connect).
func (d *Dialer) attemptOnce(parent context.Context, j *Job, p *pool.Peer, tlsFor func(*pool.Peer) (*tls.Config, error)) (Result, Attempt, bool) {
	a := Attempt{Peer: p}
	t0 := time.Now()
	timeout := j.ConnectTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	d.flight.connecting.Add(1)
	connecting := true
	defer func() {
		if connecting {
			d.flight.connecting.Add(-1)
		}
	}()
	ctx, cancel := context.WithTimeout(parent, timeout)
	network, addr := p.Network()
	c, err := dialerFor(&j.Socket, network).DialContext(ctx, network, addr)
	cancel()
	if err != nil {
		if errno, ok := noSocket(err); ok {
			a.Err = &noSocketError{errno: errno, err: err}
			a.Local = true
			return Result{}, a, false
		}
		switch {
		case parent.Err() != nil:
			err = fmt.Errorf("connect() cancelled: %w", parent.Err())
		case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
			err = ErrConnectTimeout
		case errors.As(err, new(syscall.Errno)):
			err = fmt.Errorf("connect() failed (%s): %w", syserr.Paren(err), err)
		default:
			err = fmt.Errorf("connect() failed: %w", err)
		}
		a.Err = err
		return Result{}, a, false
	}
	raw := c
	a.Connect = time.Since(t0)
	p.ObserveConnect(a.Connect)
	// From here a cancel closes the socket: that ends a blocked write or
	// handshake at once (a deadline set by the cancel could be replaced
	// by the handshake's own).
	stop := context.AfterFunc(parent, func() { raw.Close() })
	// cancelled ends the attempt as cancelled if parent is done. The
	// socket is closed either way.
	cancelled := func() bool {
		if stop() && parent.Err() == nil {
			return false
		}
		raw.Close()
		a.Err = fmt.Errorf("dial cancelled: %w", context.Canceled)
		return true
	}
	if tc, ok := raw.(*net.TCPConn); ok && !j.Socket.NoDelay {
		tc.SetNoDelay(false)
	}
	if j.ProxyHeader != nil {
		if _, err := raw.Write(j.ProxyHeader(raw.LocalAddr())); err != nil {
			if cancelled() {
				return Result{}, a, false
			}
			raw.Close()
			a.Err = fmt.Errorf("sending the PROXY protocol header failed: %w", err)
			return Result{}, a, false
		}
	}
	if tlsFor == nil {
		if cancelled() {
			return Result{}, a, false
		}
		return Result{Peer: p, Raw: raw}, a, false
	}
	cfg, err := tlsFor(p)
	if err != nil {
		stop()
		raw.Close()
		a.Err = err
		return Result{}, a, false
	}
	d.flight.connecting.Add(-1)
	connecting = false
	d.flight.handshaking.Add(1)
	defer d.flight.handshaking.Add(-1)
	t1 := time.Now()
	tc := tlsbridge.NewConn(raw, cfg)
	err = tc.Handshake(t1.Add(timeout))
	if cancelled() {
		// Whatever the handshake gave, the caller no longer wants it;
		// a cancelled handshake says nothing about the peer.
		return Result{}, a, false
	}
	retry := false
	if j.Observe != nil {
		var cs tls.ConnectionState
		if err == nil {
			cs = tc.ConnectionState()
		}
		retry = j.Observe(p, cs, err)
	}
	if err != nil {
		p.ObserveHandshakeFailure(FailureClass(tlsbridge.Classify(err)))
		tc.Close()
		if isTimeout(err) {
			err = &handshakeTimeoutError{after: timeout, err: err}
		} else {
			err = fmt.Errorf("TLS handshake failed: %w", err)
		}
		a.Err = err
		a.Handshaking = true
		return Result{}, a, retry
	}
	a.Handshake = time.Since(t1)
	state := tc.ConnectionState()
	p.ObserveHandshake(a.Handshake, state.DidResume)
	return Result{Peer: p, Raw: raw, TLS: tc, State: state}, a, false
}

// dialerFor returns a net.Dialer applying o to a socket of network
// ("tcp" or "unix"): a unix domain socket takes only the buffer sizes, the
// rest are TCP/IP's.
func dialerFor(o *SocketOptions, network string) *net.Dialer {
	d := &net.Dialer{KeepAlive: -1}
	if network == "unix" {
		o = &SocketOptions{Rcvbuf: o.Rcvbuf, Sndbuf: o.Sndbuf}
	}
	if o.KeepAlive {
		// SO_KEEPALIVE with the system's timers, as NGINX.
		d.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: -1}
		d.KeepAlive = 0
	}
	if o.Bind.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.Bind.AsSlice()}
	}
	if o.Rcvbuf > 0 || o.Sndbuf > 0 || o.Transparent {
		opts := *o
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				if opts.Rcvbuf > 0 {
					serr = errors.Join(serr, syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, opts.Rcvbuf))
				}
				if opts.Sndbuf > 0 {
					serr = errors.Join(serr, syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, opts.Sndbuf))
				}
				if opts.Transparent {
					serr = errors.Join(serr, syscall.SetsockoptInt(int(fd), syscall.SOL_IP, syscall.IP_TRANSPARENT, 1))
				}
			})
			if err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("setting upstream socket options: %w", serr)
			}
			return nil
		}
	}
	return d
}

// handshakeTimeoutError is an attempt's error when the handshake did not
// finish within proxy_connect_timeout. It reads "TLS handshake timed out
// after 500ms" and matches both ErrHandshakeTimeout and the deadline error
// underneath, so that tlsbridge.Classify names it a timeout.
type handshakeTimeoutError struct {
	after time.Duration
	err   error
}

func (e *handshakeTimeoutError) Error() string {
	return fmt.Sprintf("%v after %v", ErrHandshakeTimeout, e.after)
}

func (e *handshakeTimeoutError) Unwrap() []error { return []error{ErrHandshakeTimeout, e.err} }

// noSocketError is an attempt's error when socket() failed for want of a
// local resource. It reads as NGINX's line ("socket() failed (24: Too many
// open files)") and matches ErrNoSocket, the errno and the dial error.
type noSocketError struct {
	errno syscall.Errno
	err   error
}

func (e *noSocketError) Error() string {
	return fmt.Sprintf("socket() failed (%s)", syserr.Paren(e.errno))
}

func (e *noSocketError) Unwrap() []error { return []error{ErrNoSocket, e.err} }

// noSocket reports whether a dial failed in socket() (or in bind() for
// proxy_bind) for want of a local resource, and the errno.
func noSocket(err error) (syscall.Errno, bool) {
	var se *os.SyscallError
	if !errors.As(err, &se) || (se.Syscall != "socket" && se.Syscall != "bind") {
		return 0, false
	}
	var errno syscall.Errno
	if !errors.As(se.Err, &errno) {
		return 0, false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM:
		return errno, true
	}
	return 0, false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
