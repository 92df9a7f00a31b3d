package engine

// Listening sockets as the engine uses them (the sockets and their accept
// loops are package listen's): a socket's binding to a server block, the
// sockets of a plan by key, and the hand-off of each accepted client to a
// loop, bare (EventLoop.Adopt) or through gnet's Enroll.

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/listen"
	"github.com/tlsrelay/tlsrelay/engine/proxyproto"
	"github.com/tlsrelay/tlsrelay/internal/syserr"
)

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

// listenSock is one listening socket of the engine (listen.Socket) with
// what the engine keeps for it: the binding its new clients get and the
// loop a reuseport copy feeds. It is the socket's listen.Handler: FD and
// Conn run on its accept goroutine.
type listenSock struct {
	e    *Engine
	sock *listen.Socket
	// lp is the loop a reuseport copy feeds; nil: the engine's loops in
	// turn. Set before the socket starts and by reloads.
	lp   atomic.Pointer[loop]
	bind atomic.Pointer[binding]
	// enrolling are the results of gnet enrollments not looked at yet;
	// used by the accept goroutine only.
	enrolling []<-chan gnet.RegisteredResult
}

var _ listen.Handler = (*listenSock)(nil)

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
	s, err := listen.Open(l, i, listen.Func(e.opts.Listen), e.log)
	if err != nil {
		return nil, err
	}
	return &listenSock{e: e, sock: s}, nil
}

// start begins accepting on the socket. Safe from any goroutine, once.
func (ls *listenSock) start() { go ls.sock.Serve(&ls.e.gate, ls) }

// close stops accepting (listen.Socket.Close). Safe from any goroutine,
// any number of times.
func (ls *listenSock) close() { ls.sock.Close() }

// drop closes a socket a reload removed (listen.Socket.Drop). Runs on the
// reloading goroutine.
func (ls *listenSock) drop() { ls.sock.Drop() }

// update applies a reloaded listen directive to a socket that stays
// (listen.Socket.Update). Runs on the reloading goroutine.
func (ls *listenSock) update(l conf.Listen) error { return ls.sock.Update(l) }

// FD takes a TCP client the socket accepted bare, under the socket's
// binding, and reports whether an enrolment failed for want of
// descriptors. Runs on the accept goroutine.
func (ls *listenSock) FD(fd int, remote net.Addr) (outOfFDs bool) {
	// The binding is read once per client: a reload between two
	// reads could turn PROXY-header reading on or off halfway.
	ls.e.handRaw(fd, remote, ls, ls.bind.Load())
	return ls.enrollFailed()
}

// Conn takes a client the socket accepted through net (a unix domain
// socket); as FD.
func (ls *listenSock) Conn(c net.Conn) (outOfFDs bool) {
	ls.e.hand(c, ls, ls.bind.Load())
	return ls.enrollFailed()
}

// pauseAccepting stops every listener from accepting for a while, after
// descriptors ran out (listen.Gate.Pause). Safe from any goroutine.
func (e *Engine) pauseAccepting() { e.gate.Pause() }

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
		a.local = ls.sock.Addr()
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
		e.log.Logf(errlog.LevelCrit, 0, "dup() failed (%s) while accepting a client: the client was closed", syserr.Paren(errno))
		return true
	}
	e.log.Logf(errlog.LevelAlert, 0, "adopting an accepted client failed: %v", err)
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
			case <-ls.sock.Done():
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

// adoptClient hands an accepted client's socket to its loop, which then
// opens its session (OnOpen with *accepted). On failure the socket is
// closed and the failure reported. Runs on the accept goroutine.
func (e *Engine) adoptClient(fd int, remote net.Addr, ls *listenSock, b *binding) {
	local, err := ls.sock.LocalAddr(fd)
	if err != nil {
		unix.Close(fd)
		e.enrollError(err)
		return
	}
	lp := e.loopFor(ls)
	a := &accepted{b: b, lp: lp}
	failed := func(err error) { e.enrollError(err) } // on the loop; gnet closed fd
	if err := lp.el.Adopt(gnet.NewContext(context.Background(), a), fd, local, remote, failed); err != nil {
		unix.Close(fd) // the engine is stopping
	}
}
