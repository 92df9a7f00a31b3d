package tlsbridge

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"time"
)

// The record driver lets an event loop own a *tls.Conn.
//
// crypto/tls is written for blocking sockets. It can nonetheless be driven
// record by record from an event loop, because a net.Error whose
// Temporary() is true is not made sticky on the read path and a partial
// record stays buffered inside the tls.Conn (crypto/tls conn.go,
// readRecordOrCCS). Writes, on the other hand, make every error sticky, so
// the write side must never fail.
//
// A Conn therefore goes through two phases:
//
//  1. Handshake, on a worker goroutine: the tls.Conn reads and writes the
//     real socket, blocking, under a deadline.
//  2. Detached, on the event loop that adopted the socket: reads are served
//     from a Source the loop fills from its OnTraffic callback, returning a
//     temporary error when it is empty; writes go to a Sink that buffers
//     whatever the socket does not take and never fails.

// Source is where a detached Conn reads ciphertext from: the event loop's
// view of the upstream socket. Read returns 0 bytes (with any error) when
// nothing is buffered; it must not block.
type Source interface {
	Read(p []byte) (int, error)
}

// Sink is where a detached Conn writes ciphertext to. It must accept every
// byte (buffering what the socket does not take) and must not block.
type Sink interface {
	Write(p []byte) (int, error)
}

// ErrWouldBlock is returned by Conn.Read when the Source holds no complete
// record: the loop should wait for the next OnTraffic.
var ErrWouldBlock error = wouldBlock{}

// wouldBlock is the temporary net.Error crypto/tls needs to see so that it
// keeps the connection usable.
type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tlsbridge: would block" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

var _ net.Error = wouldBlock{}

// Conn is a client-side TLS connection that a worker goroutine handshakes
// and an event loop then drives without blocking.
//
// Handshake runs on the worker; Detach and everything after it run on the
// event loop that adopted the socket (the session calls Detach when the
// upstream conn opens there). A Conn is not safe for concurrent use.
type Conn struct {
	tc *tls.Conn
	a  adapter
	// early is application data Poll read before Detach; Read serves it
	// first.
	early []byte
}

// NewConn returns a Conn that will handshake over raw with cfg.
func NewConn(raw net.Conn, cfg *tls.Config) *Conn {
	c := &Conn{}
	c.a.raw = raw
	// crypto/tls keys its session cache on RemoteAddr when ServerName is
	// empty, also for tickets stored after the handshake: keep both
	// addresses past Detach.
	c.a.local, c.a.remote = raw.LocalAddr(), raw.RemoteAddr()
	c.tc = tls.Client(&c.a, cfg)
	return c
}

// Handshake runs the TLS handshake on the real socket, blocking, and fails
// when it has not completed by deadline. It runs on a worker goroutine.
func (c *Conn) Handshake(deadline time.Time) error {
	if err := c.a.raw.SetDeadline(deadline); err != nil {
		return err
	}
	err := c.tc.Handshake()
	if err != nil {
		return err
	}
	// Clear the deadline: the socket is about to be adopted by an event
	// loop, which duplicates the descriptor; deadlines are Go-runtime state
	// and would not follow it, but leave nothing behind regardless.
	return c.a.raw.SetDeadline(time.Time{})
}

// ConnectionState returns the state of the handshake.
func (c *Conn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// Detach switches the Conn to event-loop mode: from now on it reads
// ciphertext from src and writes it to dst, and never touches the raw
// socket again (the caller hands the socket to the event loop, which
// duplicates and closes it). It runs on the owning event loop.
func (c *Conn) Detach(src Source, dst Sink) {
	c.a.raw = nil
	c.a.src = src
	c.a.dst = dst
}

// Read decrypts application data into p. It returns ErrWouldBlock when the
// Source holds no complete record, io.EOF after the peer's close_notify,
// and any other error when the connection is broken. Like tls.Conn.Read it
// may return n > 0 together with an error. Read may also write (a TLS 1.3
// KeyUpdate reply) and stores session tickets that arrived after the
// handshake. It runs on the owning event loop.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		if len(c.early) == 0 {
			c.early = nil
		}
		return n, nil
	}
	n, err := c.tc.Read(p)
	if err != nil {
		if _, ok := err.(wouldBlock); ok {
			// The common case, without errors.As's reflection: crypto/tls
			// returns the adapter's temporary error as it is.
			return n, ErrWouldBlock
		}
		var ne net.Error
		//lint:ignore SA1019 Temporary is exactly what crypto/tls checks to keep a read error retryable.
		if errors.As(err, &ne) && ne.Temporary() {
			err = ErrWouldBlock
		}
	}
	return n, err
}

// ErrPeerClosed is what Poll returns when the peer ended the connection
// (close_notify or FIN) before it was detached.
var ErrPeerClosed = errors.New("tlsbridge: the peer closed the connection")

// Poll reads, without blocking, what the peer sent on a handshaken Conn
// that still owns its socket (not detached): post-handshake messages (TLS
// 1.3 session tickets, which are stored, or a KeyUpdate) and application
// data, which is kept for the first Reads after Detach. It returns nil
// while the connection is usable, ErrPeerClosed once the peer closed it,
// and any other error when it is broken. A connection kept idle (a
// pre-warmed upstream connection) is polled before it is used, so that one
// the peer closed meanwhile is not handed to a session. It runs on the
// goroutine that owns the Conn.
func (c *Conn) Poll() error {
	if c.a.raw == nil {
		return errors.New("tlsbridge: Poll on a detached connection")
	}
	c.a.nonblock = true
	defer func() { c.a.nonblock = false }()
	var buf [4096]byte
	for {
		n, err := c.tc.Read(buf[:])
		c.early = append(c.early, buf[:n]...)
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return ErrPeerClosed
		}
		var ne net.Error
		//lint:ignore SA1019 Temporary is exactly what crypto/tls checks to keep a read error retryable.
		if errors.As(err, &ne) && ne.Temporary() {
			return nil // nothing more to read now
		}
		return err
	}
}

// Write encrypts p into the Sink. It fails only when the connection is
// already broken. It runs on the owning event loop.
func (c *Conn) Write(p []byte) (int, error) { return c.tc.Write(p) }

// CloseWrite sends close_notify into the Sink; the socket stays open. It
// runs on the owning event loop.
func (c *Conn) CloseWrite() error { return c.tc.CloseWrite() }

// Close closes the raw socket of a Conn that was never detached (a failed
// or abandoned handshake). It runs on the worker that owns the Conn.
func (c *Conn) Close() error {
	if c.a.raw != nil {
		return c.a.raw.Close()
	}
	return nil
}

// adapter is the net.Conn under the tls.Conn.
type adapter struct {
	raw           net.Conn // the socket while handshaking; nil once detached
	local, remote net.Addr
	src           Source
	dst           Sink
	// nonblock: reads of raw do not wait (Poll).
	nonblock bool
}

func (a *adapter) Read(p []byte) (int, error) {
	if a.raw != nil {
		if a.nonblock {
			return readNow(a.raw, p)
		}
		return a.raw.Read(p)
	}
	if a.src == nil {
		return 0, io.EOF
	}
	n, _ := a.src.Read(p)
	if n == 0 {
		return 0, wouldBlock{}
	}
	return n, nil
}

// readNow reads what raw holds without waiting for more: wouldBlock when
// it holds nothing, io.EOF after the peer's FIN.
func readNow(raw net.Conn, p []byte) (int, error) {
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return 0, errors.New("tlsbridge: the socket cannot be read without blocking")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = syscall.Read(int(fd), p)
			if rerr != syscall.EINTR {
				return true // one try: never wait for readiness
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case rerr == syscall.EAGAIN:
		return 0, wouldBlock{}
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: raw.LocalAddr(), Addr: raw.RemoteAddr(), Err: rerr}
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func (a *adapter) Write(p []byte) (int, error) {
	if a.raw != nil {
		return a.raw.Write(p)
	}
	if a.dst == nil {
		return 0, net.ErrClosed
	}
	return a.dst.Write(p)
}

func (a *adapter) Close() error {
	if a.raw != nil {
		return a.raw.Close()
	}
	return nil
}

func (a *adapter) LocalAddr() net.Addr  { return a.local }
func (a *adapter) RemoteAddr() net.Addr { return a.remote }

// Deadlines apply to the handshake only; crypto/tls also sets one around
// close_notify, which must not fail in loop mode.
func (a *adapter) SetDeadline(t time.Time) error {
	if a.raw != nil {
		return a.raw.SetDeadline(t)
	}
	return nil
}

func (a *adapter) SetReadDeadline(t time.Time) error {
	if a.raw != nil {
		return a.raw.SetReadDeadline(t)
	}
	return nil
}

func (a *adapter) SetWriteDeadline(t time.Time) error {
	if a.raw != nil {
		return a.raw.SetWriteDeadline(t)
	}
	return nil
}
