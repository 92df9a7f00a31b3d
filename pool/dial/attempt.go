package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/syserr"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// This file holds one attempt: one connection to one peer (connect, PROXY
// header, handshake, the retry with a full handshake), shared by a
// session's walk (dialer.go) and the pre-warming refillers (warm.go).

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
