package engine

// Flow control of a session: what it does when one socket cannot take
// bytes as fast as the other delivers them (stall, then pause; resume),
// when a rate limit holds a direction back (rateHold, onRate), and the
// polling that notices a queue drained (gnet has no drained callback).
// Everything here runs on the session's loop.
//
// What a session lets queue toward one socket is bounded by its server's
// watermarks (server.highWater, 32 × proxy_buffer_size): above high the
// other socket stops being read (first by not consuming, then by detaching
// it from gnet, see pause); below low it is read again.

import (
	"context"
	"net"
	"os"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
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
		s.e.log.Logf(errlog.LevelWarn, s.id, "pausing a connection: dup: %v", err)
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
		s.e.log.Logf(errlog.LevelError, s.id, "resuming a paused connection: %v", err)
		s.finish(metrics.ReasonResumeFailed)
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

// rateHold stops consuming d's source until its rate allowance turns
// positive again: at the next whole second of the session (NGINX's
// granularity). While relaying, the source stalls; while flushing after a
// peer ended (force), the direction is held (direction.held): the end of
// the session, or the FIN of a half-close, waits for the rest to go at the
// rate.
func (s *session) rateHold(d *direction, force bool) {
	if force {
		d.held = true
	} else {
		d.src.rateLimited = true
		s.stall(d.src)
	}
	el := time.Since(s.start)
	next := (el/time.Second + 1) * time.Second
	if over := *d.moved - d.rate*int64(next/time.Second); over > 0 {
		// Far over (a large first read): wait until the rate covers it.
		next += time.Duration(over * int64(time.Second) / d.rate)
	}
	s.lp.arm(&s.rate, s.lp.ticks(next-el))
}

// onRate lets rate-limited bytes go on: the next part of an ended peer's
// rest (a held direction), then the directions stalled by the rate. Runs
// on the loop (a wheel timer).
func (s *session) onRate() {
	if s.phase != phaseOpen && s.phase != phaseClosing {
		return
	}
	s.begin()
	defer s.end()
	if s.cliToUp.held || s.upToCli.held {
		s.flushEnded()
		if s.phase == phaseClosing {
			s.settle()
			return
		}
		// proxy_half_close: the FIN after the rest waits for it.
		if !s.tryShut(&s.cli) || !s.tryShut(&s.up) {
			s.armPoll()
		}
	}
	if s.phase != phaseOpen {
		return
	}
	for _, d := range [...]*direction{&s.cliToUp, &s.upToCli} {
		if d.src.rateLimited {
			d.src.rateLimited = false
			if s.unstall(d) {
				s.armPoll()
			}
		}
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
	again, moved := s.pollStep()
	if s.phase == phaseDone {
		return false
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

// pollStep runs poll as one step.
func (s *session) pollStep() (again, moved bool) {
	s.begin()
	defer s.end()
	return s.poll()
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
		s.settle()
		switch {
		case s.phase == phaseDone, s.closing == closeLingering:
			// Done, or waiting for the upstream's events.
			return false, moved
		case s.closing == closeDraining:
			again = true
		}
	}
	return again, moved
}
