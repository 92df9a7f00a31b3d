package listen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/internal/syserr"
)

// acceptRetry is how long accepting pauses after the process ran out of
// descriptors (EMFILE, ENFILE): NGINX's accept_mutex_delay. Established
// sessions go on; accepting resumes once descriptors are free again.
const acceptRetry = 500 * time.Millisecond

// Socket is one listening socket the engine owns, and its accept loop.
// tlsrelay accepts on its own side and hands each client to a loop,
// rather than letting gnet own the listeners: so that quit and reload can
// close or add one socket alone, and so that running out of descriptors
// pauses accepting instead of ending the engine.
type Socket struct {
	// ln is a *net.TCPListener, or a *net.UnixListener for listen
	// unix:/path.
	ln net.Listener
	// raw accepts ln's clients as bare sockets (TCP); nil: ln.Accept.
	raw *rawAcceptor
	// log gets what the socket has to say (a stale file removed, a file
	// deleted, accept failures).
	log *errlog.Log
	// done is closed when the socket is closed; the accept loop
	// returns.
	done      chan struct{}
	closeOnce sync.Once
	addr      net.Addr
}

// Func supplies one listening socket for a listen directive; the
// engine's ListenFunc, which documents it. create binds one as the
// directive says.
type Func func(network, addr string, create func(network, addr string) (net.Listener, error)) (net.Listener, error)

// Open binds the i-th socket of the listen directive l (the i-th
// reuseport copy; 0 for the only one), through fn when it is not nil.
// log gets the socket's lines. Runs on the goroutine that starts or
// reloads.
func Open(l conf.Listen, i int, fn Func, log *errlog.Log) (*Socket, error) {
	create := func(network, addr string) (net.Listener, error) {
		if network == "unix" {
			removed, err := removeStaleSocket(addr)
			if err != nil {
				return nil, conf.Errorf(l.Pos, "%v", err)
			}
			if removed {
				log.Logf(errlog.LevelNotice, 0, "removed the stale socket %s: no process accepted on it", addr)
			}
			return Create(network, addr, l)
		}
		if j := strings.LastIndexByte(addr, '#'); j >= 0 {
			addr = addr[:j]
		}
		return Create(network, addr, l)
	}
	addr := l.Addr
	if path, ok := unixPath(addr); ok {
		// Go's and tableflip's form: network "unix", the bare path.
		addr = path
	}
	if i > 0 {
		addr += "#" + strconv.Itoa(i)
	}
	var nl net.Listener
	var err error
	if fn != nil {
		nl, err = fn(l.Network, addr, create)
	} else {
		nl, err = create(l.Network, addr)
	}
	if err != nil {
		return nil, err
	}
	switch nl.(type) {
	case *net.TCPListener:
	case *net.UnixListener:
		if l.Network != "unix" {
			nl.Close()
			return nil, conf.Errorf(l.Pos, "listen %s: a unix domain socket (%T) for a TCP address", l.Addr, nl)
		}
	default:
		nl.Close()
		return nil, conf.Errorf(l.Pos, "listen %s: not a TCP socket (%T)", l.Addr, nl)
	}
	return &Socket{ln: nl, raw: newRawAcceptor(nl), log: log, done: make(chan struct{}), addr: nl.Addr()}, nil
}

// Addr is the socket's bound address. Any goroutine.
func (s *Socket) Addr() net.Addr { return s.addr }

// Done is closed once the socket is closed. Any goroutine.
func (s *Socket) Done() <-chan struct{} { return s.done }

// Create binds and listens as the listen directive says: one
// socket, SO_REUSEPORT only with reuseport, the backlog= parameter
// (default 511), and the socket options that accepted clients inherit.
// Errors read like NGINX's: bind() to ADDR failed (98: Address already in
// use). Runs on the goroutine that starts or reloads.
func Create(network, addr string, l conf.Listen) (net.Listener, error) {
	lc := net.ListenConfig{
		// NGINX sets no keepalive unless so_keepalive says so; Go would
		// turn it on for every accepted conn.
		KeepAlive: -1,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = setListenOpts(int(fd), l)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	shown := addr
	if network == "unix" {
		shown = "unix:" + addr
	}
	nl, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return nil, conf.Errorf(l.Pos, "bind() to %s failed (%s)", shown, syserr.Paren(errno))
		}
		return nil, conf.Errorf(l.Pos, "listen %s: %v", shown, err)
	}
	if network == "unix" && !strings.HasPrefix(addr, "@") {
		// As NGINX: anyone may connect; the directory decides. (An
		// "@name" socket is in Linux's abstract namespace: no file.)
		if err := os.Chmod(addr, 0o666); err != nil {
			nl.Close()
			return nil, conf.Errorf(l.Pos, "chmod() \"%s\" failed: %v", addr, err)
		}
	}
	if err := relisten(nl, l.Backlog); err != nil {
		nl.Close()
		return nil, conf.Errorf(l.Pos, "listen() to %s, backlog %d failed: %v", shown, l.Backlog, err)
	}
	return nl, nil
}

// setListenOpts sets what must be set before bind(). Runs inside
// RawConn.Control.
func setListenOpts(fd int, l conf.Listen) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("setsockopt(SO_REUSEADDR): %w", err)
	}
	if l.ReusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fmt.Errorf("setsockopt(SO_REUSEPORT): %w", err)
		}
	}
	if strings.HasPrefix(l.Addr, "[") {
		v := 0
		if l.IPv6Only {
			v = 1
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v); err != nil {
			return fmt.Errorf("setsockopt(IPV6_V6ONLY): %w", err)
		}
	}
	return setLiveOpts(fd, l)
}

// setLiveOpts sets the listen options that may change on a live socket
// (a reload): buffer sizes, deferred accept, TCP Fast Open.
func setLiveOpts(fd int, l conf.Listen) error {
	if l.Rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, int(l.Rcvbuf)); err != nil {
			return fmt.Errorf("setsockopt(SO_RCVBUF, %d): %w", l.Rcvbuf, err)
		}
	}
	if l.Sndbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, int(l.Sndbuf)); err != nil {
			return fmt.Errorf("setsockopt(SO_SNDBUF, %d): %w", l.Sndbuf, err)
		}
	}
	if l.Deferred {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 1); err != nil {
			return fmt.Errorf("setsockopt(TCP_DEFER_ACCEPT): %w", err)
		}
	}
	if l.FastOpen > 0 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_FASTOPEN, l.FastOpen); err != nil {
			return fmt.Errorf("setsockopt(TCP_FASTOPEN, %d): %w", l.FastOpen, err)
		}
	}
	return nil
}

// relisten calls listen() again with the directive's backlog: Go listens
// with the system's maximum, Linux lets a listening socket change it.
func relisten(nl net.Listener, backlog int) error {
	sc, ok := nl.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	if backlog <= 0 {
		backlog = 511
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = unix.Listen(int(fd), backlog) }); err != nil {
		return err
	}
	return lerr
}

// Update applies a reloaded listen directive to a socket that stays:
// the backlog and the options that may change live. The reuseport copies
// and the address are the socket's identity (the engine's key for it).
// Runs on the reloading goroutine.
func (s *Socket) Update(l conf.Listen) error {
	if err := relisten(s.ln, l.Backlog); err != nil {
		return conf.Errorf(l.Pos, "listen() to %s, backlog %d failed: %v", l.Addr, l.Backlog, err)
	}
	sc, ok := s.ln.(syscall.Conn)
	if !ok {
		return conf.Errorf(l.Pos, "listen %s: %T has no descriptor", l.Addr, s.ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return conf.Errorf(l.Pos, "listen %s: %v", l.Addr, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = setLiveOpts(int(fd), l) }); err != nil {
		serr = err
	}
	if serr != nil {
		return conf.Errorf(l.Pos, "listen %s: %v", l.Addr, serr)
	}
	return nil
}

// Gate is what the accept loops of one engine share: the pause after
// descriptors ran out, the check near the descriptor limit, and where
// failures are counted. Set Held and Failed before the first Serve, and
// call Measure once, before the sockets accept.
type Gate struct {
	// Held returns the descriptors the clients hold now (the engine's:
	// two per open session, client and upstream); nil: no check near
	// the limit.
	Held func() int64
	// Failed counts an accept that failed (nil: not counted).
	Failed func()

	// until is the time (UnixNano) before which the sockets do not
	// accept: descriptors ran out.
	until atomic.Int64
	// base and limit are the descriptors open at boot and the soft
	// RLIMIT_NOFILE (0: not known, no check); see tight.
	base, limit int64
}

// Handler takes the clients a socket accepts. Its methods run on the
// socket's accept goroutine, one client at a time; each reports whether
// handing the client over ran out of descriptors, and the sockets then
// pause as for EMFILE at accept (Gate.Pause).
type Handler interface {
	// FD takes a TCP client accepted bare (accept4): a non-blocking,
	// close-on-exec socket that only the handler knows of.
	FD(fd int, remote net.Addr) (outOfFDs bool)
	// Conn takes a client accepted through net (a unix domain socket).
	Conn(c net.Conn) (outOfFDs bool)
}

// Serve accepts clients until the socket is closed and hands each to h,
// under g. It is the socket's accept goroutine: run it with go, once.
func (s *Socket) Serve(g *Gate, h Handler) {
	var delay time.Duration
	for {
		// Descriptors ran out elsewhere (an upstream socket or a dup):
		// let the sessions under way finish before taking more clients;
		// meanwhile the next ones wait in the backlog.
		if d := time.Duration(g.until.Load() - time.Now().UnixNano()); d > 0 {
			select {
			case <-s.done:
				return
			case <-time.After(d):
			}
		}
		// Near RLIMIT_NOFILE, wait for sessions to end rather than
		// accept a client that would then fail for want of a descriptor
		// (its dup, its upstream socket): the next clients wait in the
		// backlog, as NGINX's do when accept4() fails.
		for g.tight() {
			select {
			case <-s.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		var (
			c      net.Conn
			fd     = -1
			remote net.Addr
			err    error
		)
		if s.raw != nil {
			fd, remote, err = s.raw.accept()
		} else {
			c, err = s.ln.Accept()
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var errno syscall.Errno
			errors.As(err, &errno)
			wait := acceptRetry
			switch errno {
			case unix.EMFILE, unix.ENFILE:
				g.failed()
				s.log.Logf(errlog.LevelCrit, 0, "accept4() failed (%s)", syserr.Paren(errno))
			case unix.ECONNABORTED, unix.EINTR, unix.EAGAIN:
				continue
			default:
				g.failed()
				// Back off as net/http does: 5 ms doubling to 1 s.
				if delay == 0 {
					delay = 5 * time.Millisecond
				} else if delay *= 2; delay > time.Second {
					delay = time.Second
				}
				wait = delay
				s.log.Logf(errlog.LevelAlert, 0, "accept4() failed: %v", err)
			}
			select {
			case <-s.done:
				return
			case <-time.After(wait):
			}
			continue
		}
		delay = 0
		var outOfFDs bool
		if fd >= 0 {
			outOfFDs = h.FD(fd, remote)
		} else {
			outOfFDs = h.Conn(c)
		}
		if outOfFDs {
			g.Pause()
		}
	}
}

// fdReserve is the descriptors a new client may need at once: its socket
// (and gnet's dup of it for a unix or PROXY-protocol client), the upstream
// socket and its dup, and slack for what else is opening (dials in
// flight, a reload).
const fdReserve = 16

// Measure records the descriptors open before any client (listeners,
// logs, pollers) and the soft RLIMIT_NOFILE, for the check near the limit.
// Runs once, on the goroutine that starts the sockets, before they accept.
func (g *Gate) Measure() {
	lim := NofileLimit()
	if lim == 0 || lim > 1<<30 {
		return
	}
	n := OpenFDs()
	if n < 0 {
		return
	}
	g.base, g.limit = int64(n+1), int64(lim) // as before: the reading descriptor counted
}

// NofileLimit is the process's descriptor limit (RLIMIT_NOFILE's soft
// limit; Go raises it to the hard limit at start); 0 when it is unlimited
// or cannot be read. Safe from any goroutine.
func NofileLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return 0
	}
	return rl.Cur
}

// OpenFDs counts the process's open descriptors (/proc/self/fd, less the
// one reading it); -1 when it cannot. Safe from any goroutine.
func OpenFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1
}

// tight reports whether one more client would bring the process near
// its descriptor limit. Safe from any goroutine.
func (g *Gate) tight() bool {
	return g.limit > 0 && g.Held != nil && g.base+g.Held()+fdReserve > g.limit
}

// Pause stops every socket of the gate from accepting for 500 ms
// (acceptRetry), after descriptors ran out (a socket already waiting in accept takes one
// more client first). Safe from any goroutine.
func (g *Gate) Pause() {
	g.until.Store(time.Now().Add(acceptRetry).UnixNano())
}

// failed counts a failed accept.
func (g *Gate) failed() {
	if g.Failed != nil {
		g.Failed()
	}
}

// Close stops accepting: new connections to the address are refused (once
// no socket of the address is left). Established sessions are not
// touched. Safe from any goroutine, any number of times.
func (s *Socket) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.ln.Close()
		if s.raw != nil {
			s.raw.close()
		}
	})
}

// removeStaleSocket removes the socket file at path when no process
// accepts on it (connect() is refused): what a process that was killed
// left behind. Anything else at the path (a live socket, a regular file)
// is left for bind() to fail on. It reports whether it removed a file.
func removeStaleSocket(path string) (bool, error) {
	if strings.HasPrefix(path, "@") {
		return false, nil // abstract namespace: no file
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return false, nil
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return false, nil
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return false, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("removing the stale socket %s: %w", path, err)
	}
	return true, nil
}

// unixPath returns the path of a "unix:/path" listen address.
func unixPath(addr string) (string, bool) { return strings.CutPrefix(addr, "unix:") }

// Drop closes a socket that a reload removed from the configuration and,
// for a unix domain socket, deletes its file with NGINX's warning
// ("deleting socket PATH"). Runs on the reloading goroutine.
func (s *Socket) Drop() {
	ul, ok := s.ln.(*net.UnixListener)
	if !ok {
		s.Close()
		return
	}
	path := ul.Addr().String()
	ul.SetUnlinkOnClose(false)
	s.Close()
	if strings.HasPrefix(path, "@") {
		return // abstract namespace: no file
	}
	s.log.Logf(errlog.LevelWarn, 0, "deleting socket %s", path)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Logf(errlog.LevelEmerg, 0, "unlink() %s failed (%s)", path, syserr.Paren(err))
	}
}
