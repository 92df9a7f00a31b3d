package engine

// Relaying: the traffic callbacks and the one pump that moves bytes in
// either direction. Everything here runs on the session's loop, inside a
// step (see session.go).

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/pool/dial"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// onTraffic runs on the loop when one of the session's conns has input.
func (s *session) onTraffic(c gnet.Conn) {
	if c == s.cli.c {
		s.onClientTraffic(c)
	} else {
		s.onUpstreamTraffic(c)
	}
}

// onClientTraffic runs on the loop when the client conn has input.
func (s *session) onClientTraffic(c gnet.Conn) {
	if c != s.cli.c {
		return
	}
	s.begin()
	defer s.end()
	s.touch()
	switch s.phase {
	case phaseClosing:
		c.Discard(-1) // the upstream is gone; nothing to deliver to
	case phaseConnecting:
		// Nothing to relay to yet: gnet keeps the bytes, and past
		// stallCap the client is paused until the upstream is ready.
		s.stall(&s.cli)
	case phaseOpen:
		if s.cli.stalled {
			s.stall(&s.cli)
		} else {
			s.pump(&s.cliToUp, false)
		}
	}
}

// onUpstreamTraffic runs on the loop when the upstream conn has input.
func (s *session) onUpstreamTraffic(c gnet.Conn) {
	if c != s.up.c {
		return
	}
	s.begin()
	defer s.end()
	s.touch()
	switch s.phase {
	case phaseOpen:
		if s.up.stalled {
			s.stall(&s.up)
		} else {
			s.pump(&s.upToCli, false)
		}
	case phaseClosing:
		s.lastUp = s.lp.nowTick()
		if s.cli.state == sideClosed && s.tc == nil {
			// The client is gone; nothing to deliver to.
			n, _ := c.Discard(-1)
			s.droppedBytes(n)
		} else if s.upNotified {
			// Bytes after the upstream's close_notify: it is not
			// closing as TLS says, so it is not waited for.
			c.Discard(-1)
			if s.closing == closeLingering {
				s.closing = closeLingered
				s.settle()
			}
		} else {
			// With the client gone the plaintext goes nowhere, but
			// the records are read: a ticket is stored, close_notify
			// ends the linger.
			s.pump(&s.upToCli, true)
		}
	}
}

// direction is one way bytes flow through a session, client to upstream or
// upstream to client: everything the pump needs to move them. It lives in
// the session and is used on the session's loop.
type direction struct {
	// src is the socket the bytes come off, dst the one they queue
	// toward (its queue is what the high watermark bounds).
	src, dst *side
	// from yields plaintext from src: src itself, or the upstream's
	// tlsbridge.Conn decrypting src's bytes. It returns 0 bytes (with a
	// nil error or tlsbridge.ErrWouldBlock) when it has nothing now.
	from io.Reader
	// to takes plaintext for dst: dst itself, or the upstream's
	// tlsbridge.Conn encrypting into dst. It accepts every byte.
	to io.Writer
	// rate is proxy_upload_rate or proxy_download_rate in bytes per
	// second; 0: unlimited.
	rate int64
	// moved counts the bytes read from src (fromClient, fromUp), sent
	// those handed to dst (toUp, toClient).
	moved, sent *int64
	// corked: to encrypts (the upstream's tlsbridge.Conn); the records
	// of one write are collected and written to dst at once.
	corked bool
	// upstream: from reads the upstream. Then it may end (close_notify,
	// a TLS error), and it may hold plaintext beyond what src shows as
	// buffered (crypto/tls reads whole records ahead).
	upstream bool
	// held: the source ended and a rate limit holds back part of what it
	// sent (rateHold with force); the session's end, or a half-close's
	// FIN, waits until the rate timer has let the rest through.
	held bool
}

// pump moves d's bytes until its destination's queue passes the high
// watermark (unless force: after a peer ended, every byte goes), the source
// has nothing more, the rate allows no more, or a close was latched (the
// end of the step reacts to it). It runs in a step, while the session is
// open or closing; in any other phase it does nothing.
func (s *session) pump(d *direction, force bool) {
	if s.phase != phaseOpen && s.phase != phaseClosing {
		return
	}
	// more: the last read filled its buffer, so crypto/tls may hold more
	// plaintext than the socket's buffered bytes show.
	more := true
	// relayed is counted in the engine's metrics once per pump, not per
	// read (the counters are shared by every loop).
	var relayed int64
	defer func() {
		if relayed > 0 {
			s.e.m.Relayed(d.upstream, relayed)
		}
	}()
	for s.latch.n == 0 && (force || d.dst.pending() < s.srv.highWater) {
		buf := s.lp.scratch
		if d.rate > 0 {
			limit := s.allowance(d.rate, *d.moved)
			if limit <= 0 {
				if (d.upstream && more) || d.src.buffered() > 0 {
					s.rateHold(d, force)
				}
				return
			}
			if int64(len(buf)) > limit {
				buf = buf[:limit]
			}
		}
		n, err := fill(d.from, buf)
		more = n == len(buf)
		if n > 0 && d.dst.state == sideClosed {
			// The destination is gone (a session lingering after its
			// client ended): the bytes were read for the records they
			// came in (a ticket, close_notify) and are dropped, not
			// counted. An upstream that goes on streaming to a client
			// that left is not waited for (see lingerSlack).
			s.droppedBytes(n)
			if s.phase == phaseDone {
				return
			}
		} else if n > 0 {
			if *d.moved == 0 {
				if d.upstream {
					// The upstream's first byte, for the access log and
					// least_time first_byte (from the upstream's open).
					s.firstByte = max(time.Since(s.start), 1)
					if s.peer != nil {
						s.peer.ObserveFirstByte(s.firstByte - s.upOpened)
					}
				} else if s.tc != nil && bytes.HasPrefix(buf[:n], h2Preface) {
					s.clientH2 = true // for alpnHint
				}
			}
			*d.moved += int64(n)
			*d.sent += int64(n)
			relayed += int64(n)
			if d.corked {
				// The records of this write go out in one.
				d.dst.corkOn(&s.lp.cork)
				d.to.Write(buf[:n])
				d.dst.uncork() // may close a conn: onClose latches it
			} else {
				d.to.Write(buf[:n]) // may close a conn: onClose latches it
			}
		} else if err == nil {
			err = tlsbridge.ErrWouldBlock // a side reads 0 when empty
		}
		if err == nil {
			continue
		}
		if errors.Is(err, tlsbridge.ErrWouldBlock) {
			break
		}
		// Only the upstream's TLS conn reports anything else.
		s.upstreamReadEnded(err)
		return
	}
	if !force && d.dst.pending() >= s.srv.highWater {
		s.stall(d.src)
	}
}

// fill reads from r into buf until buf is full, r has nothing more now, or
// r fails: crypto/tls returns one record per Read, so a pump that wrote per
// Read would make a write (a syscall) per 16 KiB record. It returns what
// it read and, with it, r's error (tlsbridge.ErrWouldBlock only when it
// read nothing).
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if errors.Is(err, tlsbridge.ErrWouldBlock) {
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		if err != nil || m == 0 {
			return n, err
		}
	}
	return n, nil
}

// upstreamReadEnded handles the end of the upstream's plaintext: io.EOF is
// its close_notify; any other error breaks the connection (a TLS 1.3
// upstream that refuses the client certificate says so only after the
// handshake: the first read fails), and is logged and kept for the access log
// ($upstream_ssl_error).
func (s *session) upstreamReadEnded(err error) {
	if err == io.EOF && s.closedUnanswered() {
		s.upNotified = true
		s.refused(tlsbridge.ErrClosedAfterHandshake)
		return
	}
	if err == io.EOF {
		s.upNotified = true // close_notify: a clean end
		if s.closing == closeLingering {
			// Its FIN is due at once (finAfterNotify).
			s.lp.arm(&s.linger, s.lingerBound())
		}
		if !s.upEOF {
			s.upEOF = true
			s.upstreamEnded()
		}
		return
	}
	if refusedAtOnce(err) && s.fromUp == 0 && s.peer != nil && !s.peerFailed {
		s.refused(err)
		return
	}
	s.readErr = err
	reason := tlsbridge.Classify(err)
	// A broken record stream after data: what the client got is not the
	// whole stream.
	s.upEOF = true
	s.abort(&s.up, fmt.Errorf("reading from upstream failed (%s): %w", reason, err))
}

// refused ends a session whose upstream refused it right after the TLS
// handshake, before any application data: with an alert (a TLS 1.3 server
// that refuses the client certificate says so only after the handshake
// completed on the client's side), or by closing the connection
// (closedUnanswered). It is a failed attempt, as it would be in TLS 1.2:
// 502, the class logged and in $upstream_ssl_error, the peer's failure
// counted. Runs on the loop, in a step.
func (s *session) refused(err error) {
	s.readErr = err
	reason := tlsbridge.Classify(err)
	s.status = 502
	s.peerFailed = true
	s.e.m.AttemptFailed()
	s.peer.ObserveHandshakeFailure(dial.FailureClass(reason))
	now := time.Now()
	s.peer.ObserveError(err, now)
	disabled := s.lease.Failed(s.peer, now)
	s.e.log.Logf(errlog.LevelError, s.id, "reading from upstream failed (%s): %v: the upstream refused the connection after the TLS handshake, client: %s, server: %s, upstream: \"%s\"",
		reason, err, hostOf(s.remote), s.srv.name, s.peer)
	if disabled {
		s.e.log.Logf(errlog.LevelWarn, s.id, "upstream server temporarily disabled while connecting to upstream, client: %s, server: %s, upstream: \"%s\"",
			hostOf(s.remote), s.srv.name, s.peer)
	}
	s.upEOF = true
	s.upstreamEnded()
}

// refuseWindow bounds how soon after the handshake an upstream's silent
// close counts as a refusal (closedUnanswered): a refusal comes one round
// trip after tlsrelay's Finished.
const refuseWindow = time.Second

// closedUnanswered reports whether the upstream's end, now, is most
// likely a refusal of the client certificate without an alert (GnuTLS
// servers close so): a full TLS 1.3 handshake in which tlsrelay presented
// a certificate, nothing from the upstream yet, the client still there,
// and the end within refuseWindow of the handshake. Runs on the loop.
func (s *session) closedUnanswered() bool {
	return s.tc != nil && s.tlsVersion == tls.VersionTLS13 && !s.tlsResumed && s.fromUp == 0 && !s.cliEOF &&
		s.phase == phaseOpen && s.peer != nil && !s.peerFailed && s.srv.conf.Proxy.SSL.Certificate != "" &&
		time.Since(s.start)-s.upOpened < refuseWindow
}

// refusedAtOnce reports whether err is an alert the upstream sent (as
// opposed to a broken connection or a malformed record).
func refusedAtOnce(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// allowance is how many more bytes a rate-limited direction may move now,
// NGINX's rule: rate × (whole seconds since the session began + 1) − moved.
func (s *session) allowance(rate, moved int64) int64 {
	secs := int64(time.Since(s.start)/time.Second) + 1
	return rate*secs - moved
}

// h2Preface starts what an HTTP/2 (and so gRPC) client sends first
// (RFC 9113, section 3.4).
var h2Preface = []byte("PRI * HTTP/2.0\r\n")

// alpnHint warns, once a minute per server block, when a session whose
// client speaks HTTP/2 (gRPC included) ended by the upstream without "h2"
// negotiated: HTTP/2 servers refuse such a connection (gRPC's
// "context deadline exceeded" on the client), and nothing else would say
// why. Runs on the loop, when the session finishes.
func (s *session) alpnHint() {
	if !s.clientH2 || s.tc == nil || (s.reason != metrics.ReasonUpstreamClosed && s.reason != metrics.ReasonUpstreamAborted) {
		return
	}
	if s.tc.ConnectionState().NegotiatedProtocol == "h2" {
		return
	}
	now := time.Now().UnixNano()
	last := s.srv.alpnHinted.Load()
	if last != 0 && now-last < int64(time.Minute) || !s.srv.alpnHinted.CompareAndSwap(last, now) {
		return
	}
	s.e.log.Logf(errlog.LevelWarn, s.id, "the client speaks HTTP/2 (or gRPC) and the upstream ended the session, but no ALPN protocol was negotiated with it: "+
		"HTTP/2 servers need \"h2\" (add `proxy_ssl_alpn h2;` to the server block), client: %s, server: %s, upstream: \"%s\"",
		hostOf(s.remote), s.srv.name, s.peer)
}
