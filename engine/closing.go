package engine

// The end of a session: what happens once one peer has ended, until the
// session finishes. Everything here runs on the session's loop, in a step
// (see session.go).
//
// A peer ends cleanly (a FIN, a TLS upstream's close_notify: clientEnded,
// upstreamEnded) or breaks its stream (a reset, a failed write, a TLS
// upstream's error or a FIN without close_notify: abort, which finishes
// the session at once and resets the other peer's socket). After a clean
// end, what that peer sent is delivered to the other (flushEnded), then:
//
//   - with proxy_half_close on, while the other peer has not ended, the
//     session stays open: the side toward the other peer is shut (a FIN)
//     once its queue has drained (shutState: shutWanted, then shutDone),
//     and the ended peer's socket is kept as a half-closed side
//     (sideHalf) so the other direction is still delivered;
//   - otherwise the session is closing, and settle, the one place that
//     decides how a closing session goes on, waits in one of the
//     closeSteps below and finishes when there is nothing left to wait
//     for.
//
// A session finishes early, from any phase, when a peer breaks its stream
// (abort), at proxy_timeout (onIdle), at the proxy's own shutdown
// (loop.closeSessions), and when it never opened (a refused client, a
// failed dial); each calls finish with its Reason.

import (
	"errors"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// closeStep is what a closing session waits for before it finishes; it is
// changed only by settle (and onLinger, the pump's lingerSlack: closeLingered).
type closeStep uint8

const (
	// closeNone: the session is not closing.
	closeNone closeStep = iota
	// closeDraining: output is queued toward a socket (gnet's Close
	// would drop it), or a paused socket is being resumed; polled.
	closeDraining
	// closeHeld: a rate limit holds back part of what an ended peer sent;
	// the rate timer (onRate) lets the next part through.
	closeHeld
	// closeLingering: everything went; the client ended, and the upstream
	// is read (and its bytes dropped) until it ends too, within
	// lingerTimeout of silence (see lingerTimeout).
	closeLingering
	// closeLingered: the linger's bound passed, or the upstream sent more
	// than lingerSlack past what the client sent: finish now.
	closeLingered
)

// String names the step, for tests and the alert about a bug.
func (c closeStep) String() string {
	switch c {
	case closeNone:
		return ""
	case closeDraining:
		return "draining"
	case closeHeld:
		return "held"
	case closeLingering:
		return "lingering"
	case closeLingered:
		return "lingered"
	}
	return "closeStep?"
}

// shutState is where the write side of one of a session's sockets stands
// (proxy_half_close, and the linger's FIN to the upstream).
type shutState uint8

const (
	shutNone   shutState = iota // open for writing
	shutWanted                  // shut once its queue has drained (tryShut)
	shutDone                    // shut down (a FIN after the last byte)
)

// sideEnded is the reaction to a side's close, run once at the end of the
// step that latched it. err is gnet's (nil for a FIN or our own close) or
// the failed write's: a peer that reset its socket, or a TLS upstream that
// ended without close_notify, aborted its stream (see abort); a FIN is a
// clean end.
func (s *session) sideEnded(sd *side, err error) {
	if s.phase == phaseDone {
		return
	}
	if sd == &s.up && s.closedUnanswered() {
		// A FIN or a reset right after the handshake, before any data.
		s.refused(tlsbridge.ErrClosedAfterHandshake)
		return
	}
	if s.phase != phaseConnecting && (sd.failed || (err != nil && !errors.Is(err, io.EOF))) {
		// This peer reset its socket (a half-closed one included); a
		// failure of the other was latched and handled before.
		s.abort(sd, err)
		return
	}
	if sd == &s.cli {
		if s.phase == phaseConnecting {
			s.clientLeftWhileConnecting(err) // dialwork.go
			return
		}
		s.clientEnded()
		return
	}
	if s.phase == phaseOpen || s.phase == phaseClosing {
		// Deliver what the upstream sent before it closed (its
		// close_notify among it, if it sent one).
		s.pump(&s.upToCli, true)
		if s.phase == phaseDone {
			return
		}
		if s.truncated() {
			s.abort(&s.up, errNoCloseNotify)
			return
		}
		s.upstreamEnded()
	}
}

// truncated reports whether a TLS upstream's connection ended (a FIN)
// without close_notify while the client is there to be told, once
// everything it sent before has been read: a rate limit may still hold
// part of it (the direction is held), close_notify possibly among it. A
// FIN alone after the client left is an upstream's answer to tlsrelay's
// close_notify (many servers close so). Runs on the loop.
func (s *session) truncated() bool {
	return s.tc != nil && s.upEOF && !s.upNotified && s.readErr == nil && s.up.state == sideClosed && !s.upToCli.held &&
		s.cli.state != sideClosed
}

// errNoCloseNotify is the cause of an abort by a TLS upstream that closed
// its connection (a FIN) without sending close_notify first: a truncation
// attack, or an upstream that died, cannot be told from a complete stream
// otherwise.
var errNoCloseNotify = errors.New("the upstream closed the connection without close_notify")

// abort ends a session whose peer on from broke its stream: it reset its
// socket (a read or a write failed), or, for a TLS upstream, a record
// failed or the connection ended without close_notify. What the other peer
// was sent so far is not the whole stream, and it must be able to tell: its
// socket is reset too (SO_LINGER 0), not closed, and a TLS upstream gets no
// close_notify. The status stays NGINX's (200 once connected); the reason
// is "upstream aborted" or "client aborted", logged with its cause, the
// upstream's at error, the client's at info (NGINX's level for a client's
// failures). When the other peer had already ended, there is nothing to
// propagate and the session ends as it was going to. Runs on the loop, in
// a step.
func (s *session) abort(from *side, cause error) {
	if s.phase == phaseDone {
		return
	}
	other, who, victim, reason := &s.cli, "upstream", "client", metrics.ReasonUpstreamAborted
	if from == &s.cli {
		other, who, victim, reason = &s.up, "client", "upstream", metrics.ReasonClientAborted
	}
	if cause == nil {
		cause = errors.New("connection reset")
	}
	if other.state == sideClosed || other.state == sideNone {
		// The other peer is gone already: nothing to tell it.
		if s.e.log.Enabled(errlog.LevelInfo) {
			s.e.log.Logf(errlog.LevelInfo, s.id, "%s ended its connection: %v, client: %s, server: %s, upstream: \"%s\"",
				who, cause, hostOf(s.remote), s.srv.name, s.peer)
		}
		s.finish(reason)
		return
	}
	s.aborted = true
	s.reason = reason
	level := errlog.LevelError
	if from == &s.cli {
		level = errlog.LevelInfo
	}
	if s.e.log.Enabled(level) {
		relayed := s.toClient
		if from == &s.cli {
			relayed = s.toUp
		}
		s.e.log.Logf(level, s.id, "%s aborted the stream: %v; resetting the %s's connection after %d bytes relayed to it, client: %s, server: %s, upstream: \"%s\"",
			who, cause, victim, relayed, hostOf(s.remote), s.srv.name, s.peer)
	}
	s.finish(reason)
}

// clientEnded runs when the client sent its last byte: everything it sent
// goes to the upstream, then close_notify, then the session ends once the
// upstream has taken it all.
func (s *session) clientEnded() {
	if s.phase == phaseDone {
		return
	}
	if s.up.state == sideDetached && !s.resume(&s.up) {
		return // resume failed and ended the session
	}
	s.reason = metrics.ReasonClientClosed
	s.flushEnded()
	if s.halfOpen(s.upEOF) {
		// proxy_half_close on: the upstream gets a FIN after the last
		// byte (and close_notify) and goes on being relayed.
		s.shutWrite(&s.up)
		return
	}
	s.settle()
}

// upstreamEnded runs when the upstream sent its last byte (close_notify or
// FIN): the client gets everything, then the session ends.
func (s *session) upstreamEnded() {
	if s.phase == phaseDone {
		return
	}
	if s.cli.state == sideDetached && !s.resume(&s.cli) {
		return // resume failed and ended the session
	}
	if s.reason == metrics.ReasonNone {
		s.reason = metrics.ReasonUpstreamClosed
	}
	if s.halfOpen(s.cliEOF) {
		// proxy_half_close on: the client gets a FIN after the last
		// byte and goes on being relayed.
		s.shutWrite(&s.cli)
		return
	}
	s.settle()
}

// halfOpen reports whether, proxy_half_close being on, the session goes on
// relaying the other direction after one peer ended: that other peer has
// not ended (otherEOF), nothing failed, and the session is open. Runs on
// the loop.
func (s *session) halfOpen(otherEOF bool) bool {
	return s.srv.halfClose && !otherEOF && !s.broken() && s.readErr == nil && s.phase == phaseOpen &&
		s.cli.state != sideClosed && s.up.state != sideClosed
}

// shutWrite shuts sd's write side (a FIN after its last byte) once
// everything owed to it has gone; until then the session is polled. Runs
// on the loop.
func (s *session) shutWrite(sd *side) {
	sd.shut = shutWanted
	if !s.tryShut(sd) {
		s.armPoll()
	}
}

// tryShut shuts sd's write side if that is wanted and nothing is owed to
// it: no output queued, and no part of the ended peer's bytes held back by
// a rate limit. It reports whether nothing is left to wait for.
func (s *session) tryShut(sd *side) bool {
	if sd.shut != shutWanted {
		return true
	}
	if sd.pending() > 0 || s.toward(sd).held {
		return false
	}
	fd := sd.wfd()
	if fd < 0 {
		return sd.state == sideClosed // detached: after it is resumed
	}
	sd.shut = shutDone
	if sd == &s.up {
		s.closedFirst()
	}
	unix.Shutdown(fd, unix.SHUT_WR)
	return true
}

// toward returns the direction whose destination is sd.
func (s *session) toward(sd *side) *direction {
	if sd == &s.up {
		return &s.cliToUp
	}
	return &s.upToCli
}

// broken reports whether a write to a side failed (its peer reset it): the
// session ends when the step does.
func (s *session) broken() bool { return s.cli.failed || s.up.failed }

// directFailed reacts to a failed write on a side (the peer reset it,
// sd.failed is set): the session ends at the end of the step. Runs on the
// loop, inside a step.
func (s *session) directFailed(sd *side, err error) {
	if sd.state != sideClosed && sd.state != sideNone {
		// The session lets go of the gnet conn (its OnClose, and a
		// pause's, is ignored) and of the duplicate; what the peer sent
		// and was not read is not delivered: it reset the connection.
		if sd.c != nil {
			sd.c.Close()
			sd.c = nil
		}
		if sd.fd >= 0 {
			unix.Close(sd.fd)
			sd.fd = -1
		}
		sd.state = sideClosed
		if sd == &s.cli {
			s.cliEOF = true
		} else {
			s.upEOF = true
			s.upstreamClosedFirst(err)
		}
		s.latch.add(sd, err)
	}
}

// flushEnded delivers what a peer that ended sent: the client's bytes to
// the upstream, then close_notify; the upstream's bytes to the client. A
// rate limit may hold part of it back (direction.held) until the rate
// timer calls it again.
func (s *session) flushEnded() {
	s.cliToUp.held, s.upToCli.held = false, false
	if s.cliEOF && s.up.state != sideClosed && !s.closeNotified {
		s.pump(&s.cliToUp, true)
		if !s.cliToUp.held && s.tc != nil {
			s.tc.CloseWrite()
			s.closeNotified = true
		}
	}
	if s.upEOF && s.cli.state != sideClosed {
		s.pump(&s.upToCli, true)
		if s.phase != phaseDone && s.truncated() {
			s.abort(&s.up, errNoCloseNotify)
		}
	}
}

// settle is the one place that decides how a closing session goes on: it
// enters closing (from open), then waits for the rate timer (closeHeld),
// for both queues to drain (closeDraining, polled), or for the upstream to
// end (closeLingering), or it finishes the session. Every event that may
// let a closing session move on calls it: a peer's end, a poll, the rate
// timer, the linger's bound. Runs on the loop, in a step.
func (s *session) settle() {
	switch s.phase {
	case phaseDone:
		return // a flush before ended it
	case phaseOpen:
		s.enter(phaseClosing)
	}
	switch {
	case s.closing == closeLingered:
		// The linger is over: nothing more is waited for.
	case s.cliToUp.held || s.upToCli.held:
		s.closing = closeHeld
		return
	case !s.drained():
		if s.closing != closeDraining {
			s.closing = closeDraining
			s.armPoll()
		}
		return
	case s.closing == closeLingering && s.up.state != sideClosed:
		return // reading on until the upstream closes or the bound passes
	case s.closing != closeLingering && s.mustLinger():
		// An upstream whose close_notify came first is answered only if
		// its FIN does not follow (onLinger): a record that reaches the
		// socket it closed would draw a reset.
		if !s.upNotified && s.notifyUpstream() && !s.drained() {
			// close_notify waits in the upstream's queue.
			s.closing = closeDraining
			s.armPoll()
			return
		}
		s.closing = closeLingering
		s.startLinger()
		return
	}
	s.finish(s.reason)
}

// drained reports whether nothing is left to deliver on either socket.
func (s *session) drained() bool {
	for _, sd := range [...]*side{&s.cli, &s.up} {
		switch sd.state {
		case sideAttached:
			if sd.pending() > 0 {
				return false
			}
		case sideEnrolling, sideDetaching:
			return false
		case sideDetached, sideHalf:
			if sd.out != nil && len(sd.out.B) > 0 {
				return false
			}
		}
	}
	return true
}

// lingerTimeout bounds how long a closing session waits for its upstream
// to close its connection first (see mustLinger). The bound restarts with
// each upstream read; an upstream that stays silent that long is closed
// in NGINX's order (tlsrelay's FIN first).
const lingerTimeout = 5 * time.Second

// finAfterNotify bounds the linger once the upstream's close_notify came
// and tlsrelay's went: its FIN follows at once from
// any upstream that closes as TLS says, and one that does not (it waits,
// or sends more after its close_notify) is not waited for longer.
const finAfterNotify = time.Second

// finReceived reports whether the peer's FIN has reached the socket fd
// (TCP state CLOSE_WAIT) though gnet has not read it yet.
func finReceived(fd int) bool {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	return err == nil && info.State == tcpCloseWait
}

// tcpCloseWait is Linux's TCP_CLOSE_WAIT (include/net/tcp_states.h).
const tcpCloseWait = 8

// lingerBound is how long a lingering session waits from the upstream's
// last read: finAfterNotify once its close_notify came, else
// lingerTimeout. Runs on the loop.
func (s *session) lingerBound() int64 {
	switch {
	case s.upNotified && !s.closeNotified:
		return s.lp.ticks(notifyReplyDelay)
	case s.upNotified:
		return s.lp.ticks(finAfterNotify)
	}
	return s.lp.ticks(lingerTimeout)
}

// notifyReplyDelay is how long a session waits for the FIN that follows
// an upstream's close_notify (sent together, they arrive together) before
// it answers with its own close_notify, for an upstream that closes only
// once it has that answer (OpenSSL's two-way SSL_shutdown).
const notifyReplyDelay = 2 * tick

// lingerSlack is how much more than the client sent a lingering session
// reads and drops before it stops waiting: an echo of what the client
// sent is waited for, an upstream that streams on to a client that left
// is not (NGINX closes at once; reading a long stream only to drop it
// would cost its decryption).
const lingerSlack = 256 << 10

// mustLinger reports whether the session, everything delivered, should
// wait for the upstream to close its connection before it finishes.
//
// A TLS upstream always, once the stream has ended either way (the client
// ended, the upstream's close_notify came, or proxy_timeout passed): it
// is sent close_notify (notifyUpstream) and left to close first, with its
// close_notify and FIN or a FIN alone. The side that sends the first FIN
// keeps the socket in TIME_WAIT for 60 s, and on a real network
// (tcp_tw_reuse = 0) TIME_WAIT on tlsrelay's side caps the new connections
// a second to one upstream address at the ephemeral ports over 60 s (about
// 470); on the upstream's side it costs the upstream no port. Reading its
// close_notify also means no unread byte sits in the socket when it is
// closed (that close would be a reset), and a TLS 1.3 ticket the upstream
// sends late (after the client's Finished, as OpenSSL does) is still
// stored. The client is not kept waiting: its socket is closed when the
// linger starts.
//
// A plaintext upstream can be told the end by a FIN only: it is shut and
// read until it closes too only when that saves something (lingerUseful),
// and only after the client ended. proxy_half_close on keeps its own
// order (the client's FIN is passed on as a FIN).
func (s *session) mustLinger() bool {
	if s.up.state != sideAttached || s.srv.halfClose || s.aborted || s.broken() {
		return false
	}
	if s.tc != nil {
		// Bytes after its close_notify: the upstream is not closing as
		// TLS says, and is not waited for.
		return s.readErr == nil && !(s.upNotified && s.up.buffered() > 0)
	}
	return s.cliEOF && !s.upEOF && s.lingerUseful()
}

// notifyUpstream sends a TLS upstream close_notify, once, if it has not
// had it (the stream ended by the upstream's close_notify or by
// proxy_timeout); it reports whether it wrote it now. Runs on the loop, in
// a step.
func (s *session) notifyUpstream() bool {
	if s.tc == nil || s.closeNotified || s.up.state != sideAttached || s.up.failed || s.cliToUp.held {
		return false
	}
	if s.upNotified && finReceived(s.up.c.Fd()) {
		// The upstream closed after its close_notify: a record now would
		// reach a closed socket and draw a reset.
		return false
	}
	s.tc.CloseWrite()
	s.closeNotified = true
	return true
}

// lingerUseful reports whether waiting for a plaintext upstream, after
// the client ended, can still save something: bytes the upstream has not
// acknowledged (anything in the socket's send queue: a close now would
// reset the connection and drop them). Otherwise the session ends at
// once, as NGINX's does. Runs on the loop.
func (s *session) lingerUseful() bool {
	if s.peer != nil && s.peer.Path != "" {
		// A unix domain socket's close resets nothing: what was sent
		// stays in the peer's queue (SIOCOUTQ counts it) until read.
		return false
	}
	outq, err := unix.IoctlGetInt(s.up.c.Fd(), unix.SIOCOUTQ)
	return err != nil || outq > 0
}

// startLinger lets go of the client (everything owed to it went) and
// arms the bound; a plaintext upstream is shut (a FIN after its last
// byte), a TLS one is not: it had close_notify and closes first. Runs on
// the loop, in a step, once both queues are empty.
func (s *session) startLinger() {
	s.closeSide(&s.cli)
	if s.tc == nil && s.up.shut != shutDone {
		s.up.shut = shutDone
		s.closedFirst()
		unix.Shutdown(s.up.c.Fd(), unix.SHUT_WR)
	}
	s.lastUp = s.lp.nowTick()
	s.lp.arm(&s.linger, s.lingerBound())
}

// closeSide closes sd's socket before the session finishes (a lingering
// session's client): nothing is owed to it, and its gnet conn's OnClose
// is ignored (the session let go of it). Runs on the loop, in a step.
func (s *session) closeSide(sd *side) {
	switch sd.state {
	case sideAttached:
		c := sd.c
		sd.c = nil
		c.Close()
	case sideDetached, sideHalf:
		unix.Close(sd.fd)
		sd.fd = -1
	default:
		return // closed already (or in a transition drained() waited out)
	}
	sd.state = sideClosed
	sd.release()
}

// closedFirst records, unless the upstream's end came first, that
// tlsrelay is about to shut or close the upstream's socket first: with
// close_notify before its FIN, a FIN alone, or a reset (an aborted
// session). Runs on the loop, just before the shut or close.
func (s *session) closedFirst() {
	if s.upClose != metrics.CloseUnknown {
		return
	}
	switch {
	case s.aborted:
		s.upClose = metrics.CloseRelayReset
	case s.closeNotified:
		s.upClose = metrics.CloseRelayNotify
	default:
		s.upClose = metrics.CloseRelayFIN
	}
}

// upstreamClosedFirst records, unless tlsrelay shut or closed the
// upstream's socket before, that the upstream's end came first: its FIN
// (err nil or io.EOF; close_notify before it is told at finish, once read)
// or a reset (any other err). Runs on the loop.
func (s *session) upstreamClosedFirst(err error) {
	if s.upClose != metrics.CloseUnknown {
		return
	}
	if err == nil || errors.Is(err, io.EOF) {
		s.upClose = metrics.CloseUpstreamFIN
		return
	}
	s.upClose = metrics.CloseUpstreamReset
}

// onLinger fires when the upstream may have been silent for
// lingerTimeout after the client ended. Runs on the loop (a wheel timer).
func (s *session) onLinger() {
	if s.phase == phaseDone {
		return
	}
	if left := s.lastUp + s.lingerBound() - s.lp.nowTick(); left > 0 {
		s.lp.arm(&s.linger, left)
		return
	}
	s.begin()
	defer s.end()
	if s.upNotified && !s.closeNotified && s.notifyUpstream() {
		// No FIN followed the upstream's close_notify: it waits for
		// tlsrelay's, which went now.
		s.lastUp = s.lp.nowTick()
		s.lp.arm(&s.linger, s.lingerBound())
		return
	}
	s.closing = closeLingered
	s.settle()
}

// droppedBytes counts n bytes read from the upstream for a client that is gone
// (read for the records they came in: a ticket, close_notify) and stops
// waiting for an upstream that streams on past lingerSlack (NGINX closes
// at once; reading a long stream only to drop it would cost its
// decryption). Runs on the loop, in a step.
func (s *session) droppedBytes(n int) {
	s.dropped += int64(n)
	if s.dropped > s.toUp+lingerSlack {
		s.closing = closeLingered
		s.settle()
	}
}
