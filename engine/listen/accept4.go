package listen

// Accepting a TCP client without Go's netpoller knowing it.
// net.Listener.Accept registers every accepted socket with Go's netpoller
// (epoll_ctl), asks for its local address (getsockname) and sets
// TCP_NODELAY, and gnet's Enroll then duplicates the socket on a worker
// goroutine of its own, waits for the loop, and closes the original
// (epoll_ctl, close): five system calls and three goroutine hand-offs per
// client that carry nothing. Here the accept goroutine calls accept4 on
// the listening socket itself (Go's netpoller still says when it is
// readable) and hands the bare socket to its loop with EventLoop.Adopt,
// tlsrelay's addition to gnet (internal/gnet): the loop registers it as it
// is. TCP_NODELAY is set once on the listener, whose accepted sockets
// inherit it on Linux. (The hand-off to a loop is the engine's: Socket.Serve
// gives the bare socket to Handler.FD.)

import (
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawAcceptor accepts a TCP listener's clients as bare sockets. net's
// listener offers no way to wait for a client without accepting it
// (its RawConn's Read fails with EINVAL), so the acceptor keeps a
// duplicate of the listening socket as an *os.File, which Go's netpoller
// watches and whose RawConn's Read waits until the socket is readable.
type rawAcceptor struct {
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool
	// local is the listener's address when it names one IP (a client's
	// local address is then the listener's); nil for a wildcard address,
	// whose clients are asked (getsockname).
	local net.Addr
}

// newRawAcceptor returns the acceptor of a TCP listener, and sets
// TCP_NODELAY on it, which its accepted sockets inherit (binding.apply
// turns it off for a server with tcp_nodelay off); nil for any other kind
// of listener, or when the duplicate or the option fails (the listener
// is then accepted through net, which sets the option on each client).
// Runs on the goroutine that binds.
func newRawAcceptor(nl net.Listener) *rawAcceptor {
	tl, ok := nl.(*net.TCPListener)
	if !ok {
		return nil
	}
	// File duplicates the socket (close-on-exec, still non-blocking,
	// watched by the netpoller); Fd, which would make it blocking, is
	// never called.
	f, err := tl.File()
	if err != nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil
	}
	// The duplicate is the same socket: the option is the listener's.
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}); err != nil || serr != nil {
		f.Close()
		return nil
	}
	a := &rawAcceptor{f: f, rc: rc}
	if ta, ok := tl.Addr().(*net.TCPAddr); ok && !ta.IP.IsUnspecified() {
		a.local = ta
	}
	return a
}

// close closes the duplicate; an accept waiting on it returns
// net.ErrClosed. Safe from any goroutine.
func (a *rawAcceptor) close() {
	a.closed.Store(true)
	a.f.Close()
}

// accept takes the next client off the listener as a non-blocking,
// close-on-exec socket that only the caller knows of. The error is the
// bare errno of accept4 (EMFILE, ECONNABORTED, ...), or net.ErrClosed
// once the acceptor is closed. Runs on the accept goroutine.
func (a *rawAcceptor) accept() (fd int, remote net.Addr, err error) {
	var (
		sa   unix.Sockaddr
		aerr error
	)
	err = a.rc.Read(func(lfd uintptr) bool {
		fd, sa, aerr = unix.Accept4(int(lfd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return aerr != unix.EAGAIN
	})
	if err != nil {
		if a.closed.Load() {
			// os reports its own "use of closed file".
			err = net.ErrClosed
		}
		return -1, nil, err
	}
	if aerr != nil {
		return -1, nil, aerr
	}
	return fd, sockaddrTCP(sa), nil
}

// localAddr is the local address of an accepted client: the listener's,
// or the socket's own for a wildcard listener. Any goroutine.
func (a *rawAcceptor) localAddr(fd int) (net.Addr, error) {
	if a.local != nil {
		return a.local, nil
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, err
	}
	return sockaddrTCP(sa), nil
}

// sockaddrTCP converts an IPv4 or IPv6 socket address.
func sockaddrTCP(sa unix.Sockaddr) *net.TCPAddr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port}
	case *unix.SockaddrInet6:
		a := &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	}
	return &net.TCPAddr{}
}

// LocalAddr is the local address of a client the socket accepted bare
// (Handler.FD): the listener's, or the client socket's own for a wildcard
// address (getsockname). Any goroutine.
func (s *Socket) LocalAddr(fd int) (net.Addr, error) { return s.raw.localAddr(fd) }
