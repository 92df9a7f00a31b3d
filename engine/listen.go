package engine

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

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/proxyproto"
	"github.com/tlsrelay/tlsrelay/internal/syserr"
)

// acceptRetry is how long accepting pauses after the process ran out of
// descriptors (EMFILE, ENFILE): NGINX's accept_mutex_delay. Established
// sessions go on; accepting resumes once descriptors are free again.
const acceptRetry = 500 * time.Millisecond

// binding is what a listening socket's new clients get: the server block
// and the listen directive's per-connection options. A reload swaps it
// atomically; a client keeps the binding it was accepted under.
type binding struct {
	srv  *server
	opts conf.Listen
	// setOpts: some option needs a setsockopt per accepted client.
	setOpts bool
	// unix: a unix domain socket, whose clients take no TCP option.
	unix bool
}

func newBinding(srv *server, opts conf.Listen) *binding {
	b := &binding{srv: srv, opts: opts}
	b.setOpts = opts.KeepAlive.Mode == conf.KeepAliveOn || opts.KeepAlive.Mode == conf.KeepAliveCustom || opts.Rcvbuf > 0 || opts.Sndbuf > 0 || !srv.conf.Core.TCPNoDelay
	b.unix = opts.Network == "unix"
	return b
}

// apply sets the listen directive's per-connection options on an accepted
// client. Runs on the client's loop.
func (b *binding) apply(c gnet.Conn) {
	o := &b.opts
	switch o.KeepAlive.Mode {
	case conf.KeepAliveOn:
		c.SetKeepAlive(true, 0, 0, 0)
	case conf.KeepAliveCustom:
		c.SetKeepAlive(true, o.KeepAlive.Idle, o.KeepAlive.Intvl, o.KeepAlive.Cnt)
	}
	if o.Rcvbuf > 0 {
		c.SetReadBuffer(int(o.Rcvbuf))
	}
	if o.Sndbuf > 0 {
		c.SetWriteBuffer(int(o.Sndbuf))
	}
	if !b.srv.conf.Core.TCPNoDelay && !b.unix {
		c.SetNoDelay(false)
	}
}

// listenSock is one listening socket the engine owns, and its accept
// goroutine. tlsrelay accepts on its own side and enrolls each client into
// a loop, rather than letting gnet own the listeners: so that quit and
// reload can close or add one socket alone, and so that running out of
// descriptors pauses accepting instead of ending the engine.
type listenSock struct {
	e *Engine
	// key identifies the socket across reloads: network, address, and
	// the copy's index for reuseport.
	key string
	// ln is a *net.TCPListener, or a *net.UnixListener for listen
	// unix:/path.
	ln net.Listener
	// raw accepts ln's clients as bare sockets (TCP); nil: ln.Accept.
	raw *rawAcceptor
	// lp is the loop a reuseport copy feeds; nil: the engine's loops in
	// turn. Set before the socket starts and by reloads.
	lp   atomic.Pointer[loop]
	bind atomic.Pointer[binding]
	// done is closed when the socket is closed; the accept goroutine
	// returns.
	done      chan struct{}
	closeOnce sync.Once
	addr      net.Addr
	// enrolling are the results of gnet enrollments not looked at yet;
	// used by the accept goroutine only.
	enrolling []<-chan gnet.RegisteredResult
}

// accepted is the gnet context of a client conn being enrolled, with
// its PROXY header when the listener expects one.
type accepted struct {
	b  *binding
	lp *loop
	pp *proxyproto.Info
	// local is the listener's address for a unix domain client, whose
	// gnet conn names its local end after the peer ("@.12").
	local net.Addr
}

// listenKey names the i-th socket of a listen directive.
func listenKey(l conf.Listen, i int) string {
	k := l.Network + " " + l.Addr
	if i > 0 {
		k += "#" + strconv.Itoa(i)
	}
	return k
}

// openListeners binds the sockets of every listen directive of p that is
// not in keep (which maps keys to sockets already bound). It returns the
// new sockets, and on error closes them. n is the number of loops (the
// reuseport copies). Runs on the goroutine that starts or reloads.
func (e *Engine) openListeners(p *plan, keep map[string]*listenSock, n int) (map[string]*listenSock, error) {
	out := map[string]*listenSock{}
	fail := func(err error) (map[string]*listenSock, error) {
		for key, ls := range out {
			if keep[key] == nil {
				ls.close()
			}
		}
		return nil, err
	}
	for _, s := range p.servers {
		for _, l := range s.listenOpts {
			copies := 1
			if l.ReusePort {
				copies = n
			}
			for i := 0; i < copies; i++ {
				key := listenKey(l, i)
				if _, dup := out[key]; dup {
					return fail(conf.Errorf(l.Pos, "duplicate listen %s", l.Addr))
				}
				if old := keep[key]; old != nil {
					if err := old.update(l); err != nil {
						return fail(err)
					}
					out[key] = old
					continue
				}
				ls, err := e.bindListener(l, i)
				if err != nil {
					return fail(err)
				}
				out[key] = ls
			}
		}
	}
	return out, nil
}

// bindListener binds the i-th socket of the listen directive l, through
// Options.Listen when set.
func (e *Engine) bindListener(l conf.Listen, i int) (*listenSock, error) {
	create := func(network, addr string) (net.Listener, error) {
		if network == "unix" {
			removed, err := removeStaleSocket(addr)
			if err != nil {
				return nil, conf.Errorf(l.Pos, "%v", err)
			}
			if removed {
				e.log.Logf(LevelNotice, 0, "removed the stale socket %s: no process accepted on it", addr)
			}
			return createListener(network, addr, l)
		}
		if j := strings.LastIndexByte(addr, '#'); j >= 0 {
			addr = addr[:j]
		}
		return createListener(network, addr, l)
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
	if e.opts.Listen != nil {
		nl, err = e.opts.Listen(l.Network, addr, create)
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
	return &listenSock{e: e, key: listenKey(l, i), ln: nl, raw: newRawAcceptor(nl), done: make(chan struct{}), addr: nl.Addr()}, nil
}

// createListener binds and listens as the listen directive says: one
// socket, SO_REUSEPORT only with reuseport, the backlog= parameter
// (default 511), and the socket options that accepted clients inherit.
// Errors read like NGINX's: bind() to ADDR failed (98: Address already in
// use).
func createListener(network, addr string, l conf.Listen) (net.Listener, error) {
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

// update applies a reloaded listen directive to a socket that stays:
// the backlog and the options that may change live. The reuseport copies
// and the address are the socket's identity (they are in its key).
func (ls *listenSock) update(l conf.Listen) error {
	if err := relisten(ls.ln, l.Backlog); err != nil {
		return conf.Errorf(l.Pos, "listen() to %s, backlog %d failed: %v", l.Addr, l.Backlog, err)
	}
	sc, ok := ls.ln.(syscall.Conn)
	if !ok {
		return conf.Errorf(l.Pos, "listen %s: %T has no descriptor", l.Addr, ls.ln)
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

// serve accepts clients until the socket is closed and hands each to a
// loop. It is the socket's accept goroutine.
func (ls *listenSock) serve() {
	e := ls.e
	var delay time.Duration
	for {
		// Descriptors ran out elsewhere (an upstream socket or a dup):
		// let the sessions under way finish before taking more clients;
		// meanwhile the next ones wait in the backlog.
		if d := time.Duration(e.acceptPause.Load() - time.Now().UnixNano()); d > 0 {
			select {
			case <-ls.done:
				return
			case <-time.After(d):
			}
		}
		// Near RLIMIT_NOFILE, wait for sessions to end rather than
		// accept a client that would then fail for want of a descriptor
		// (its dup, its upstream socket): the next clients wait in the
		// backlog, as NGINX's do when accept4() fails.
		for e.fdsTight() {
			select {
			case <-ls.done:
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
		if ls.raw != nil {
			fd, remote, err = ls.raw.accept()
		} else {
			c, err = ls.ln.Accept()
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
				e.m.AcceptFailed()
				e.log.Logf(LevelCrit, 0, "accept4() failed (%s)", syserr.Paren(errno))
			case unix.ECONNABORTED, unix.EINTR, unix.EAGAIN:
				continue
			default:
				e.m.AcceptFailed()
				// Back off as net/http does: 5 ms doubling to 1 s.
				if delay == 0 {
					delay = 5 * time.Millisecond
				} else if delay *= 2; delay > time.Second {
					delay = time.Second
				}
				wait = delay
				e.log.Logf(LevelAlert, 0, "accept4() failed: %v", err)
			}
			select {
			case <-ls.done:
				return
			case <-time.After(wait):
			}
			continue
		}
		delay = 0
		// The binding is read once per client: a reload between two
		// reads could turn PROXY-header reading on or off halfway.
		b := ls.bind.Load()
		if fd >= 0 {
			e.handRaw(fd, remote, ls, b)
		} else {
			e.hand(c, ls, b)
		}
		if ls.enrollFailed() {
			e.pauseAccepting()
		}
	}
}

// fdReserve is the descriptors a new client may need at once: its socket
// (and gnet's dup of it for a unix or PROXY-protocol client), the upstream
// socket and its dup, and slack for what else is opening (dials in
// flight, a reload).
const fdReserve = 16

// measureFDs records the descriptors open before any client (listeners,
// logs, pollers) and the soft RLIMIT_NOFILE, for fdsTight. Runs once, on
// the boot goroutine, before the listeners accept.
func (e *Engine) measureFDs() {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	e.fdBase, e.fdLimit = int64(len(ents)), int64(lim.Cur)
}

// fdsTight reports whether one more client would bring the process near
// its descriptor limit: each open session holds two (client, upstream).
// Safe from any goroutine.
func (e *Engine) fdsTight() bool {
	return e.fdLimit > 0 && e.fdBase+2*e.m.Active()+fdReserve > e.fdLimit
}

// pauseAccepting stops every listener from accepting for acceptRetry,
// after descriptors ran out. Safe from any goroutine.
func (e *Engine) pauseAccepting() {
	e.acceptPause.Store(time.Now().Add(acceptRetry).UnixNano())
}

// outOfDescriptors reports whether err says the process ran out of
// descriptors.
func outOfDescriptors(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE)
}

// handRaw hands a client accepted by rawAcceptor to its loop under the
// binding b; a listener that expects a PROXY header has it read on a
// goroutine of its own, with net's deadlines, so the socket becomes a
// net.Conn first. Runs on an accept goroutine.
func (e *Engine) handRaw(fd int, remote net.Addr, ls *listenSock, b *binding) {
	if !b.opts.ProxyProtocol {
		e.adoptClient(fd, remote, ls, b)
		return
	}
	f := os.NewFile(uintptr(fd), "client")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		e.enrollError(err)
		return
	}
	go e.handProxied(c, ls, b)
}

// hand enrolls an accepted client into a loop under the binding b, or
// has its PROXY header read first. Runs on an accept goroutine.
func (e *Engine) hand(c net.Conn, ls *listenSock, b *binding) {
	if b.opts.ProxyProtocol {
		go e.handProxied(c, ls, b)
		return
	}
	if ch := e.enroll(c, ls, b, nil); ch != nil {
		ls.enrolling = append(ls.enrolling, ch)
	}
}

// enroll hands an accepted client, with what its PROXY header said (nil:
// none), to its loop (loopFor). It returns gnet's result channel, nil
// when the engine is stopping (the client is closed then). Runs on an
// accept or header goroutine.
func (e *Engine) enroll(c net.Conn, ls *listenSock, b *binding, pp *proxyproto.Info) <-chan gnet.RegisteredResult {
	lp := e.loopFor(ls)
	a := &accepted{b: b, lp: lp, pp: pp}
	if _, ok := c.(*net.UnixConn); ok {
		a.local = ls.addr
	}
	ch, err := lp.el.Enroll(gnet.NewContext(context.Background(), a), c)
	if err != nil {
		c.Close()
		return nil
	}
	return ch
}

// loopFor is the loop a new client of ls goes to: the socket's own with
// reuseport, else the engine's loops in turn. Any goroutine.
func (e *Engine) loopFor(ls *listenSock) *loop {
	if lp := ls.lp.Load(); lp != nil {
		return lp
	}
	return e.loops[int(e.nextLoop.Add(1)-1)%len(e.loops)]
}

// enrollError reports a failed enrolment of an accepted client (the
// client is lost: it was accepted) and whether it failed for want of
// descriptors, when the caller pauses accepting. Any goroutine.
func (e *Engine) enrollError(err error) (outOfFDs bool) {
	var errno syscall.Errno
	switch {
	case err == nil, errors.Is(err, net.ErrClosed):
		return false
	case outOfDescriptors(err) && errors.As(err, &errno):
		e.m.AcceptFailed()
		e.log.Logf(LevelCrit, 0, "dup() failed (%s) while accepting a client: the client was closed", syserr.Paren(errno))
		return true
	}
	e.log.Logf(LevelAlert, 0, "adopting an accepted client failed: %v", err)
	return false
}

// enrollFailed looks at the enrollments handed to gnet since the last
// look, without waiting for any: gnet duplicates each accepted socket, and
// the dup fails when descriptors run out. Such a client is lost (it was
// accepted); it is logged and counted, and the caller pauses accepting as
// for EMFILE at accept, so that the next clients wait in the backlog as
// NGINX's do rather than being accepted and dropped. When many are
// outstanding it waits for the oldest, which bounds the list. Runs on the
// accept goroutine.
func (ls *listenSock) enrollFailed() bool {
	e := ls.e
	out := ls.enrolling[:0]
	failed := false
	for i, ch := range ls.enrolling {
		var res gnet.RegisteredResult
		var done bool
		if i == 0 && len(ls.enrolling) >= maxEnrolling {
			select {
			case res, done = <-ch:
				done = true
			case <-ls.done:
				return false
			}
		} else {
			select {
			case res, done = <-ch:
				done = true
			default:
			}
		}
		if !done {
			out = append(out, ch)
			continue
		}
		if e.enrollError(res.Err) {
			failed = true
		}
	}
	clear(ls.enrolling[len(out):])
	ls.enrolling = out
	return failed
}

// maxEnrolling bounds the enrollments an accept goroutine keeps track of.
const maxEnrolling = 64

// start begins accepting on the socket. Safe from any goroutine, once.
func (ls *listenSock) start() { go ls.serve() }

// close stops accepting: new connections to the address are refused (once
// no socket of the address is left). Established sessions are not
// touched. Safe from any goroutine, any number of times.
func (ls *listenSock) close() {
	ls.closeOnce.Do(func() {
		close(ls.done)
		ls.ln.Close()
		if ls.raw != nil {
			ls.raw.close()
		}
	})
}
