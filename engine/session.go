package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// What a session lets queue toward one socket is bounded by its server's
// watermarks (server.highWater, 32 × proxy_buffer_size): above high the
// other socket stops being read (first by not consuming, then by detaching
// it from gnet, see pause); below low it is read again.
const (
	// stallCap is how much unconsumed input a socket may hold in gnet
	// while its counterpart is congested before it is paused for real
	// (detached); short congestion never costs a detach.
	stallCap = 256 << 10
)

type phase uint8

const (
	phaseConnecting phase = iota // waiting for the dialer
	phaseOpen                    // relaying
	phaseClosing                 // one side ended; flushing the other
	phaseDone                    // finished; late events are ignored
)

// session is one client connection and its upstream connection. All of its
// methods run on its loop, except dialDone (a dialer worker) and the
// atomic cancelled flag.
type session struct {
	e   *Engine
	lp  *loop
	srv *server
	id  uint64

	cli, up side
	tc      *tlsbridge.Conn // nil for a plaintext upstream
	peer    *pool.Peer
	sel     pool.Selection
	job     pool.DialJob

	phase     phase
	cancelled atomic.Bool // read by the dialer worker
	remote    net.Addr
	local     net.Addr

	start      time.Time
	lastActive int64 // loop tick of the last traffic
	idle       timer // proxy_timeout
	rate       timer // proxy_upload_rate, proxy_download_rate
	polled     bool  // on its loop's poll list (backpressure, drain)

	cliEOF, upEOF bool
	held          bool   // a rate limit holds back part of an ended peer's bytes
	closeNotified bool   // close_notify went to the upstream
	reason        string // why the session ended, for the log
	status        int    // $status: 200, or 502/500/503 when no upstream

	// for the access log
	upOpened   time.Time // the upstream conn was adopted
	firstByte  time.Time // the first byte from the upstream
	tlsVersion uint16
	tlsCipher  uint16
	tlsResumed bool
	readErr    error // a TLS error after the handshake

	fromClient, toClient, fromUp, toUp int64
}

// upOpen is the context of an upstream conn being enrolled after its
// handshake.
type upOpen struct {
	s   *session
	res pool.DialResult
}

// reattach is the context of a paused socket being re-adopted.
type reattach struct {
	s  *session
	sd *side
}

// newSession starts a session for the client conn c. Runs on c's loop.
func (e *Engine) newSession(c gnet.Conn, lp *loop, srv *server) *session {
	s := &session{e: e, lp: lp, srv: srv, id: e.connID.Add(1), start: time.Now(), status: 200}
	s.cli.c, s.cli.state, s.cli.fd = c, sideAttached, -1
	s.up.fd = -1
	s.remote, s.local = c.RemoteAddr(), c.LocalAddr()
	s.idle.fire = s.onIdle
	s.rate.fire = s.onRate
	s.lastActive = lp.wheel.now
	c.SetContext(s)

	srv.group.InitSelection(&s.sel, srv.hashKey(s.remote, s.local), srv.tries, s.start)
	s.job = pool.DialJob{
		Sel:                 &s.sel,
		ConnectTimeout:      srv.connectTimeout,
		NextUpstream:        srv.nextUpstream,
		NextUpstreamTimeout: srv.nextTimeout,
		Cancelled:           s.cancelled.Load,
		OnFailure:           s.dialAttemptFailed,
		Socket:              srv.sock,
		Done:                s.dialDone,
	}
	if srv.policy != nil {
		s.job.TLS = s.tlsConfig
		s.job.FullTLS = s.fullTLSConfig
		s.job.Observe = s.observeHandshake
	}
	if srv.proxyProtocol != 0 {
		s.job.ProxyHeader = s.proxyHeader
	}
	e.stats.Accepted.Add(1)
	e.stats.Active.Add(1)
	lp.sessions++
	if err := e.dialer.Submit(&s.job); err != nil {
		e.log.Logf(LevelError, s.id, "%v while connecting to upstream, client: %s, server: %s", err, hostOf(s.remote), srv.name)
		s.status = 503
		s.finish("dial queue full")
		return s
	}
	return s
}

// tlsConfig gives the dialer the TLS configuration for a peer. Runs on a
// dialer worker; it reads only immutable fields.
func (s *session) tlsConfig(p *pool.Peer) (*tls.Config, error) {
	return s.srv.tlsConfig(p, s.remote, s.local, false)
}

// fullTLSConfig is tlsConfig without session resumption. Runs on a dialer
// worker.
func (s *session) fullTLSConfig(p *pool.Peer) (*tls.Config, error) {
	return s.srv.tlsConfig(p, s.remote, s.local, true)
}

// observeHandshake feeds the policy's session accounting. Runs on a dialer
// worker.
func (s *session) observeHandshake(p *pool.Peer, cs tls.ConnectionState, err error) bool {
	t, v := s.srv.target(p, s.remote, s.local)
	return s.srv.policy.Observe(t, v, cs, err)
}

// dialAttemptFailed logs one failed attempt. Runs on a dialer worker.
func (s *session) dialAttemptFailed(a pool.Attempt, disabled bool) {
	s.e.stats.HandshakeFailures.Add(1)
	if a.Handshaking {
		s.e.log.Logf(LevelError, s.id, "%v (%s) while SSL handshaking to upstream, client: %s, server: %s, upstream: \"%s\"",
			a.Err, tlsbridge.Classify(a.Err), hostOf(s.remote), s.srv.name, a.Peer)
	} else {
		s.e.log.Logf(LevelError, s.id, "%v while connecting to upstream, client: %s, server: %s, upstream: \"%s\"",
			a.Err, hostOf(s.remote), s.srv.name, a.Peer)
	}
	if disabled {
		s.e.log.Logf(LevelWarn, s.id, "upstream server temporarily disabled while connecting to upstream, client: %s, server: %s, upstream: \"%s\"",
			hostOf(s.remote), s.srv.name, a.Peer)
	}
}

// dialDone receives the dialer's outcome. Runs on a dialer worker: it hands
// the socket to the session's loop and touches nothing else.
func (s *session) dialDone(r pool.DialResult) {
	el := s.lp.el
	if r.Err != nil {
		err := r.Err
		el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			s.dialFailed(err)
			return nil
		}))
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
		el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			s.peer = r.Peer
			s.dialFailed(err)
			return nil
		}))
	}
}

// dialFailed ends a session whose upstream could not be reached. Runs on
// the loop.
func (s *session) dialFailed(err error) {
	if s.phase == phaseDone {
		return
	}
	if !errors.Is(err, context.Canceled) {
		s.status = 502
		// The last attempt's error was logged with its attempt; what is
		// left to say is that none worked (or that none could be tried).
		if n := len(s.job.Attempts); n > 0 && s.job.Attempts[n-1].Err == err {
			if n > 1 {
				s.e.log.Logf(LevelError, s.id, "no upstream could be reached after %d attempts, client: %s, server: %s, upstream: \"%s\"",
					n, hostOf(s.remote), s.srv.name, s.srv.group.Name())
			}
		} else {
			s.e.log.Logf(LevelError, s.id, "%v, client: %s, server: %s", err, hostOf(s.remote), s.srv.name)
		}
	}
	s.finish("upstream unreachable")
}

// onUpstreamOpen adopts the upstream conn. Runs on the loop.
func (s *session) onUpstreamOpen(c gnet.Conn, r pool.DialResult) {
	s.peer = r.Peer
	if s.phase == phaseDone {
		s.sel.Release(r.Peer)
		s.peer = nil
		c.Close()
		return
	}
	c.SetContext(s)
	s.up.c, s.up.state = c, sideAttached
	s.upOpened = time.Now()
	if r.TLS != nil {
		s.tc = r.TLS
		s.tc.Detach(&s.up, &s.up)
		s.tlsVersion, s.tlsCipher, s.tlsResumed = r.State.Version, r.State.CipherSuite, r.State.DidResume
		if r.State.DidResume {
			s.e.stats.Resumed.Add(1)
		} else {
			s.e.stats.Full.Add(1)
		}
	}
	s.phase = phaseOpen
	s.touch()
	if s.srv.idleTimeout > 0 {
		s.lp.arm(&s.idle, s.lp.ticks(s.srv.idleTimeout))
	}
	if s.e.log.Enabled(LevelInfo) {
		s.e.log.Logf(LevelInfo, s.id, "proxy %s connected to %s", s.up.c.LocalAddr(), s.peer)
	}
	// Bytes crypto/tls read ahead during the handshake (a TLS 1.3
	// NewSessionTicket) fire no event: read them now, so the ticket is
	// stored even if the session ends at once.
	s.pumpToClient(false)
	if s.phase == phaseDone {
		return
	}
	if s.cli.stalled {
		// What the client sent while the upstream was dialed.
		if s.unstall(&s.cli, &s.up) {
			s.armPoll()
		}
	} else {
		s.pumpToUp(false)
	}
	if s.cliEOF && s.phase != phaseDone {
		s.clientEnded()
	}
}

// onClientTraffic runs on the loop when the client conn has input.
func (s *session) onClientTraffic(c gnet.Conn) {
	if c != s.cli.c {
		return
	}
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
			s.pumpToUp(false)
		}
	}
}

// onUpstreamTraffic runs on the loop when the upstream conn has input.
func (s *session) onUpstreamTraffic(c gnet.Conn) {
	if c != s.up.c {
		return
	}
	s.touch()
	switch s.phase {
	case phaseOpen:
		if s.up.stalled {
			s.stall(&s.up)
		} else {
			s.pumpToClient(false)
		}
	case phaseClosing:
		if s.cli.state == sideClosed {
			c.Discard(-1) // the client is gone; nothing to deliver to
		} else {
			s.pumpToClient(true)
		}
	}
}

// pumpToUp moves client input to the upstream until the upstream's queue
// passes the high watermark (unless force: at the client's end every byte
// goes).
func (s *session) pumpToUp(force bool) {
	for force || s.up.pending() < s.srv.highWater {
		buf := s.lp.scratch
		if s.srv.uploadRate > 0 {
			limit := s.allowance(s.srv.uploadRate, s.fromClient)
			if limit <= 0 {
				if s.cli.buffered() > 0 {
					s.rateHold(&s.cli, force, s.srv.uploadRate, s.fromClient)
				}
				return
			}
			if int64(len(buf)) > limit {
				buf = buf[:limit]
			}
		}
		n, _ := s.cli.Read(buf)
		if n == 0 {
			break
		}
		s.fromClient += int64(n)
		s.toUp += int64(n)
		if s.tc != nil {
			s.tc.Write(buf[:n])
		} else {
			s.up.Write(buf[:n])
		}
		if s.phase == phaseDone {
			return
		}
	}
	if !force && s.up.pending() >= s.srv.highWater {
		s.stall(&s.cli)
	}
}

// pumpToClient moves upstream input to the client until the client's queue
// passes the high watermark (unless force).
func (s *session) pumpToClient(force bool) {
	// more: the last read filled its buffer, so crypto/tls may hold more
	// plaintext than the socket's buffered bytes show.
	more := true
	for force || s.cli.pending() < s.srv.highWater {
		buf := s.lp.scratch
		if s.srv.downloadRate > 0 {
			limit := s.allowance(s.srv.downloadRate, s.fromUp)
			if limit <= 0 {
				if more || s.up.buffered() > 0 {
					s.rateHold(&s.up, force, s.srv.downloadRate, s.fromUp)
				}
				return
			}
			if int64(len(buf)) > limit {
				buf = buf[:limit]
			}
		}
		var n int
		var err error
		if s.tc != nil {
			n, err = s.tc.Read(buf)
		} else {
			n, _ = s.up.Read(buf)
			if n == 0 {
				err = tlsbridge.ErrWouldBlock
			}
		}
		more = n == len(buf)
		if n > 0 {
			if s.fromUp == 0 {
				s.firstByte = time.Now()
			}
			s.fromUp += int64(n)
			s.toClient += int64(n)
			s.cli.Write(buf[:n])
			if s.phase == phaseDone {
				return
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, tlsbridge.ErrWouldBlock) {
			break
		}
		if err == io.EOF {
			// close_notify: the upstream is done sending.
			if !s.upEOF {
				s.upEOF = true
				s.upstreamEnded()
			}
			return
		}
		// A TLS 1.3 upstream that refuses the client certificate says so
		// only after the handshake: the first read fails.
		s.readErr = err
		s.e.log.Logf(LevelError, s.id, "reading from upstream failed (%s): %v, client: %s, server: %s, upstream: \"%s\"",
			tlsbridge.Classify(err), err, hostOf(s.remote), s.srv.name, s.peer)
		s.upEOF = true
		s.upstreamEnded()
		return
	}
	if !force && s.cli.pending() >= s.srv.highWater {
		s.stall(&s.up)
	}
}

// allowance is how many more bytes a rate-limited direction may move now,
// NGINX's rule: rate × (whole seconds since the session began + 1) − moved.
func (s *session) allowance(rate, moved int64) int64 {
	secs := int64(time.Since(s.start)/time.Second) + 1
	return rate*secs - moved
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

// onRate lifts rate stalls and holds. Runs on the loop.
func (s *session) onRate() {
	if s.phase == phaseClosing && s.held {
		s.flushEnded()
		if s.phase == phaseClosing {
			s.drainThenFinish()
		}
		return
	}
	if s.phase != phaseOpen {
		return
	}
	for _, pair := range [...][2]*side{{&s.cli, &s.up}, {&s.up, &s.cli}} {
		src, dst := pair[0], pair[1]
		if src.rateLimited {
			src.rateLimited = false
			if s.unstall(src, dst) {
				s.armPoll()
			}
		}
	}
}

// stall stops consuming sd's input because the other socket is congested;
// gnet keeps reading it, so past stallCap the socket is paused. Polling
// lifts the stall once the other socket drains.
func (s *session) stall(sd *side) {
	if !sd.stalled {
		s.e.stats.Stalls.Add(1)
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
// drops queued output on close, so with output queued the pause waits.
func (s *session) pause(sd *side) {
	if sd.state != sideAttached {
		return
	}
	if sd.c.OutboundBuffered() > 0 {
		sd.wantPause = true
		s.armPoll()
		return
	}
	fd, err := sd.c.Dup()
	if err != nil {
		s.e.log.Logf(LevelWarn, s.id, "pausing a connection: dup: %v", err)
		return
	}
	sd.wantPause = false
	sd.fd = fd
	sd.spill(sd.c)
	sd.state = sideDetaching
	s.e.stats.Pauses.Add(1)
	sd.c.Close()
	s.armPoll()
}

// resume re-adopts a paused socket into the loop. The new conn arrives in
// OnOpen (onReattach).
func (s *session) resume(sd *side) {
	if sd.state != sideDetached {
		return
	}
	f := os.NewFile(uintptr(sd.fd), "tlsrelay-paused")
	nc, err := net.FileConn(f)
	f.Close()
	sd.fd = -1
	if err != nil {
		sd.state = sideClosed
		s.e.log.Logf(LevelError, s.id, "resuming a paused connection: %v", err)
		s.finish("resume failed")
		return
	}
	sd.state = sideEnrolling
	if _, err := s.lp.el.Enroll(gnet.NewContext(context.Background(), &reattach{s: s, sd: sd}), nc); err != nil {
		nc.Close()
		sd.state = sideClosed
		s.e.log.Logf(LevelError, s.id, "resuming a paused connection: %v", err)
		s.finish("resume failed")
	}
}

// onReattach adopts a resumed socket. Runs on the loop.
func (s *session) onReattach(c gnet.Conn, sd *side) {
	if s.phase == phaseDone || sd.state != sideEnrolling {
		c.Close()
		return
	}
	c.SetContext(s)
	sd.c, sd.state = c, sideAttached
	sd.flushOut()
	switch s.phase {
	case phaseOpen:
		s.pumpToUp(false)
		if s.phase == phaseOpen {
			s.pumpToClient(false)
		}
	case phaseClosing:
		s.armPoll()
	}
}

// onClose runs on the loop when gnet closes one of the session's conns:
// after a pause, a peer's FIN or reset, a write error, or our own Close.
func (s *session) onClose(c gnet.Conn, err error) {
	var sd *side
	switch c {
	case s.cli.c:
		sd = &s.cli
	case s.up.c:
		sd = &s.up
	default:
		return // a conn the session already let go
	}
	if s.phase == phaseDone {
		sd.c, sd.state = nil, sideClosed
		return
	}
	// What gnet read but the session did not consume is about to be
	// dropped with the conn: keep it.
	sd.spill(c)
	sd.c = nil
	if sd.state == sideDetaching {
		sd.state = sideDetached
		s.armPoll()
		return
	}
	sd.state = sideClosed
	if sd.out != nil {
		sd.out.Reset()
	}
	if sd == &s.cli {
		s.cliEOF = true
		if s.phase != phaseConnecting {
			s.clientEnded()
		}
		// While connecting, the upstream is opened anyway and gets what
		// the client sent (onUpstreamOpen), as NGINX does.
		return
	}
	s.upEOF = true
	if s.phase == phaseOpen || s.phase == phaseClosing {
		// Deliver what the upstream sent before it closed.
		s.pumpToClient(true)
		s.upstreamEnded()
	}
}

// clientEnded runs when the client sent its last byte: everything it sent
// goes to the upstream, then close_notify, then the session ends once the
// upstream has taken it all.
func (s *session) clientEnded() {
	if s.phase == phaseDone {
		return
	}
	if s.up.state == sideDetached {
		s.resume(&s.up)
	}
	s.reason = "client closed"
	s.flushEnded()
	if s.phase != phaseDone {
		s.drainThenFinish()
	}
}

// flushEnded delivers what a peer that ended sent: the client's bytes to
// the upstream, then close_notify; the upstream's bytes to the client. A
// rate limit may hold part of it until the rate timer (s.held).
func (s *session) flushEnded() {
	s.held = false
	if s.cliEOF && s.up.state != sideClosed && !s.closeNotified {
		s.pumpToUp(true)
		if s.phase == phaseDone {
			return
		}
		if !s.held && s.tc != nil {
			s.tc.CloseWrite()
			s.closeNotified = true
		}
	}
	if s.upEOF && s.cli.state != sideClosed {
		s.pumpToClient(true)
	}
}

// upstreamEnded runs when the upstream sent its last byte (close_notify or
// FIN): the client gets everything, then the session ends.
func (s *session) upstreamEnded() {
	if s.phase == phaseDone {
		return
	}
	if s.cli.state == sideDetached {
		s.resume(&s.cli)
	}
	if s.reason == "" {
		s.reason = "upstream closed"
	}
	s.drainThenFinish()
}

// drainThenFinish ends the session once both sockets' queues are empty;
// gnet's Close would drop queued output.
func (s *session) drainThenFinish() {
	s.phase = phaseClosing
	if s.drained() {
		s.finish(s.reason)
		return
	}
	s.armPoll()
}

func (s *session) drained() bool {
	if s.held {
		return false
	}
	for _, sd := range [...]*side{&s.cli, &s.up} {
		switch sd.state {
		case sideAttached:
			if sd.pending() > 0 {
				return false
			}
		case sideEnrolling, sideDetaching:
			return false
		case sideDetached:
			if sd.out != nil && len(sd.out.B) > 0 {
				return false
			}
		}
	}
	return true
}

// finish ends the session and frees what it holds. Runs on the loop.
func (s *session) finish(reason string) {
	if s.phase == phaseDone {
		return
	}
	s.phase = phaseDone
	if s.reason == "" {
		s.reason = reason
	}
	s.cancelled.Store(true)
	s.lp.wheel.disarm(&s.idle)
	s.lp.wheel.disarm(&s.rate)
	for _, sd := range [...]*side{&s.cli, &s.up} {
		switch sd.state {
		case sideAttached, sideDetaching:
			sd.c.Close()
		case sideDetached:
			unix.Close(sd.fd)
			sd.fd = -1
		}
		sd.release()
	}
	if s.peer != nil {
		s.sel.Release(s.peer)
		s.peer = nil
	}
	if len(s.srv.accessLogs) > 0 {
		s.logAccess(time.Now())
	}
	s.e.stats.Active.Add(-1)
	s.e.stats.BytesFromClient.Add(s.fromClient)
	s.e.stats.BytesToClient.Add(s.toClient)
	s.lp.sessions--
	if s.e.log.Enabled(LevelInfo) {
		s.e.log.Logf(LevelInfo, s.id, "%s, bytes from/to client:%d/%d, bytes from/to upstream:%d/%d",
			s.reason, s.fromClient, s.toClient, s.fromUp, s.toUp)
	}
	s.lp.sessionEnded()
}

// touch records traffic for proxy_timeout.
func (s *session) touch() { s.lastActive = s.lp.wheel.now }

// onIdle fires when proxy_timeout may have passed without traffic.
func (s *session) onIdle() {
	idle := s.lp.ticks(s.srv.idleTimeout)
	if left := s.lastActive + idle - s.lp.wheel.now; left > 0 {
		s.lp.arm(&s.idle, left)
		return
	}
	if s.e.log.Enabled(LevelInfo) {
		s.e.log.Logf(LevelInfo, s.id, "upstream timed out (110: Connection timed out) while proxying connection, client: %s, server: %s, upstream: \"%s\"",
			hostOf(s.remote), s.srv.name, s.peer)
	}
	s.e.stats.IdleTimeouts.Add(1)
	s.reason = "idle timeout"
	s.finish("idle timeout")
}

// armPoll puts the session on its loop's poll list; onPoll runs about
// every millisecond until it reports nothing left to wait for.
func (s *session) armPoll() {
	if !s.polled {
		s.polled = true
		s.lp.addPolled(s)
	}
}

// onPoll retries what waits on a queue draining: a pause that had to wait,
// a stalled or paused socket whose counterpart drained, a close that must
// flush. It reports whether the session must stay on the poll list. Runs
// on the loop.
func (s *session) onPoll() bool {
	if s.phase == phaseDone {
		return false
	}
	again := false
	for _, sd := range [...]*side{&s.cli, &s.up} {
		if sd.wantPause && sd.state == sideAttached {
			s.pause(sd)
			again = again || sd.wantPause
		}
	}
	if s.phase == phaseOpen {
		again = s.unstall(&s.cli, &s.up) || again
		again = s.unstall(&s.up, &s.cli) || again
	}
	if s.phase == phaseClosing {
		if s.drained() {
			s.finish(s.reason)
			return false
		}
		for _, sd := range [...]*side{&s.cli, &s.up} {
			if sd.state == sideDetached && sd.out != nil && len(sd.out.B) > 0 {
				s.resume(sd)
			}
		}
		again = true
	}
	return again && s.phase != phaseDone
}

// unstall lets src be consumed again once dst has drained below the low
// watermark. It reports whether src still waits.
func (s *session) unstall(src, dst *side) bool {
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
	if src == &s.cli {
		s.pumpToUp(false)
	} else {
		s.pumpToClient(false)
	}
	return src.stalled
}

// onTraffic runs on the loop when one of the session's conns has input.
func (s *session) onTraffic(c gnet.Conn) {
	if c == s.cli.c {
		s.onClientTraffic(c)
	} else {
		s.onUpstreamTraffic(c)
	}
}
