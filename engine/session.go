package engine

// A session is one client connection and its upstream connection: this file
// holds its lifecycle. The traffic callbacks and the one pump that serves
// both directions are in pump.go, what happens once a peer ended (closing
// and its steps, half-close, abort, linger) in closing.go, flow control
// (stall, pause, resume, rate timers, polling) in flow.go, what runs on a
// dialer worker in dialwork.go, the PROXY header in proxyproto.go, and the
// socket halves in side.go.
//
// Phases. A session is connecting (waiting for the dialer), open
// (relaying), closing (one side ended; the other is being flushed) or done.
// Every change goes through enter, which allows only
//
//	connecting -> open     the upstream conn was adopted (onUpstreamOpen)
//	connecting -> done     no upstream: the dial failed or was not queued
//	open       -> closing  one side ended (settle)
//	open       -> done     proxy_timeout, a paused socket that cannot resume
//	closing    -> done     nothing left to wait for (settle), or as from open
//
// and logs any other change at alert, as the bug it is, without making it.
// A client that sent bytes and then shut its side while connecting does
// not end the session: the upstream is opened anyway and gets them, as in
// NGINX; one that resets, or closes having sent nothing, ends it and
// cancels its dial (clientLeftWhileConnecting).
//
// Goroutines. Everything here runs on the session's loop, except the
// functions in dialwork.go and proxyHeader (a dialer worker; they touch
// only fields fixed before the dial job was submitted and atomics, and
// hand results to the loop through gnet's Execute and Enroll) and the
// cancelled flag (read by the dialer worker).
//
// Re-entrancy. gnet's Conn.Write may fail and close the conn on the spot:
// OnClose then runs before Write returns (gnet's write error path calls
// the loop's close, which calls OnClose). So every entry point that may
// write (the traffic callbacks, onUpstreamOpen, onReattach, onClose,
// onPoll, onRate) runs as one step between begin and end. During a step,
// onClose only records what gnet is about to drop (the side's unread
// input, spilled; the side becomes closed, so later writes to it are
// discarded and reads serve only what was spilled) and latches the close;
// a pump stops moving bytes once a close is latched. The reaction to a
// latched close (clientEnded, upstreamEnded) runs once, when the outermost
// step ends. finish may run inside a step: it closes and releases
// everything and leaves every side closed, so the rest of the step finds
// nothing to read and nowhere to write. The remaining phaseDone checks are
// at entry points and reactions (late events), in finish (a second call),
// and at the top of what a step may still call after finish (clientEnded,
// upstreamEnded, settle; the pump runs only while open or
// closing), never after a write.

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/engine/proxyproto"
	"github.com/tlsrelay/tlsrelay/engine/wheel"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/pool/dial"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// phase is where a session is in its life; see the file comment.
type phase uint8

const (
	phaseConnecting phase = iota // waiting for the dialer
	phaseOpen                    // relaying
	phaseClosing                 // one side ended; flushing the other
	phaseDone                    // finished; late events are ignored
)

// String names the phase, for the alert about an illegal transition.
func (p phase) String() string {
	switch p {
	case phaseConnecting:
		return "connecting"
	case phaseOpen:
		return "open"
	case phaseClosing:
		return "closing"
	case phaseDone:
		return "done"
	}
	return "phase?"
}

// can reports whether a session may go from p to next.
func (p phase) can(next phase) bool {
	switch p {
	case phaseConnecting:
		return next == phaseOpen || next == phaseDone
	case phaseOpen:
		return next == phaseClosing || next == phaseDone
	case phaseClosing:
		return next == phaseDone
	}
	return false
}

// session is one client connection and its upstream connection. Its
// methods run on its loop unless their comment says otherwise (see the
// file comment).
type session struct {
	e   *Engine
	lp  *loop
	srv *server
	id  uint64
	// prev and next link the loop's live sessions (loop.live).
	prev, next *session

	cli, up side
	// cliToUp and upToCli are the two directions the pump moves bytes in.
	cliToUp, upToCli direction
	tc               *tlsbridge.Conn // nil for a plaintext upstream
	peer             *pool.Peer
	// dial is the walk over the group and the dial job, from the
	// session's start until its upstream connection is open; then it is
	// dropped (an idle session keeps only lease and tried of it).
	dial *dialState
	// lease gives the open connection's peer back; tried are the dial
	// job's attempts, for the access log. Both are set when dial is
	// dropped.
	lease pool.Lease
	tried []dial.Attempt

	phase     phase // changed only by enter
	cancelled atomic.Bool
	remote    net.Addr
	local     net.Addr

	// busy counts the steps running (nested when a step's write re-enters
	// through OnClose); latch holds the closes that arrived during them.
	busy  int
	latch closeLatch

	start      time.Time
	lastActive int64       // loop tick of the last traffic
	idle       wheel.Timer // proxy_timeout
	rate       wheel.Timer // proxy_upload_rate, proxy_download_rate
	linger     wheel.Timer // lingerTimeout, once the client ended
	lastUp     int64       // loop tick of the last upstream traffic
	dropped    int64       // upstream bytes read for a client that is gone
	// pp is what the client's PROXY header said; nil: none.
	pp *proxyproto.Info
	// limits are the limit_conn counts the session holds.
	limits []limitHold
	// limitStatus is $limit_conn_status (limitConns).
	limitStatus limitStatus
	// peerFailed: the upstream refused the session after its handshake
	// (an alert before any data); its connection was ended as failed.
	peerFailed bool
	polled     bool // on its loop's poll list (backpressure, drain)
	// pollSkip is how many polls the session skips before the next one
	// runs; pollBackoff counts the polls in a row that moved nothing, up
	// to pollPatience (see onPoll).
	pollSkip, pollBackoff uint8

	cliEOF, upEOF bool
	closeNotified bool // close_notify went to the upstream
	// upClose is which side closed the upstream's connection first, and
	// how (closedFirst, upstreamClosedFirst); counted at finish.
	upClose metrics.UpstreamClose
	// closing is what a closing session waits for (closing.go); closeNone
	// in every other phase.
	closing closeStep
	// reason is why the session ended, for the logs and the metric
	// (ReasonNone until it is known).
	reason metrics.Reason
	status int // $status: 200, or 502/500/503 when no upstream

	// for the access log
	upOpened   time.Duration // since start: the upstream conn was adopted
	firstByte  time.Duration // since start: the first byte from the upstream (0: none yet)
	tlsVersion uint16
	tlsCipher  uint16
	tlsResumed bool
	// upNotified: the upstream's close_notify came (its stream ended
	// cleanly). aborted: a peer broke its stream; both sockets are reset
	// when the session finishes (see abort).
	upNotified, aborted bool
	// clientH2: the client's first bytes were HTTP/2's preface (alpnHint).
	clientH2 bool
	readErr  error // a TLS error after the handshake

	fromClient, toClient, fromUp, toUp int64
}

// closeLatch records the closes gnet reported during a step, in order. A
// side closes at most once (sideClosed is final), so two is enough.
type closeLatch struct {
	n  int
	ev [2]closeEvent
}

// closeEvent is one latched close: the side and gnet's reason (nil for a
// peer's FIN or our own Close, else the read or write error).
type closeEvent struct {
	sd  *side
	err error
}

// dialState is what a session needs only until its upstream connection is
// open. It is handed to a dial worker with the job (dial.Job.Sel points into
// it), so it is dropped only once the worker is done with it.
type dialState struct {
	sel pool.Selection
	job dial.Job
	// group is the group sel walks, for the logs; set on the loop: when
	// the walk starts there, or once the dial is done when a proxy_pass
	// name was resolved on the worker (nil until then, and for good when
	// it could not be).
	group *pool.Group
}

// groupName is the name of the group the session's dial walks, for the
// logs: "" once the upstream connection is open (the attempts name the
// peers then), and while or when a proxy_pass name is not resolved.
// Runs on the loop.
func (s *session) groupName() string {
	if s.dial == nil || s.dial.group == nil {
		return ""
	}
	return s.dial.group.Name()
}

// attempts returns the dial job's attempts, for the access log and the
// error log. Runs on the loop.
func (s *session) attempts() []dial.Attempt {
	if s.dial != nil {
		return s.dial.job.Attempts
	}
	return s.tried
}

// release gives the session's peer back (NGINX's free without
// NGX_PEER_FAILED). Runs on the loop.
func (s *session) release(p *pool.Peer) {
	if s.dial != nil {
		s.dial.sel.Release(p)
		return
	}
	s.lease.Release(p)
}

// upOpen is the context of an upstream conn being enrolled after its
// handshake.
type upOpen struct {
	s   *session
	res dial.Result
}

// reattach is the context of a paused socket being re-adopted.
type reattach struct {
	s  *session
	sd *side
}

// submit hands a connecting session's dial job to the dialer. Runs on the
// session's loop.
func (e *Engine) submit(s *session) {
	if s.srv.bindVar != nil && !s.bindLocal() {
		return
	}
	if s.srv.pass != nil && !s.passTarget() {
		return
	}
	if err := e.dialer.Submit(&s.dial.job); err != nil {
		e.log.Logf(errlog.LevelError, s.id, "%v while connecting to upstream, client: %s, server: %s", err, hostOf(s.remote), s.srv.name)
		s.status = 503
		s.finish(metrics.ReasonDialQueueFull)
	}
}

// openSession builds a connecting session for c with its dial job ready to
// submit, and counts it. Runs on c's loop.
func (e *Engine) openSession(c gnet.Conn, lp *loop, srv *server) *session {
	return e.openSessionAt(c, lp, srv, c.RemoteAddr(), c.LocalAddr(), nil)
}

// openSessionAt is openSession for a client whose address is remote (the
// TCP peer, or the original client of a trusted PROXY header) and whose
// PROXY header said pp (nil: none), accepted on local (the listener's
// address). Runs on c's loop.
func (e *Engine) openSessionAt(c gnet.Conn, lp *loop, srv *server, remote, local net.Addr, pp *proxyproto.Info) *session {
	s := &session{e: e, lp: lp, srv: srv, id: e.connID.Add(1), start: time.Now(), status: 200, pp: pp}
	s.cli.c, s.cli.state, s.cli.fd = c, sideAttached, -1
	s.up.fd = -1
	s.cli.sess, s.up.sess = s, s
	s.cliToUp = direction{src: &s.cli, dst: &s.up, from: &s.cli, to: &s.up,
		rate: srv.uploadRate, moved: &s.fromClient, sent: &s.toUp}
	s.upToCli = direction{src: &s.up, dst: &s.cli, from: &s.up, to: &s.cli,
		rate: srv.downloadRate, moved: &s.fromUp, sent: &s.toClient, upstream: true}
	s.remote, s.local = remote, local
	s.idle.Fire = s.onIdle
	s.rate.Fire = s.onRate
	s.linger.Fire = s.onLinger
	s.lastActive = lp.nowTick()
	c.SetContext(s)

	d := new(dialState)
	s.dial = d
	if srv.group != nil {
		// Without variables in proxy_pass; else passTarget starts the
		// walk when the job is submitted.
		s.startWalk(srv.group, srv.hash)
	}
	d.job = dial.Job{
		Sel:                 &d.sel,
		ConnectTimeout:      srv.connectTimeout,
		NextUpstream:        srv.nextUpstream,
		NextUpstreamTimeout: srv.nextTimeout,
		Cancelled:           s.cancelled.Load,
		OnFailure:           s.dialAttemptFailed,
		Socket:              srv.sock,
		Warm:                srv.warm,
		Done:                s.dialDone,
	}
	if srv.policy != nil {
		d.job.TLS = s.tlsConfig
		d.job.FullTLS = s.fullTLSConfig
		d.job.Observe = s.observeHandshake
	}
	if proxyproto.Mode(srv.proxyProtocol) != proxyproto.Off {
		d.job.ProxyHeader = s.proxyHeader
	}
	e.m.SessionAccepted()
	lp.link(s)
	return s
}

// enter moves the session to phase next: the only assignment of s.phase.
// An illegal change is a bug; it is logged at alert and not made.
func (s *session) enter(next phase) {
	if !s.phase.can(next) {
		s.e.log.Logf(errlog.LevelAlert, s.id, "bug: session phase %s -> %s is not a legal transition", s.phase, next)
		return
	}
	s.phase = next
}

// begin starts a step (see the file comment).
func (s *session) begin() { s.busy++ }

// end ends a step; the outermost one reacts to the closes latched during
// it, each once, in the order they came. A reaction is itself part of the
// step, so a close its writes cause is latched and handled next.
func (s *session) end() {
	if s.busy > 1 {
		s.busy--
		return
	}
	for s.latch.n > 0 {
		ev := s.latch.ev[0]
		s.latch.ev[0], s.latch.ev[1] = s.latch.ev[1], closeEvent{}
		s.latch.n--
		s.sideEnded(ev.sd, ev.err)
	}
	s.busy = 0
}

// dialFailed ends a session whose upstream could not be reached. Runs on
// the loop (queued by dialDone).
func (s *session) dialFailed(err error) {
	if s.phase == phaseDone {
		return
	}
	if s.dial.group == nil {
		// The walk started on the dial worker; it is done.
		s.dial.group = s.dial.sel.Group()
	}
	if !errors.Is(err, context.Canceled) {
		s.status = 502
		if errors.Is(err, dial.ErrNoSocket) || isPassValueError(err) {
			// NGINX: socket() failed, or a proxy_pass name that could
			// not be resolved, is an internal error.
			s.status = 500
		}
		if outOfDescriptors(err) {
			s.e.pauseAccepting()
		}
		// The last attempt's error was logged with its attempt; what is
		// left to say is that none worked (or that none could be tried).
		if a := s.attempts(); len(a) > 0 && a[len(a)-1].Err == err {
			n := len(a)
			if n > 1 {
				s.e.log.Logf(errlog.LevelError, s.id, "no upstream could be reached after %d attempts, client: %s, server: %s, upstream: \"%s\"",
					n, hostOf(s.remote), s.srv.name, s.groupName())
			}
		} else {
			s.e.log.Logf(errlog.LevelError, s.id, "%v, client: %s, server: %s", err, hostOf(s.remote), s.srv.name)
		}
	}
	s.finish(metrics.ReasonUpstreamUnreachable)
}

// onUpstreamOpen adopts the upstream conn. Runs on the loop, from OnOpen
// of a conn whose context is an *upOpen.
func (s *session) onUpstreamOpen(c gnet.Conn, r dial.Result) {
	s.peer = r.Peer
	if s.phase == phaseDone {
		s.release(r.Peer)
		s.peer = nil
		c.Close()
		return
	}
	// The worker is done with the dial job (it handed over the result):
	// keep only what the open session needs of it.
	s.lease, s.tried, s.dial = s.dial.sel.Lease(), s.dial.job.Attempts, nil
	s.begin()
	defer s.end()
	c.SetContext(s)
	s.up.c, s.up.state = c, sideAttached
	s.upOpened = time.Since(s.start)
	if r.TLS != nil {
		s.tc = r.TLS
		s.tc.Detach(&s.up, &s.up)
		s.cliToUp.to, s.upToCli.from = s.tc, s.tc
		s.cliToUp.corked = true
		s.tlsVersion, s.tlsCipher, s.tlsResumed = r.State.Version, r.State.CipherSuite, r.State.DidResume
		s.e.m.Handshake(r.State.DidResume)
	}
	s.enter(phaseOpen)
	s.touch()
	if s.srv.idleTimeout > 0 {
		s.lp.arm(&s.idle, s.lp.ticks(s.srv.idleTimeout))
	}
	if s.e.log.Enabled(errlog.LevelInfo) {
		var local any = s.up.c.LocalAddr()
		if s.peer.Path != "" {
			local = "unix:" // gnet names a dialed unix conn's end oddly
		}
		s.e.log.Logf(errlog.LevelInfo, s.id, "proxy %s connected to %s", local, s.peer)
	}
	// The client may have left while the upstream was dialed; a close
	// latched during this step is handled when it ends.
	cliGone := s.cliEOF
	// Bytes crypto/tls read ahead during the handshake (a TLS 1.3
	// NewSessionTicket) fire no event: read them now, so the ticket is
	// stored even if the session ends at once.
	s.pump(&s.upToCli, false)
	if s.cli.stalled {
		// What the client sent while the upstream was dialed.
		if s.unstall(&s.cliToUp) {
			s.armPoll()
		}
	} else {
		s.pump(&s.cliToUp, false)
	}
	if cliGone {
		s.clientEnded()
	}
}

// onClose runs on the loop when gnet closes one of the session's conns:
// after a pause, a peer's FIN or reset, a write error (possibly inside one
// of the session's own writes), or our own Close. It records what gnet
// drops with the conn at once and latches the end of the side; the
// reaction runs when the step ends (see the file comment).
func (s *session) onClose(c gnet.Conn, err error) {
	var sd *side
	switch c {
	case s.cli.c:
		sd = &s.cli
	case s.up.c:
		sd = &s.up
	default:
		return // a conn the session already let go (finish lets go of all)
	}
	s.begin()
	defer s.end()
	// What gnet read but the session did not consume is about to be
	// dropped with the conn: keep it.
	sd.spill(c)
	sd.c = nil
	if sd.state == sideDetaching {
		sd.state = sideDetached // a pause completed; the socket lives on
		s.armPoll()
		return
	}
	if sd == &s.up {
		// Not our own close (the session let go of the conn before it
		// closed it): the upstream's FIN or reset.
		s.upstreamClosedFirst(err)
	}
	if s.srv.halfClose && sd.state == sideAttached && !sd.failed && errors.Is(err, io.EOF) && s.phase != phaseClosing {
		// proxy_half_close on: the peer shut its write side only. The
		// socket lives on through a duplicate, so that the other
		// direction is still delivered (writes are direct: gnet held
		// nothing for it).
		fd, derr := c.Dup()
		if derr == nil {
			sd.fd, sd.state = fd, sideHalf
			if sd == &s.cli {
				s.cliEOF = true
			} else {
				s.upEOF = true
			}
			s.latch.add(sd, nil)
			return
		}
		s.e.log.Logf(errlog.LevelWarn, s.id, "keeping a half-closed connection: dup: %v", derr)
	}
	sd.state = sideClosed
	if sd.out != nil {
		sd.out.Reset()
	}
	if sd == &s.cli {
		s.cliEOF = true
	} else {
		s.upEOF = true
	}
	s.latch.add(sd, err)
}

// add latches a close. Each side closes once, so there is always room.
func (l *closeLatch) add(sd *side, err error) {
	if l.n < len(l.ev) {
		l.ev[l.n] = closeEvent{sd: sd, err: err}
		l.n++
	}
}

// finish ends the session and frees what it holds; a second call does
// nothing. It leaves every socket closed (or never opened) and lets go of
// the gnet conns, so their OnClose, and anything else later in the step
// that called finish, finds nothing to do.
func (s *session) finish(reason metrics.Reason) {
	if s.phase == phaseDone {
		return
	}
	s.enter(phaseDone)
	s.closing = closeNone
	if s.reason == metrics.ReasonNone {
		s.reason = reason
	}
	s.cancelled.Store(true)
	s.cancelDial()
	s.lp.wheel.Disarm(&s.idle)
	s.lp.wheel.Disarm(&s.rate)
	s.lp.wheel.Disarm(&s.linger)
	if s.up.state != sideNone && s.up.state != sideClosed {
		// tlsrelay closes the upstream's socket first (proxy_timeout, the
		// stop, a failure, or an upstream that stayed silent for the
		// linger's bound): a TLS upstream still learns that the stream
		// ended cleanly.
		if !s.aborted {
			s.notifyUpstream()
		}
		s.closedFirst()
	}
	if s.upClose == metrics.CloseUpstreamFIN && s.upNotified {
		s.upClose = metrics.CloseUpstreamNotify
	}
	s.e.m.UpstreamClosed(s.upClose)
	for _, sd := range [...]*side{&s.cli, &s.up} {
		if s.aborted {
			sd.reset()
		}
		switch sd.state {
		case sideAttached, sideDetaching:
			sd.c.Close()
		case sideDetached, sideHalf:
			unix.Close(sd.fd)
			sd.fd = -1
		}
		if sd.state != sideNone {
			sd.state = sideClosed
		}
		sd.c = nil
		sd.release()
	}
	s.releaseLimits()
	s.alpnHint()
	if s.peer != nil && !s.peerFailed && s.up.state != sideNone {
		s.peer.ObserveLastByte(s.start.Add(s.upOpened)) // least_time last_byte
	}
	if s.peer != nil && !s.peerFailed {
		s.release(s.peer) // a failed peer's connection ended with Failed
	}
	s.peer = nil
	if len(s.srv.accessLogs) > 0 {
		s.logAccess(time.Now())
	}
	s.e.m.SessionEnded(s.reason)
	s.lp.unlink(s)
	if s.e.log.Enabled(errlog.LevelInfo) {
		s.e.log.Logf(errlog.LevelInfo, s.id, "%s, bytes from/to client:%d/%d, bytes from/to upstream:%d/%d",
			s.reason.Text(), s.fromClient, s.toClient, s.fromUp, s.toUp)
	}
	// The plan the session started on (the handler counted it in) may
	// be freed with its last session once a reload retired it; its
	// access logs were written above.
	s.srv.plan.sessionEnded()
	s.lp.sessionEnded()
}

// touch records traffic for proxy_timeout.
func (s *session) touch() { s.lastActive = s.lp.nowTick() }

// onIdle fires when proxy_timeout may have passed without traffic. Runs
// on the loop (a wheel timer).
func (s *session) onIdle() {
	if s.phase == phaseDone {
		return // finish disarms the timer; this is only a safeguard
	}
	idle := s.lp.ticks(s.srv.idleTimeout)
	if left := s.lastActive + idle - s.lp.nowTick(); left > 0 {
		s.lp.arm(&s.idle, left)
		return
	}
	if s.e.log.Enabled(errlog.LevelInfo) {
		s.e.log.Logf(errlog.LevelInfo, s.id, "upstream timed out (110: Connection timed out) while proxying connection, client: %s, server: %s, upstream: \"%s\"",
			hostOf(s.remote), s.srv.name, s.peer)
	}
	s.e.m.IdleTimeout()
	s.reason = metrics.ReasonIdleTimeout
	if s.phase == phaseOpen && s.tc != nil && s.drained() && s.mustLinger() {
		// The client is closed, a TLS upstream gets close_notify and is
		// left to close first (see mustLinger); the timer, armed again,
		// bounds the drain of close_notify.
		s.lp.arm(&s.idle, idle)
		s.begin()
		defer s.end()
		s.settle()
		return
	}
	s.finish(metrics.ReasonIdleTimeout)
}
