package engine

// Flow control of a session: what it does when one socket cannot take
// bytes as fast as the other delivers them (stall, then pause; resume),
// when a rate limit holds a direction back (rateHold, onRate), and the
// polling that notices a queue drained (gnet has no drained callback), and
// the linger after a client ended. Everything here runs on the session's
// loop.
//
// What a session lets queue toward one socket is bounded by its server's
// watermarks (server.highWater, 32 × proxy_buffer_size): above high the
// other socket stops being read (first by not consuming, then by detaching
// it from gnet, see pause); below low it is read again.

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// stallCap is how much unconsumed input a socket may hold in gnet while
// its counterpart is congested before it is paused for real (detached);
// short congestion never costs a detach.
const stallCap = 256 << 10

// stall stops consuming sd's input because the other socket is congested;
// gnet keeps reading it, so past stallCap the socket is paused. Polling
// lifts the stall once the other socket drains.
func (s *session) stall(sd *side) {
	if !sd.stalled {
		s.e.m.Stall()
	}
	sd.stalled = true
	if sd.buffered() > stallCap {
		s.pause(sd)
	}
	s.armPoll()
}

// pause stops reading sd's socket: gnet cannot stop reading a conn, so the
// session keeps a duplicate of the descriptor and closes the gnet conn; the
// socket stays open and the kernel's buffers push back on the peer. gnet
// holds no output for a session's socket (side.Write writes directly), so
// nothing queued toward sd delays the pause: that output goes on through
// the duplicate. The close completes in onClose (sideDetaching ->
// sideDetached).
func (s *session) pause(sd *side) {
	if sd.state != sideAttached {
		return
	}
	fd, err := sd.c.Dup()
	if err != nil {
		s.e.log.Logf(LevelWarn, s.id, "pausing a connection: dup: %v", err)
		return
	}
	sd.fd = fd
	sd.spill(sd.c)
	sd.state = sideDetaching
	s.e.m.Pause()
	sd.c.Close()
	s.armPoll()
}

// resume re-adopts a paused socket into the loop; the new conn arrives in
// OnOpen (onReattach). It reports false when the socket could not be
// re-adopted: the session has then ended.
func (s *session) resume(sd *side) bool {
	if sd.state != sideDetached {
		return true
	}
	f := os.NewFile(uintptr(sd.fd), "tlsrelay-paused")
	nc, err := net.FileConn(f)
	f.Close()
	sd.fd = -1
	if err == nil {
		sd.state = sideEnrolling
		if _, err = s.lp.el.Enroll(gnet.NewContext(context.Background(), &reattach{s: s, sd: sd}), nc); err != nil {
			nc.Close()
		}
	}
	if err != nil {
		sd.state = sideClosed
		s.e.log.Logf(LevelError, s.id, "resuming a paused connection: %v", err)
		s.finish("resume failed")
		return false
	}
	return true
}

// onReattach adopts a resumed socket. Runs on the loop, from OnOpen of a
// conn whose context is a *reattach.
func (s *session) onReattach(c gnet.Conn, sd *side) {
	if s.phase == phaseDone || sd.state != sideEnrolling {
		c.Close()
		return
	}
	s.begin()
	defer s.end()
	c.SetContext(s)
	sd.c, sd.state = c, sideAttached
	sd.flushDirect()
	switch s.phase {
	case phaseOpen:
		s.pump(&s.cliToUp, false)
		s.pump(&s.upToCli, false)
	case phaseClosing:
		s.armPoll()
	}
}

// rateHold stops consuming sd until its rate allowance turns positive
// again: at the next whole second of the session (NGINX's granularity).
// While relaying, sd stalls; while flushing after a peer ended (force),
// the session holds its close until the rest has gone at the rate.
func (s *session) rateHold(sd *side, force bool, rate, moved int64) {
	if force {
		s.held = true
	} else {
		sd.rateLimited = true
		s.stall(sd)
	}
	el := time.Since(s.start)
	next := (el/time.Second + 1) * time.Second
	if over := moved - rate*int64(next/time.Second); over > 0 {
		// Far over (a large first read): wait until the rate covers it.
		next += time.Duration(over * int64(time.Second) / rate)
	}
	s.lp.arm(&s.rate, s.lp.ticks(next-el))
}

// onRate lifts rate stalls and holds. Runs on the loop (a wheel timer).
func (s *session) onRate() {
	switch {
	case s.phase == phaseClosing && s.held:
		s.begin()
		s.flushEnded()
		s.drainThenFinish()
		s.end()
	case s.phase == phaseOpen:
		s.begin()
		for _, d := range [...]*direction{&s.cliToUp, &s.upToCli} {
			if d.src.rateLimited {
				d.src.rateLimited = false
				if s.unstall(d) {
					s.armPoll()
				}
			}
		}
		s.end()
	}
}

// unstall lets d's source be consumed again once its destination has
// drained below the low watermark. It reports whether the source still
// waits.
func (s *session) unstall(d *direction) bool {
	src, dst := d.src, d.dst
	if !src.stalled {
		return false
	}
	if src.rateLimited {
		return false // the rate timer lifts it
	}
	if dst.pending() >= s.srv.lowWater {
		return true
	}
	switch src.state {
	case sideDetached:
		src.stalled = false
		s.resume(src)
		return false
	case sideDetaching, sideEnrolling:
		return true
	}
	src.stalled = false
	s.pump(d, false)
	return src.stalled
}

// armPoll puts the session on its loop's poll list; onPoll runs about
// every millisecond until it reports nothing left to wait for.
func (s *session) armPoll() {
	s.pollSkip, s.pollBackoff = 0, 0
	if !s.polled {
		s.polled = true
		s.lp.addPolled(s)
	}
}

// A session whose polls move nothing (a peer that does not read) is polled
// every tick for pollPatience polls, then only every pollSlow-th tick until
// one moves bytes again: ten thousand stuck sessions cost the system calls
// of a few hundred polled every tick, a peer that reads again is noticed
// within pollSlow ticks, and a peer that is merely slow (it reads within
// pollPatience ticks) is not slowed at all.
const (
	pollPatience = 32
	pollSlow     = 32
)

// onPoll retries what waits on a queue draining: output held for a socket
// that was full, a stalled or paused socket whose counterpart drained, a
// close that must flush. It reports whether the session must stay on the
// poll list. A poll that moves bytes counts as activity for proxy_timeout
// and resets the patience (see pollPatience). Runs on the loop
// (loop.runPolls).
func (s *session) onPoll() bool {
	if s.phase == phaseDone {
		return false
	}
	if s.pollSkip > 0 {
		s.pollSkip--
		return true
	}
	s.begin()
	again, moved := s.poll()
	s.end()
	switch s.phase {
	case phaseDone:
		return false
	case phaseClosing:
		// Polled until drained (a close latched above may have begun
		// it); a linger waits for the upstream's events instead.
		if s.lingering {
			return false
		}
		again = true
	}
	if moved {
		s.touch()
		s.pollBackoff = 0
	} else if again {
		if s.pollBackoff < pollPatience {
			s.pollBackoff++
		} else {
			s.pollSkip = pollSlow - 1
		}
	}
	return again
}

// poll is onPoll's step; moved reports whether any byte went to a socket
// or a stalled direction moved again.
func (s *session) poll() (again, moved bool) {
	for _, sd := range [...]*side{&s.cli, &s.up} {
		left, n := sd.flushDirect()
		again = left || again
		moved = moved || n > 0
		again = !s.tryShut(sd) || again
	}
	if s.phase == phaseOpen {
		for _, d := range [...]*direction{&s.cliToUp, &s.upToCli} {
			was := d.src.stalled
			again = s.unstall(d) || again
			moved = moved || (was && !d.src.stalled)
		}
	}
	// A pump above (an unstall) may have queued output toward a full
	// socket: only a poll flushes it.
	again = again || s.cli.pending() > 0 || s.up.pending() > 0
	// Not else: an unstall above may have begun the close.
	if s.phase == phaseClosing {
		if s.drained() {
			if s.mustLinger() {
				s.startLinger()
				return false, moved
			}
			s.finish(s.reason)
			return false, moved
		}
		again = true
	}
	return again, moved
}

// lingerTimeout bounds how long a session whose client ended waits, once
// everything the client sent and close_notify went to the upstream (and
// its write side was shut down), for the upstream to end as well. Reading
// on until then has two purposes: no unread byte sits in the upstream
// socket when it is closed (closing it then would reset the connection,
// and the kernel would drop what it had not yet sent), and a TLS 1.3
// ticket that the upstream sends after it read the client's Finished
// (OpenSSL does) is still stored, so short sessions resume too. The client
// is not kept waiting: its conn is already closed. The bound restarts with
// each upstream read.
const lingerTimeout = 5 * time.Second

// lingerSlack is how much more than the client sent a lingering session
// reads and drops before it stops waiting: an echo of what the client
// sent is waited for, an upstream that streams on to a client that left
// is not (NGINX closes at once; reading a long stream only to drop it
// would cost its decryption).
const lingerSlack = 256 << 10

// mustLinger reports whether the session should wait for the upstream to
// end before it finishes (see lingerTimeout).
func (s *session) mustLinger() bool {
	return s.cliEOF && !s.upEOF && !s.lingered && !s.held && s.up.state == sideAttached && !s.srv.halfClose && s.lingerUseful()
}

// closeNotifyMax is the size of the largest close_notify record crypto/tls
// writes (TLS 1.2 AES-GCM: header, explicit nonce, alert, tag).
const closeNotifyMax = 5 + 8 + 2 + 16

// lingerUseful reports whether waiting for the upstream can still save
// something: a TLS 1.3 ticket (nothing came from the upstream yet, and
// servers send their tickets before any data), or bytes the upstream has
// not acknowledged (more than a close_notify in the socket's send queue:
// a close now would reset the connection and drop them). Otherwise the
// session ends at once, as NGINX's does. Runs on the loop.
func (s *session) lingerUseful() bool {
	if s.tc != nil && s.tlsVersion == tls.VersionTLS13 && s.fromUp == 0 && s.srv.conf.Proxy.SSL.SessionReuse {
		return true
	}
	if s.peer != nil && s.peer.Path != "" {
		// A unix domain socket's close resets nothing: what was sent
		// stays in the peer's queue (SIOCOUTQ counts it) until read.
		return false
	}
	outq, err := unix.IoctlGetInt(s.up.c.Fd(), unix.SIOCOUTQ)
	return err != nil || outq > closeNotifyMax
}

// startLinger shuts the upstream's write side (a FIN after the last
// byte, and after close_notify) and arms the bound. Runs on the loop,
// once the upstream's queue is empty.
func (s *session) startLinger() {
	if !s.upShut {
		s.upShut = true
		unix.Shutdown(s.up.c.Fd(), unix.SHUT_WR)
	}
	if !s.lingering {
		s.lingering = true
		s.lastUp = s.lp.nowTick()
		s.lp.arm(&s.linger, s.lp.ticks(lingerTimeout))
	}
}

// onLinger fires when the upstream may have been silent for
// lingerTimeout after the client ended. Runs on the loop (a wheel timer).
func (s *session) onLinger() {
	if s.phase == phaseDone {
		return
	}
	if left := s.lastUp + s.lp.ticks(lingerTimeout) - s.lp.nowTick(); left > 0 {
		s.lp.arm(&s.linger, left)
		return
	}
	s.lingered = true
	s.finish(s.reason)
}
