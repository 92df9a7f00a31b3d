package listen

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRawAcceptor: a client accepted without net has the addresses a
// net.Conn would have had (from the listener or, for a wildcard listener,
// from getsockname), TCP_NODELAY inherited from the listener, and no
// registration with Go's netpoller; closing the acceptor ends a waiting
// accept with net.ErrClosed.
func TestRawAcceptor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a := newRawAcceptor(ln)
	if a == nil {
		t.Fatal("no acceptor for a TCP listener")
	}
	for _, wildcard := range []bool{false, true} {
		if wildcard {
			a.local = nil // as for 0.0.0.0: ask the socket
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fd, remote, err := a.accept()
		if err != nil {
			t.Fatal(err)
		}
		local, err := a.localAddr(fd)
		if err != nil {
			t.Fatal(err)
		}
		if remote.String() != c.LocalAddr().String() || local.String() != c.RemoteAddr().String() {
			t.Errorf("wildcard %v: accepted %v -> %v, the client is %v -> %v", wildcard, remote, local, c.LocalAddr(), c.RemoteAddr())
		}
		if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
			t.Errorf("TCP_NODELAY on the accepted socket = %d, %v; want on", v, err)
		}
		if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Errorf("accepted socket flags %#x, %v: want O_NONBLOCK", fl, err)
		}
		unix.Close(fd)
		c.Close()
	}
	if newRawAcceptor(&net.UnixListener{}) != nil {
		t.Error("an acceptor for a unix listener")
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := a.accept()
		done <- err
	}()
	a.close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("accept after close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("closing the acceptor did not end its accept")
	}
}
