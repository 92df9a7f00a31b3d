package engine

import (
	"errors"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"
)

// sideState is where one socket of a session stands.
type sideState uint8

const (
	// sideNone: no socket yet (the upstream while connecting).
	sideNone sideState = iota
	// sideAttached: a gnet conn on the session's loop owns the socket.
	sideAttached
	// sideDetaching: the gnet conn is being closed to pause reading; the
	// session holds a duplicate descriptor that keeps the socket open.
	sideDetaching
	// sideDetached: no gnet conn; the kernel's buffers fill and TCP flow
	// control pushes back on the peer.
	sideDetached
	// sideEnrolling: the duplicate is being re-adopted by the loop.
	sideEnrolling
	// sideHalf (proxy_half_close on): the peer shut its write side, so
	// gnet closed the conn; the session holds a duplicate descriptor
	// and writes the other direction's bytes through it until that
	// direction ends too.
	sideHalf
	// sideClosed: the socket is gone.
	sideClosed
)

// side is one socket of a session with the bytes the session holds for
// it. All of it runs on the session's loop.
//
// Read serves bytes taken off the socket (spilled first, then gnet's
// inbound buffer); Write hands bytes to gnet or, while the socket is not
// attached, keeps them until it is (and drops them once it is closed).
// A side is the pump's plaintext source and destination (direction.from,
// direction.to) for the client and for a plaintext upstream, and the
// tlsbridge Source and Sink under the upstream's TLS conn.
type side struct {
	c     gnet.Conn
	state sideState
	fd    int // the duplicate held while detached; -1 otherwise
	// stalled: the other socket is congested, so this one's input is not
	// consumed (it stays in gnet, or the socket is paused).
	stalled bool
	// rateLimited: stalled by proxy_upload_rate/proxy_download_rate until
	// the session's rate timer fires.
	rateLimited bool
	// in holds input taken off gnet but not yet consumed (at a pause, or
	// at close); inOff is how much of it was consumed.
	in    *bytebufferpool.ByteBuffer
	inOff int
	// out holds output written while the socket was not attached.
	out *bytebufferpool.ByteBuffer
	// cork, while set (a pump encrypting into this socket), collects the
	// TLS records written, so that they reach gnet, and the kernel, in one
	// write instead of one per record. It points at the loop's buffer.
	cork *[]byte
	// Writes go to the socket with write(2) and what it does not take
	// waits in out, polled: gnet never holds output for a session's
	// socket. So a socket can be paused (its gnet conn closed, which
	// would drop gnet's output) whatever is queued toward it, and be
	// written to while paused or half-closed, through the duplicate.
	// sess is the session to poll; failed: a write failed (the peer
	// reset the socket), later ones are dropped.
	failed bool
	sess   *session
	// shut is where the socket's write side stands: a shut is wanted
	// once the other peer ended (proxy_half_close on) and done once
	// nothing is owed to the socket (tryShut); the linger shuts the
	// upstream's too.
	shut shutState
}

// Read implements tlsbridge.Source. It never blocks; 0 means empty.
func (sd *side) Read(p []byte) (int, error) {
	if sd.in != nil && sd.inOff < len(sd.in.B) {
		n := copy(p, sd.in.B[sd.inOff:])
		sd.inOff += n
		if sd.inOff == len(sd.in.B) {
			sd.in.Reset()
			sd.inOff = 0
		}
		return n, nil
	}
	if sd.state == sideAttached && sd.c != nil {
		n, _ := sd.c.Read(p)
		return n, nil
	}
	return 0, nil
}

// buffered returns how many input bytes are waiting to be consumed.
func (sd *side) buffered() int {
	n := 0
	if sd.in != nil {
		n = len(sd.in.B) - sd.inOff
	}
	if sd.state == sideAttached && sd.c != nil {
		n += sd.c.InboundBuffered()
	}
	return n
}

// Write implements tlsbridge.Sink: it accepts every byte (see
// writeDirect). A socket error marks the side failed and tells the session
// (directFailed); later writes are dropped.
func (sd *side) Write(p []byte) (int, error) {
	if sd.cork != nil {
		*sd.cork = append(*sd.cork, p...)
		return len(p), nil
	}
	sd.writeDirect(p)
	return len(p), nil
}

// pending returns the output bytes not yet handed to the kernel.
func (sd *side) pending() int {
	if sd.out == nil {
		return 0
	}
	return len(sd.out.B)
}

// spill moves everything gnet holds for c into sd.in: before a pause or at
// close, when gnet is about to drop it.
func (sd *side) spill(c gnet.Conn) {
	n := c.InboundBuffered()
	if n == 0 {
		return
	}
	if sd.in == nil {
		sd.in = bytebufferpool.Get()
	}
	b := sd.in.B
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		b = nb
	}
	m, _ := c.Read(b[len(b) : len(b)+n])
	sd.in.B = b[:len(b)+m]
}

// wfd is the descriptor a side writes to: gnet's while attached, the
// session's duplicate while paused or half-closed; -1: none (connecting,
// being re-adopted, closed).
func (sd *side) wfd() int {
	switch sd.state {
	case sideAttached:
		if sd.c != nil {
			return sd.c.Fd()
		}
	case sideDetaching, sideDetached, sideHalf:
		return sd.fd
	}
	return -1
}

// writeDirect writes p to the side's socket, keeping in out what the
// socket does not take now (behind what is already there, and all of it
// while there is no socket yet) and asking the session to poll until it
// has gone. Runs on the loop.
func (sd *side) writeDirect(p []byte) {
	if sd.failed || sd.state == sideClosed {
		return
	}
	if sd.out == nil || len(sd.out.B) == 0 {
		if fd := sd.wfd(); fd >= 0 {
			n, err := sd.write(fd, p)
			if err != nil {
				sd.writeFailed(err)
				return
			}
			p = p[n:]
		}
	}
	if len(p) == 0 {
		return
	}
	if sd.out == nil {
		sd.out = bytebufferpool.Get()
	}
	sd.out.Write(p)
	if sd.sess != nil {
		sd.sess.armPoll()
	}
}

// flushDirect writes what out holds to the side's socket. It reports
// whether anything is left and how much it wrote. Runs on the loop.
func (sd *side) flushDirect() (left bool, wrote int) {
	if sd.out == nil || len(sd.out.B) == 0 {
		return false, 0
	}
	if sd.failed || sd.state == sideClosed {
		sd.out.Reset()
		return false, 0
	}
	fd := sd.wfd()
	if fd < 0 {
		return true, 0 // connecting or re-adopted: written once attached
	}
	n, err := sd.write(fd, sd.out.B)
	if err != nil {
		sd.out.Reset()
		sd.writeFailed(err)
		return false, n
	}
	rest := copy(sd.out.B, sd.out.B[n:])
	sd.out.B = sd.out.B[:rest]
	return rest > 0, n
}

// write writes p to fd with writeAll, or with the loop's stand-in for the
// kernel in the state machine's tests.
func (sd *side) write(fd int, p []byte) (int, error) {
	if sd.sess != nil && sd.sess.lp.sockWrite != nil {
		return sd.sess.lp.sockWrite(fd, p)
	}
	return writeAll(fd, p)
}

// writeAll writes p to the non-blocking socket fd until it is written or
// the socket is full (not an error: n < len(p)).
func writeAll(fd int, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(fd, p[n:])
		if m > 0 {
			n += m
		}
		switch {
		case err == nil:
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return n, nil
		default:
			return n, err
		}
	}
	return n, nil
}

// writeFailed ends a side whose write failed (the peer reset it):
// nothing more is written, and the session ends once the step does.
func (sd *side) writeFailed(err error) {
	sd.failed = true
	if sd.out != nil {
		sd.out.Reset()
	}
	if sd.sess != nil {
		sd.sess.directFailed(sd, err)
	}
}

// reset makes the socket's close a reset (SO_LINGER 0): an aborted
// session's peer must be able to tell that its stream did not end. Runs on
// the loop, before the close.
func (sd *side) reset() {
	if fd := sd.wfd(); fd >= 0 {
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
}

// release returns the side's buffers to the pool.
func (sd *side) release() {
	if sd.in != nil {
		bytebufferpool.Put(sd.in)
		sd.in = nil
		sd.inOff = 0
	}
	if sd.out != nil {
		bytebufferpool.Put(sd.out)
		sd.out = nil
	}
}

// corkOn starts collecting writes in buf (the loop's; empty).
func (sd *side) corkOn(buf *[]byte) { sd.cork = buf }

// uncork writes what was collected in one write and empties the buffer
// (gnet copies what the socket does not take, so it may be reused).
func (sd *side) uncork() {
	buf := sd.cork
	sd.cork = nil
	if len(*buf) > 0 {
		sd.Write(*buf)
	}
	*buf = (*buf)[:0]
}
