package engine

// This file holds a session's side of its dial job. Everything in it runs
// on a dialer goroutine (dial.Dialer), not on the session's loop, except
// cancelDial and clientLeftWhileConnecting, which run on the loop and reach
// the job only through dial.Job.Cancel. The dialer-side functions touch only
// what is fixed before the session submits its dial job (srv, id, remote,
// local, lp.el, e's immutable fields), atomics (the stats, the cancelled
// flag through dial.Job.Cancelled) and the goroutine-safe error log; they
// hand results to the loop only through gnet's EventLoop.Execute and
// Enroll. proxyHeader (proxyproto.go) runs on the dialer goroutine too,
// under the same rule.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/internal/syserr"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/pool/dial"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// cancelDial ends the session's dial, if one is running: a connect or
// handshake in progress is interrupted at once, and from here on the dialer
// no longer touches the job's attempts (the access log reads them). Called
// by finish. Runs on the loop.
func (s *session) cancelDial() {
	if s.dial != nil {
		s.dial.job.Cancel()
	}
}

// clientLeftWhileConnecting is the reaction to the client's close while
// the upstream is being dialed; err is gnet's (see sideEnded). A client
// that sent bytes and then shut its side (FIN) keeps its dial, bounded by
// proxy_connect_timeout, and the upstream gets those bytes (onUpstreamOpen),
// as in NGINX. A client that reset its connection, or closed it having sent
// nothing, has nothing to deliver and nobody to answer: its dial is
// cancelled and the session ends at once (NGINX dials on and logs 200, or
// 502 when that upstream fails). Runs on the loop.
func (s *session) clientLeftWhileConnecting(err error) {
	reset := err != nil && !errors.Is(err, io.EOF)
	if !reset && s.cli.buffered() > 0 {
		return
	}
	reason := metrics.ReasonClientClosed
	if reset {
		reason = metrics.ReasonClientAborted
	}
	if s.e.log.Enabled(errlog.LevelInfo) {
		s.e.log.Logf(errlog.LevelInfo, s.id, "%s while connecting to upstream, dial cancelled, client: %s, server: %s",
			reason.Text(), hostOf(s.remote), s.srv.name)
	}
	s.reason = reason
	s.finish(reason) // finish cancels the dial
}

// tlsConfig gives the dialer the TLS configuration for a peer, from the
// session's client addresses (the upstream socket's own address does not
// matter to a session). Runs on a dialer worker.
func (s *session) tlsConfig(p *pool.Peer, _ net.Addr) (*tls.Config, error) {
	return s.srv.tlsConfig(p, s.remote, s.local, false)
}

// fullTLSConfig is tlsConfig without session resumption. Runs on a dialer
// worker.
func (s *session) fullTLSConfig(p *pool.Peer, _ net.Addr) (*tls.Config, error) {
	return s.srv.tlsConfig(p, s.remote, s.local, true)
}

// observeHandshake feeds the policy's session accounting. Runs on a dialer
// worker.
func (s *session) observeHandshake(p *pool.Peer, _ net.Addr, cs tls.ConnectionState, err error) bool {
	t, v := s.srv.target(p, s.remote, s.local)
	return s.srv.policy.Observe(t, v, cs, err)
}

// dialAttemptFailed logs one failed attempt. Runs on a dialer worker.
func (s *session) dialAttemptFailed(a dial.Attempt, disabled bool) {
	s.e.m.AttemptFailed()
	if a.Peer != nil {
		a.Peer.ObserveError(a.Err, time.Now())
	}
	if a.Handshaking {
		s.e.log.Logf(errlog.LevelError, s.id, "%v (%s) while SSL handshaking to upstream, client: %s, server: %s, upstream: \"%s\"",
			a.Err, tlsbridge.Classify(a.Err), hostOf(s.remote), s.srv.name, a.Peer)
	} else {
		s.e.log.Logf(errlog.LevelError, s.id, "%v while connecting to upstream, client: %s, server: %s, upstream: \"%s\"",
			a.Err, hostOf(s.remote), s.srv.name, a.Peer)
	}
	if disabled {
		s.e.log.Logf(errlog.LevelWarn, s.id, "upstream server temporarily disabled while connecting to upstream, client: %s, server: %s, upstream: \"%s\"",
			hostOf(s.remote), s.srv.name, a.Peer)
	}
}

// dialDone receives the dialer's outcome. Runs on a dialer worker: it hands
// the socket to the session's loop (Enroll; the loop then calls
// onUpstreamOpen) or the failure (Execute of dialFailed), and touches
// nothing else of the session.
func (s *session) dialDone(r dial.Result) {
	el := s.lp.el
	if r.Err != nil {
		err := r.Err
		el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			s.dialFailed(err)
			return nil
		}))
		return
	}
	if tc, ok := r.Raw.(*net.TCPConn); ok {
		s.adoptUpstream(tc, r)
		return
	}
	ch, err := el.Enroll(gnet.NewContext(context.Background(), &upOpen{s: s, res: r}), r.Raw)
	if err == nil {
		// gnet's enroll waits for the loop to register the conn; a loop
		// that stops first never does, so do not wait past the engine.
		select {
		case res := <-ch:
			err = res.Err
		case <-s.e.stopped:
			r.Raw.Close()
			return
		}
	}
	if err != nil {
		r.Raw.Close()
		s.adoptFailed(r, err)
	}
}

// adoptUpstream hands a dialled TCP socket to the session's loop with
// EventLoop.Adopt (internal/gnet), the loop then calling onUpstreamOpen:
// the socket is duplicated here and the original closed (it is registered
// with Go's netpoller, which the dial and the handshake used), without
// Enroll's worker goroutine and its two waits for the loop. Runs on a
// dialer worker.
func (s *session) adoptUpstream(tc *net.TCPConn, r dial.Result) {
	fd, err := dupSocket(tc)
	local, remote := tc.LocalAddr(), tc.RemoteAddr()
	tc.Close()
	if err != nil {
		s.adoptFailed(r, err)
		return
	}
	failed := func(err error) { // on the loop; gnet closed fd
		s.peer = r.Peer
		s.dialFailed(fmt.Errorf("adopting the upstream connection failed (%w), upstream: \"%s\"", err, r.Peer))
	}
	if err := s.lp.el.Adopt(gnet.NewContext(context.Background(), &upOpen{s: s, res: r}), fd, local, remote, failed); err != nil {
		unix.Close(fd) // the engine is stopping
	}
}

// adoptFailed hands the loop a failure to give it the dialled socket (a
// dup, or gnet's Enroll), in NGINX's words: an errno is the dup's
// (outOfDescriptors still sees it). Runs on a dialer worker.
func (s *session) adoptFailed(r dial.Result, err error) {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		err = textError{fmt.Sprintf("dup() failed (%s) while adopting the upstream connection, upstream: \"%s\"", syserr.Paren(errno), r.Peer), errno}
	} else {
		err = fmt.Errorf("adopting the upstream connection failed (%w), upstream: \"%s\"", err, r.Peer)
	}
	s.lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		s.peer = r.Peer // on the loop
		s.dialFailed(err)
		return nil
	}))
}

// dupSocket duplicates the socket of c (close-on-exec), leaving c as it
// is. Runs on any goroutine.
func dupSocket(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(sfd uintptr) {
		fd, derr = unix.FcntlInt(sfd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	return fd, derr
}

// textError is an error with NGINX's wording that still unwraps to its
// cause (an errno, for outOfDescriptors).
type textError struct {
	text string
	err  error
}

func (e textError) Error() string { return e.text }
func (e textError) Unwrap() error { return e.err }
