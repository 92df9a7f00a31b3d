package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/syserr"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// This file holds one attempt: one connection to one peer (connect, PROXY
// header, handshake, the retry with a full handshake), shared by a
// session's walk (dialer.go), the pre-warming refillers (warm.go) and the
// active health checks' probes (Probe).

// Connect dials one connection to p the way a session's attempt does (TCP
// connect, PROXY header, TLS handshake, one retry with a full handshake)
// but outside any pool.Selection: the balancer's accounting is the caller's.
// j's Sel, Warm, Cancelled, OnFailure and Done are not used. Cancelling
// ctx ends a connect or handshake in progress. It blocks, on the caller's
// goroutine (the pre-warming refillers, warm.go).
func (d *Dialer) Connect(ctx context.Context, j *Job, p *pool.Peer) (Result, Attempt) {
	return attempt(ctx, j, p, attemptOpts{flight: &d.flight})
}

// Probe makes one connection to p for an active health check
// (health_check) exactly as a session's attempt is made: the connect with
// every socket option of j.Socket, the PROXY header, the TLS handshake
// with j.TLS and, when a refused session ticket makes Observe ask for it,
// the retry with a full handshake. port, when not 0, is connected to
// instead of the peer's own (health_check port=; a unix domain socket
// peer has none). j's Sel, Warm, Cancelled, OnFailure and Done are not
// used. ctx's deadline (health_check_timeout) bounds the connect and the
// handshake as a timeout, besides j.ConnectTimeout; cancelling ctx ends
// them at once. A probe is no traffic: it is counted neither in the peer's
// connect and handshake series nor in a Dialer's InFlight. On success the
// caller owns the connection (Result.TLS, or Result.Raw without TLS), whose
// deadline is ctx's. It blocks, on the caller's goroutine (a health
// checker's).
func Probe(ctx context.Context, j *Job, p *pool.Peer, port int) (Result, Attempt) {
	return attempt(ctx, j, p, attemptOpts{quiet: true, port: port})
}

// attemptOpts are what differs between the callers of attempt.
type attemptOpts struct {
	// flight, if set, counts the attempt while it connects and
	// handshakes (a Dialer's InFlight).
	flight *flightStats
	// quiet leaves the peer's connect and handshake counters alone.
	quiet bool
	// port, if not 0, replaces the port of a TCP peer's address.
	port int
}

// attempt connects to one peer and handshakes. A handshake that failed
// after offering a session ticket is retried once on a new connection with
// a full handshake (the ticket is dropped by Observe): servers that mishandle
// resumption ("digest check failed") then still work, and the retry does
// not count against the peer.
func attempt(ctx context.Context, j *Job, p *pool.Peer, o attemptOpts) (Result, Attempt) {
	res, a, retry := attemptOnce(ctx, j, p, j.TLS, o)
	if retry && j.FullTLS != nil && ctx.Err() == nil {
		res, a, _ = attemptOnce(ctx, j, p, j.FullTLS, o)
	}
	return res, a
}

// attemptOnce is one connection to p: connect, PROXY header, handshake
// with the configuration tlsFor gives (nil: plaintext). Cancelling parent
// closes the socket, which ends a connect, header write or handshake at
// once; the attempt's error then wraps context.Canceled and the peer is
// not charged (no handshake failure is observed). Parent's deadline, if
// it has one, is a timeout: the connect and the handshake end by it as by
// ConnectTimeout, and fail as timed out. It reports whether the handshake
// deserves a retry with a full one. Runs on the caller's goroutine (a
// worker, a refiller through Connect, a health checker through Probe).
func attemptOnce(parent context.Context, j *Job, p *pool.Peer, tlsFor func(*pool.Peer, net.Addr) (*tls.Config, error), o attemptOpts) (Result, Attempt, bool) {
	a := Attempt{Peer: p}
	t0 := time.Now()
	timeout := j.ConnectTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	deadline, hasDeadline := parent.Deadline()
	// gone: the caller no longer wants the attempt (a deadline that
	// passed is a timeout instead).
	gone := func() bool { return errors.Is(parent.Err(), context.Canceled) }
	fl := o.flight
	if fl == nil {
		fl = new(flightStats) // a probe's: counted nowhere
	}
	fl.connecting.Add(1)
	connecting := true
	defer func() {
		if connecting {
			fl.connecting.Add(-1)
		}
	}()
	ctx, cancel := context.WithTimeout(parent, timeout)
	network, addr := p.Network()
	if o.port != 0 && network == "tcp" {
		addr = netip.AddrPortFrom(p.Addr.Addr(), uint16(o.port)).String()
	}
	c, err := dialerFor(&j.Socket, network).DialContext(ctx, network, addr)
	cancel()
	if err != nil {
		if errno, ok := noSocket(err); ok {
			a.Err = &noSocketError{errno: errno, err: err}
			a.Local = true
			return Result{}, a, false
		}
		switch {
		case gone():
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
	if !o.quiet {
		p.ObserveConnect(a.Connect)
	}
	// From here a cancel closes the socket: that ends a blocked write or
	// handshake at once (a deadline set by the cancel could be replaced
	// by the handshake's own).
	stop := context.AfterFunc(parent, func() {
		if gone() {
			raw.Close()
		}
	})
	// cancelled ends the attempt as cancelled if parent was cancelled.
	// The socket is closed either way.
	cancelled := func() bool {
		stop()
		if !gone() {
			return false
		}
		raw.Close()
		a.Err = fmt.Errorf("dial cancelled: %w", context.Canceled)
		return true
	}
	if hasDeadline {
		// Bounds the PROXY header's write; the handshake sets its own.
		if err := raw.SetDeadline(deadline); err != nil {
			stop()
			raw.Close()
			a.Err = fmt.Errorf("setting the connection's deadline: %w", err)
			return Result{}, a, false
		}
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
		if !o.quiet {
			p.ObserveConnectTime(a.Connect)
		}
		return Result{Peer: p, Raw: raw}, a, false
	}
	cfg, err := tlsFor(p, raw.LocalAddr())
	if err != nil {
		stop()
		raw.Close()
		a.Err = err
		return Result{}, a, false
	}
	fl.connecting.Add(-1)
	connecting = false
	fl.handshaking.Add(1)
	defer fl.handshaking.Add(-1)
	t1 := time.Now()
	hsDeadline := t1.Add(timeout)
	if hasDeadline && deadline.Before(hsDeadline) {
		hsDeadline = deadline
	}
	tc := tlsbridge.NewConn(raw, cfg)
	err = tc.Handshake(hsDeadline)
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
		retry = j.Observe(p, raw.LocalAddr(), cs, err)
	}
	if err != nil {
		if !o.quiet {
			p.ObserveHandshakeFailure(FailureClass(tlsbridge.Classify(err)))
		}
		tc.Close()
		if isTimeout(err) {
			after := timeout
			if hsDeadline.Before(t1.Add(timeout)) {
				after = hsDeadline.Sub(t1).Round(time.Millisecond)
			}
			err = &handshakeTimeoutError{after: after, err: err}
		} else {
			err = fmt.Errorf("TLS handshake failed: %w", err)
		}
		a.Err = err
		a.Handshaking = true
		return Result{}, a, retry
	}
	a.Handshake = time.Since(t1)
	state := tc.ConnectionState()
	if !o.quiet {
		p.ObserveHandshake(a.Handshake, state.DidResume)
		p.ObserveHandshakeGroup(GroupSlot(state.CurveID))
		p.ObserveConnectTime(a.Connect + a.Handshake) // least_time connect, as $upstream_connect_time
	}
	if hasDeadline {
		// The handshake cleared the deadline: the caller's is parent's.
		if err := raw.SetDeadline(deadline); err != nil {
			tc.Close()
			a.Err = fmt.Errorf("setting the connection's deadline: %w", err)
			return Result{}, a, false
		}
	}
	return Result{Peer: p, Raw: raw, TLS: tc, State: state}, a, false
}
