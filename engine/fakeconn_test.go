package engine

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// fakeConn is a gnet.Conn without a socket, for the session's unit tests:
// the test plays the peer (feeding input, taking output) and the event
// loop (delivering OnClose after Close, as gnet does on its next turn).
// Methods the session never calls are left to the embedded nil interface
// and panic if called.
type fakeConn struct {
	gnet.Conn
	name          string
	ctx           any
	local, remote net.Addr
	el            gnet.EventLoop

	in   []byte // input gnet has read from the socket
	sent []byte // output the kernel took
	// queued is output gnet holds (OutboundBuffered) while the peer does
	// not read: block queues every write; drain moves it to sent.
	queued []byte
	block  bool

	// failWrite makes the next Write fail as a socket error does in gnet:
	// the conn is closed on the spot and onClose runs inside Write.
	failWrite bool
	onClose   func(c gnet.Conn, err error)
	// duringClose, if set, runs inside the synchronous onClose of a failed
	// write, after it: what the session looks like while its write has
	// not yet returned.
	duringClose func()

	closeAsked bool // Close was called (gnet closes on the loop's next turn)
	// queuedAtClose is what gnet still held for the peer when Close was
	// first called: what a close would lose.
	queuedAtClose int
	closed        bool // OnClose was delivered
	writes        int
	dup           func() (int, error)
	// fd is the conn's stand-in descriptor: a number no real descriptor
	// has, which sessTest's sockWrite maps back to the conn.
	fd int
}

// kernelWrite is write(2) on the conn's socket, as the session's sides
// make it (through loop.sockWrite): the peer takes everything unless it
// blocks (nothing is taken, as EAGAIN); failWrite fails it as a reset
// peer does.
func (f *fakeConn) kernelWrite(p []byte) (int, error) {
	if f.closed {
		return 0, syscall.EBADF
	}
	f.writes++
	if f.failWrite {
		f.failWrite = false
		return 0, syscall.EPIPE
	}
	if f.block {
		return 0, nil
	}
	f.sent = append(f.sent, p...)
	return len(p), nil
}

func (f *fakeConn) Read(p []byte) (int, error) {
	n := copy(p, f.in)
	f.in = f.in[n:]
	return n, nil
}

func (f *fakeConn) Next(n int) ([]byte, error) {
	if n <= 0 || n > len(f.in) {
		n = len(f.in)
	}
	b := f.in[:n]
	f.in = f.in[n:]
	return b, nil
}

func (f *fakeConn) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(f.in) {
		n = len(f.in)
	}
	return f.in[:n], nil
}

func (f *fakeConn) Discard(n int) (int, error) {
	if n <= 0 || n > len(f.in) {
		n = len(f.in)
	}
	f.in = f.in[n:]
	return n, nil
}

func (f *fakeConn) InboundBuffered() int { return len(f.in) }

// Write behaves as gnet's: output goes to the kernel unless some is queued
// already (or the peer blocks); a socket error closes the conn before
// Write returns.
func (f *fakeConn) Write(p []byte) (int, error) {
	if f.closed {
		return 0, net.ErrClosed
	}
	f.writes++
	if f.failWrite {
		f.failWrite = false
		err := &net.OpError{Op: "write", Err: syscall.EPIPE}
		f.deliverClose(err)
		if f.duringClose != nil {
			f.duringClose()
		}
		return 0, err
	}
	if f.block || len(f.queued) > 0 {
		f.queued = append(f.queued, p...)
	} else {
		f.sent = append(f.sent, p...)
	}
	return len(p), nil
}

func (f *fakeConn) OutboundBuffered() int { return len(f.queued) }

// drain lets the peer read everything queued.
func (f *fakeConn) drain() {
	f.block = false
	f.sent = append(f.sent, f.queued...)
	f.queued = nil
}

// Close asks for the conn to be closed; gnet does it on the loop's next
// turn (fakeLoop.turn here).
func (f *fakeConn) Close() error {
	if !f.closeAsked {
		f.closeAsked = true
		f.queuedAtClose = len(f.queued)
	}
	return nil
}

// deliverClose is gnet closing the conn: OnClose runs while the input is
// still there to read, then the conn's buffers are gone.
func (f *fakeConn) deliverClose(err error) {
	if f.closed {
		return
	}
	f.closed = true
	if f.onClose != nil {
		f.onClose(f, err)
	}
	f.in, f.queued = nil, nil
}

func (f *fakeConn) Context() any              { return f.ctx }
func (f *fakeConn) SetContext(ctx any)        { f.ctx = ctx }
func (f *fakeConn) LocalAddr() net.Addr       { return f.local }
func (f *fakeConn) RemoteAddr() net.Addr      { return f.remote }
func (f *fakeConn) EventLoop() gnet.EventLoop { return f.el }

// Fd is not a socket: the session's shutdown(SHUT_WR) at a linger fails
// with EBADF, harmlessly; its writes reach kernelWrite.
func (f *fakeConn) Fd() int { return f.fd }

func (f *fakeConn) Dup() (int, error) {
	if f.dup == nil {
		return -1, errors.New("fakeConn: no descriptor")
	}
	return f.dup()
}

// fakeLoop is a gnet.EventLoop that records what the session hands it.
type fakeLoop struct {
	gnet.EventLoop
	enrolled []enrolled
	executed []gnet.Runnable
}

// enrolled is one Enroll call: the context the conn will carry and the
// socket.
type enrolled struct {
	ctx any
	nc  net.Conn
}

func (l *fakeLoop) Enroll(ctx context.Context, nc net.Conn) (<-chan gnet.RegisteredResult, error) {
	l.enrolled = append(l.enrolled, enrolled{ctx: gnet.FromContext(ctx), nc: nc})
	ch := make(chan gnet.RegisteredResult, 1)
	ch <- gnet.RegisteredResult{}
	return ch, nil
}

func (l *fakeLoop) Execute(_ context.Context, r gnet.Runnable) error {
	l.executed = append(l.executed, r)
	return nil
}

// socketPair returns a function that hands out duplicates of one end of a
// unix socket pair, standing in for Conn.Dup of a paused socket (resume
// turns it back into a net.Conn, which needs a socket). Both ends are
// closed when the test ends.
func socketPair(t *testing.T) func() (int, error) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	t.Cleanup(func() {
		unix.Close(fds[0])
		unix.Close(fds[1])
	})
	return func() (int, error) { return unix.Dup(fds[0]) }
}

// fakeAddr is a fixed TCP address.
func fakeAddr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}
