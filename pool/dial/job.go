package dial

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// This file holds what a session gives the dialer and gets back: the Job,
// its cancellation, the Result and the Attempts.

// Job asks for an upstream connection for one client session. The
// session fills it on its event loop and must not touch it (or its
// pool.Selection) again until Done has been called, except to Cancel it and,
// once Cancel has returned, to read Attempts.
type Job struct {
	// Sel is the session's walk over its group.
	Sel *pool.Selection
	// Prepare, if set, runs on the worker before the walk, under the
	// job's context (Cancel ends it): it may wait, for DNS say, and it
	// starts Sel's walk (Group.InitSelection), which is the caller's
	// otherwise. An error ends the job with it (context.Canceled if the
	// job was cancelled meanwhile).
	Prepare func(ctx context.Context) error
	// TLS returns the client configuration for a connection to p; nil
	// TLS means a plaintext upstream. local is the connection's own
	// address, for a caller that is its own client (a health probe, whose
	// proxy_ssl_name variables name its socket); a session's configuration
	// depends on its client's addresses instead.
	TLS func(p *pool.Peer, local net.Addr) (*tls.Config, error)
	// Observe, if set, is told the outcome of every handshake (cs is the
	// state after a successful one; local as for TLS). It returns true
	// when the handshake failed after offering a session ticket and
	// deserves one retry with a full handshake, for which FullTLS gives
	// the configuration.
	Observe func(p *pool.Peer, local net.Addr, cs tls.ConnectionState, err error) (retryFull bool)
	FullTLS func(p *pool.Peer, local net.Addr) (*tls.Config, error)
	// ConnectTimeout bounds the TCP connect and, afresh, the handshake
	// (zero: 60s). A deadline of the context the attempt runs under
	// (Probe's) bounds both too, as a timeout.
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

// Attempt is one try on one peer: a session's, for $upstream_addr and
// $upstream_connect_time, or one made by Dialer.Connect or Probe.
type Attempt struct {
	// Peer is the peer tried.
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
