package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/pool"
)

// tick is the resolution of the per-loop timer wheels; pollTick the
// interval at which sessions waiting for a queue to drain are polled (gnet
// has no drained callback); idleTick how often the ticker wakes when no
// loop saw traffic since its last wake, so that an engine holding idle
// connections costs next to no CPU (timeouts then fire up to idleTick
// late).
const (
	tick     = 10 * time.Millisecond
	pollTick = time.Millisecond
	idleTick = 250 * time.Millisecond
)

// Stats are the engine's counters. Every field may be read from any
// goroutine.
type Stats struct {
	Accepted          atomic.Int64 // client connections accepted
	Active            atomic.Int64 // sessions open now
	Full              atomic.Int64 // upstream handshakes that were full
	Resumed           atomic.Int64 // upstream handshakes that resumed a session
	HandshakeFailures atomic.Int64 // failed upstream attempts (connect, handshake, verify)
	IdleTimeouts      atomic.Int64 // sessions ended by proxy_timeout
	Stalls            atomic.Int64 // times a side stopped being consumed (backpressure, rate)
	Pauses            atomic.Int64 // times a socket was paused for backpressure
	BytesFromClient   atomic.Int64 // of finished sessions
	BytesToClient     atomic.Int64 // of finished sessions
}

// Engine is a running (or ready to run) tlsrelay. Its methods are safe for
// concurrent use unless noted.
type Engine struct {
	gnet.BuiltinEventEngine

	plan   *plan
	opts   Options
	log    *ErrorLog
	dialer *pool.Dialer
	stats  Stats
	connID atomic.Uint64

	// byAddr maps a listening "ip:port" (the bound port, after boot) to
	// its server block; set in OnBoot, read-only afterwards.
	byAddr   map[string]*listener
	protoAdr []string // gnet listen addresses, "tcp://ip:port"
	eng      gnet.Engine
	booted   chan struct{}
	addrs    []net.Addr

	quitting atomic.Bool
	// pid and hostname, for $pid and $hostname: fixed for the process.
	pid, hostname string
	stopping      sync.Once

	loopsMu sync.Mutex
	loops   map[gnet.EventLoop]*loop
	stopped chan struct{}
	kick    chan struct{} // wakes the ticker early
}

// listener is one bound listen address: its server block and the socket
// options accepted clients get. Immutable after OnBoot.
type listener struct {
	srv  *server
	opts conf.Listen
	// setOpts: some option needs a setsockopt per accepted client.
	setOpts bool
}

// apply sets the listen directive's per-connection options on an accepted
// client. Runs on the client's loop.
func (l *listener) apply(c gnet.Conn) {
	o := &l.opts
	switch o.KeepAlive.Mode {
	case 1:
		c.SetKeepAlive(true, 0, 0, 0)
	case 2:
		c.SetKeepAlive(true, o.KeepAlive.Idle, o.KeepAlive.Intvl, o.KeepAlive.Cnt)
	}
	if o.Rcvbuf > 0 {
		c.SetReadBuffer(int(o.Rcvbuf))
	}
	if o.Sndbuf > 0 {
		c.SetWriteBuffer(int(o.Sndbuf))
	}
	if !l.srv.conf.Core.TCPNoDelay {
		c.SetNoDelay(false)
	}
}

// loop is the engine's state for one gnet event loop. Everything in it is
// used only on that loop, except el (goroutine-safe by gnet's contract).
type loop struct {
	e        *Engine
	el       gnet.EventLoop
	wheel    *wheel
	scratch  []byte
	sessions int
	start    time.Time
	// logScratch renders access-log lines.
	logScratch []byte

	// polled are the sessions waiting for a queue to drain; npolled is
	// its length for the ticker goroutine, which queues a poll only when
	// there is something to poll.
	polled     []*session
	pollSpare  []*session
	npolled    atomic.Int32
	wheelDue   atomic.Bool
	pollQueued atomic.Bool
	// active is set on traffic and cleared by the ticker.
	active atomic.Bool
	// wakeBy is the wall time (UnixNano) of the nearest timer armed for
	// less than idleTick ahead, so an idle ticker still wakes for it; 0:
	// none. Timers further out may fire up to idleTick late when idle.
	wakeBy atomic.Int64
}

// arm arms a wheel timer d ticks ahead and tells the ticker about it when
// it is near. Runs on the loop.
func (lp *loop) arm(t *timer, d int64) {
	lp.wheel.arm(t, d)
	if time.Duration(d)*tick < idleTick {
		at := lp.start.Add(time.Duration(t.deadline) * tick).UnixNano()
		if w := lp.wakeBy.Load(); w == 0 || at < w {
			lp.wakeBy.Store(at)
			lp.e.kickTicker()
		}
	}
}

// touch records traffic on the loop for the ticker's pace. Runs on the
// loop; a load first keeps the common case a read.
func (lp *loop) touch() {
	if !lp.active.Load() {
		lp.active.Store(true)
	}
}

// addPolled puts s on the poll list. Runs on the loop.
func (lp *loop) addPolled(s *session) {
	lp.polled = append(lp.polled, s)
	lp.npolled.Store(int32(len(lp.polled)))
	if len(lp.polled) == 1 {
		lp.e.kickTicker()
	}
}

// runPolls polls every waiting session once. Runs on the loop.
func (lp *loop) runPolls() {
	list := lp.polled
	lp.polled = lp.pollSpare[:0]
	for i, s := range list {
		list[i] = nil
		if s.onPoll() {
			lp.polled = append(lp.polled, s)
		} else {
			s.polled = false
		}
	}
	lp.pollSpare = list[:0]
	lp.npolled.Store(int32(len(lp.polled)))
}

// ticks converts a duration to wheel ticks, rounding up.
func (lp *loop) ticks(d time.Duration) int64 {
	return int64((d + tick - 1) / tick)
}

// sessionEnded runs on the loop when one of its sessions finished.
func (lp *loop) sessionEnded() {
	if lp.e.quitting.Load() && lp.e.stats.Active.Load() == 0 {
		lp.e.stopOnce()
	}
}

// Check builds everything a configuration describes (TLS policies,
// certificates, upstream groups) without binding a port or starting a loop,
// as `tlsrelay -t` needs. It returns the warnings to print for legal but
// insecure settings.
func Check(cfg *conf.Config) (warnings []string, err error) {
	p, err := build(cfg, false, nil)
	if err != nil {
		return nil, err
	}
	return p.warnings, nil
}

// New builds an engine from cfg. Nothing is bound until Serve.
func New(cfg *conf.Config, opts Options) (*Engine, error) {
	p, err := build(cfg, true, nil)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		plan: p, opts: opts,
		byAddr: map[string]*listener{}, loops: map[gnet.EventLoop]*loop{},
		booted: make(chan struct{}), stopped: make(chan struct{}), kick: make(chan struct{}, 1),
	}
	e.pid = strconv.Itoa(os.Getpid())
	e.hostname, _ = os.Hostname()
	e.log = opts.Log
	if e.log == nil {
		e.log, err = openErrorLog(cfg)
		if err != nil {
			return nil, err
		}
	}
	for _, s := range p.servers {
		for _, a := range s.listen {
			e.protoAdr = append(e.protoAdr, "tcp://"+a)
		}
	}
	return e, nil
}

// openErrorLog opens the main error_log (the first one) of cfg.
func openErrorLog(cfg *conf.Config) (*ErrorLog, error) {
	logs := cfg.Main.ErrorLog
	if cfg.Stream != nil && len(cfg.Stream.ErrorLogs) > 0 {
		logs = cfg.Stream.ErrorLogs
	}
	if len(logs) == 0 {
		return NewErrorLog(stderr(), LevelError), nil
	}
	lv, ok := ParseLevel(logs[0].Level)
	if !ok {
		lv = LevelError
	}
	l, err := OpenErrorLog(logs[0].Path, lv)
	if err != nil {
		return nil, conf.Errorf(logs[0].Pos, "%v", err)
	}
	return l, nil
}

// Run serves cfg until ctx is done (stop at once: SIGTERM, SIGINT) or Quit
// is closed and the sessions have ended; it is the body of `tlsrelay`
// without -t.
func Run(ctx context.Context, cfg *conf.Config, opts Options) error {
	e, err := New(cfg, opts)
	if err != nil {
		return err
	}
	return e.Serve(ctx)
}

// Stats returns the engine's counters.
func (e *Engine) Stats() *Stats { return &e.stats }

// Addrs returns the bound listener addresses; valid once Serve has called
// Options.Ready.
func (e *Engine) Addrs() []net.Addr { return e.addrs }

// Serve binds the listeners and runs the event loops until ctx is done or
// a graceful stop (Options.Quit) completes. It runs on the caller's
// goroutine and returns when every loop has stopped.
func (e *Engine) Serve(ctx context.Context) error {
	if len(e.protoAdr) == 0 {
		return errors.New("no listen addresses: the configuration has no stream server")
	}
	e.dialer = pool.NewDialer(pool.DialerConfig{})
	defer e.dialer.Close()
	defer e.log.Close()
	defer e.plan.logs.close()

	loops := e.plan.cfg.Main.WorkerProcesses
	if loops <= 0 {
		loops = runtime.NumCPU()
	}
	reusePort := loops > 1
	for _, a := range e.protoAdr {
		if strings.HasSuffix(a, ":0") {
			// Each loop's listener would get its own port.
			reusePort = false
		}
	}
	opts := []gnet.Option{
		gnet.WithNumEventLoop(loops),
		gnet.WithLockOSThread(true),
		gnet.WithReusePort(reusePort),
		gnet.WithReuseAddr(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(gnetLogger{e.log}),
	}
	go e.supervise(ctx)
	go e.tickLoops()
	err := gnet.Rotate(e, e.protoAdr, opts...)
	close(e.stopped)
	if err != nil {
		return fmt.Errorf("running event loops: %w", err)
	}
	return nil
}

// supervise stops the engine when ctx ends, or gracefully on Quit. Runs on
// its own goroutine.
func (e *Engine) supervise(ctx context.Context) {
	select {
	case <-e.booted:
	case <-e.stopped:
		return
	}
	quit := e.opts.Quit
	select {
	case <-ctx.Done():
		e.stopOnce()
		return
	case <-quit:
	case <-e.stopped:
		return
	}
	e.quitting.Store(true)
	e.log.Logf(LevelNotice, 0, "gracefully shutting down")
	timeout := e.opts.QuitTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	if e.stats.Active.Load() == 0 {
		e.stopOnce()
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
		e.log.Logf(LevelWarn, 0, "%d sessions still open after %v, closing them", e.stats.Active.Load(), timeout)
	case <-e.stopped:
		return
	}
	e.stopOnce()
}

// stopOnce stops the gnet engine; safe from any goroutine, any number of
// times.
func (e *Engine) stopOnce() {
	e.stopping.Do(func() {
		go e.stop()
	})
}

func (e *Engine) stop() {
	{
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e.eng.Stop(ctx)
	}
}

// tickLoops advances every loop's wheel each tick, on the loop itself.
func (e *Engine) tickLoops() {
	select {
	case <-e.booted:
	case <-e.stopped:
		return
	}
	t := time.NewTimer(tick)
	defer t.Stop()
	var loops []*loop
	lastWheel, lastFlush := time.Now(), time.Now()
	for {
		select {
		case <-e.stopped:
			return
		case <-t.C:
		case <-e.kick:
		}
		now := time.Now()
		wheel := now.Sub(lastWheel) >= tick
		if wheel {
			lastWheel = now
		}
		if now.Sub(lastFlush) >= 100*time.Millisecond {
			lastFlush = now
			e.plan.logs.flushDue(now)
		}
		loops = loops[:0]
		e.loopsMu.Lock()
		for _, lp := range e.loops {
			loops = append(loops, lp)
		}
		e.loopsMu.Unlock()
		next := idleTick
		for _, lp := range loops {
			polled := lp.npolled.Load() > 0
			if polled {
				next = pollTick
			} else if lp.active.Swap(false) && next > tick {
				next = tick
			}
			if w := lp.wakeBy.Load(); w != 0 {
				if d := time.Duration(w - now.UnixNano()); d <= 0 {
					lp.wakeBy.CompareAndSwap(w, 0)
					wheel = true
				} else if d < next {
					next = d
				}
			}
			if wheel {
				lp.wheelDue.Store(true)
			} else if !polled {
				continue
			}
			// One queued task at a time: a busy loop that has not run the
			// last one yet does not get another.
			if lp.pollQueued.CompareAndSwap(false, true) {
				lp.el.Execute(context.Background(), lp)
			}
		}
		t.Reset(next)
	}
}

// kickTicker wakes the ticker at once (a session started waiting on a
// queue). Safe from any goroutine.
func (e *Engine) kickTicker() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run advances the loop's wheel when due and polls the waiting sessions;
// it is the Runnable the ticker queues. Runs on the loop.
func (lp *loop) Run(context.Context) error {
	lp.pollQueued.Store(false)
	if len(lp.polled) > 0 {
		lp.runPolls()
	}
	if lp.wheelDue.Swap(false) {
		lp.wheel.advance(int64(time.Since(lp.start) / tick))
	}
	return nil
}

// loopOf returns the engine's state for el, creating it on first use. Runs
// on el.
func (e *Engine) loopOf(el gnet.EventLoop) *loop {
	e.loopsMu.Lock()
	defer e.loopsMu.Unlock()
	lp := e.loops[el]
	if lp == nil {
		lp = &loop{e: e, el: el, wheel: newWheel(4096), scratch: make([]byte, 64<<10), start: time.Now()}
		e.loops[el] = lp
		e.pinLoop(len(e.loops) - 1)
	}
	return lp
}

// pinLoop applies worker_cpu_affinity to the calling loop's thread (loops
// run with LockOSThread). Runs on the loop.
func (e *Engine) pinLoop(i int) {
	aff := e.plan.cfg.Main.CPUAffinity
	var set unix.CPUSet
	switch {
	case aff.Auto:
		set.Set(i % runtime.NumCPU())
	case len(aff.Masks) > 0:
		m := aff.Masks[i%len(aff.Masks)]
		for cpu := 0; cpu < 64; cpu++ {
			if m&(1<<cpu) != 0 {
				set.Set(cpu)
			}
		}
	default:
		return
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		e.log.Logf(LevelAlert, 0, "sched_setaffinity() failed: %v", err)
	}
}

// OnBoot records the bound addresses. Runs once, before the loops start.
func (e *Engine) OnBoot(eng gnet.Engine) gnet.Action {
	e.eng = eng
	for _, s := range e.plan.servers {
		for i, a := range s.listen {
			bound := a
			if fd, err := eng.DupListener("tcp", a); err == nil {
				if sa, err := unix.Getsockname(fd); err == nil {
					bound = sockaddrString(sa, a)
				}
				unix.Close(fd)
			}
			l := &listener{srv: s, opts: s.listenOpts[i]}
			l.setOpts = l.opts.KeepAlive.Mode > 0 || l.opts.Rcvbuf > 0 || l.opts.Sndbuf > 0 || !s.conf.Core.TCPNoDelay
			e.byAddr[bound] = l
			if ta, err := net.ResolveTCPAddr("tcp", bound); err == nil {
				e.addrs = append(e.addrs, ta)
			}
		}
	}
	close(e.booted)
	if e.opts.Ready != nil {
		e.opts.Ready(e.addrs)
	}
	return gnet.None
}

func sockaddrString(sa unix.Sockaddr, fallback string) string {
	switch v := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(v.Addr[:]).String(), strconv.Itoa(v.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(v.Addr[:]).String(), strconv.Itoa(v.Port))
	}
	return fallback
}

// listenerFor finds the listener a client reached through local.
func (e *Engine) listenerFor(local net.Addr) *listener {
	ta, ok := local.(*net.TCPAddr)
	if !ok {
		return nil
	}
	port := strconv.Itoa(ta.Port)
	if s := e.byAddr[net.JoinHostPort(ta.IP.String(), port)]; s != nil {
		return s
	}
	if ta.IP.To4() != nil {
		if s := e.byAddr[net.JoinHostPort("0.0.0.0", port)]; s != nil {
			return s
		}
	}
	return e.byAddr[net.JoinHostPort("::", port)]
}

// OnOpen runs on the conn's loop for accepted clients and for sockets the
// engine enrolled (upstreams after their handshake, resumed sockets).
func (e *Engine) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	switch v := c.Context().(type) {
	case *upOpen:
		v.s.onUpstreamOpen(c, v.res)
		return nil, gnet.None
	case *reattach:
		v.s.onReattach(c, v.sd)
		return nil, gnet.None
	}
	if e.quitting.Load() {
		return nil, gnet.Close
	}
	l := e.listenerFor(c.LocalAddr())
	if l == nil {
		e.log.Logf(LevelError, 0, "no server for %s", c.LocalAddr())
		return nil, gnet.Close
	}
	if l.setOpts {
		l.apply(c)
	}
	lp := e.loopOf(c.EventLoop())
	lp.touch()
	e.newSession(c, lp, l.srv)
	return nil, gnet.None
}

// OnTraffic runs on the conn's loop when it has input.
func (e *Engine) OnTraffic(c gnet.Conn) gnet.Action {
	s, ok := c.Context().(*session)
	if !ok {
		c.Discard(-1)
		return gnet.None
	}
	s.lp.touch()
	if c == s.cli.c {
		s.onClientTraffic(c)
	} else {
		s.onUpstreamTraffic(c)
	}
	return gnet.None
}

// OnClose runs on the conn's loop when gnet closes it.
func (e *Engine) OnClose(c gnet.Conn, err error) gnet.Action {
	if s, ok := c.Context().(*session); ok {
		s.onClose(c, err)
	}
	return gnet.None
}

// hashKey evaluates the upstream block's hash key for a session: the
// variables $remote_addr, $remote_port, $server_addr and $server_port, and
// literal text.
func (s *server) hashKey(remote, local net.Addr) string {
	u := s.conf.Upstream
	if u == nil || u.HashKey == "" {
		return ""
	}
	return expandVars(u.HashKey, remote, local)
}

func expandVars(tmpl string, remote, local net.Addr) string {
	if !strings.Contains(tmpl, "$") {
		return tmpl
	}
	r := strings.NewReplacer(
		"$remote_addr", hostOf(remote), "$remote_port", portOf(remote),
		"$server_addr", hostOf(local), "$server_port", portOf(local),
	)
	return r.Replace(tmpl)
}
