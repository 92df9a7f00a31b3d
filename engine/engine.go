package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/listen"
	"github.com/tlsrelay/tlsrelay/engine/logfile"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/pool/dial"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// Engine is a running (or ready to run) tlsrelay. Its methods are safe for
// concurrent use unless noted.
type Engine struct {
	opts   Options
	log    *errlog.Log
	dialer *dial.Dialer
	connID atomic.Uint64

	// plan is the configuration new sessions start on; a reload
	// publishes a new one. A session keeps the server it started on.
	plan atomic.Pointer[plan]
	// affinity is worker_cpu_affinity as the loops were pinned at start;
	// a reload cannot change it (startOnly).
	affinity conf.CPUAffinity

	// eng is set in OnBoot.
	eng gnet.Engine
	// loops has one entry per gnet loop, learned at boot (bootLoops);
	// read-only once loopsKnown is closed. nextLoop spreads accepted
	// clients over them.
	loops      []*loop
	loopIdx    map[gnet.EventLoop]*loop
	bootMu     sync.Mutex
	bootLeft   int
	loopsKnown chan struct{}
	nextLoop   atomic.Uint32
	// door is the unix socket gnet listens on (gnet needs one listener),
	// in a directory only this process's user can enter; the engine
	// connects to it only to learn its loops.
	door string

	// names counts the lookups of proxy_pass names, for the process:
	// every plan's resolvers add to it.
	names *pool.NameStats

	// files are the open access-log files, shared by the plans; keyLogs
	// the proxy_ssl_key_log files.
	files   *logfile.Files
	keyLogs *tlsbridge.KeyLogFiles
	// reloadMu serializes reloads.
	reloadMu sync.Mutex
	// m are the engine's counters, for the life of the process.
	m *metrics.Engine
	// metricsEP is the metrics_listen endpoint (nil: none); guarded by
	// reloadMu once serving. metricsAddr is its bound address, a string.
	metricsEP   *metricsEndpoint
	metricsAddr atomic.Value

	// gate is what the listeners' accept loops share: the pause after
	// descriptors ran out, the check near the descriptor limit. Its
	// zero value pauses but checks and counts nothing (tests' engines).
	gate listen.Gate

	// socks are the listening sockets by key; guarded by sockMu.
	sockMu sync.Mutex
	socks  map[string]*listenSock

	booted  chan struct{} // the loops are known and the listeners accept
	started time.Time     // when New made the engine (the status page's uptime)
	stopped chan struct{} // every loop has stopped
	kick    chan struct{} // wakes the ticker early
	// sleepUntil is when the ticker next wakes (UnixNano); a loop that
	// arms an earlier timer kicks it.
	sleepUntil atomic.Int64

	quitting atomic.Bool
	// pid and hostname, for $pid and $hostname: fixed for the process.
	pid, hostname string
	stopping      sync.Once
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
	p.free()
	return p.warnings, nil
}

// New builds an engine from cfg. Nothing is bound until Serve.
func New(cfg *conf.Config, opts Options) (*Engine, error) {
	files, keyLogs := logfile.NewFiles(), tlsbridge.NewKeyLogFiles()
	nameStats := new(pool.NameStats)
	p, err := buildPlan(cfg, planEnv{files: files, keyLogs: keyLogs, nameStats: nameStats})
	if err != nil {
		return nil, err
	}
	e := &Engine{
		files:   files,
		keyLogs: keyLogs,
		names:   nameStats,
		m:       new(metrics.Engine),
		opts:    opts,
		socks:   map[string]*listenSock{},
		loopIdx: map[gnet.EventLoop]*loop{},
		booted:  make(chan struct{}), stopped: make(chan struct{}), kick: make(chan struct{}, 1),
		loopsKnown: make(chan struct{}),
		started:    time.Now(),
	}
	// Each open session holds two descriptors: its client and its
	// upstream.
	e.gate.Held = func() int64 { return 2 * e.m.Active() }
	e.gate.Failed = e.m.AcceptFailed
	e.plan.Store(p)
	e.affinity = cfg.Main.CPUAffinity
	e.pid = strconv.Itoa(os.Getpid())
	e.hostname, _ = os.Hostname()
	e.log = opts.Log
	if e.log == nil {
		e.log, err = openErrorLog(cfg)
		if err != nil {
			p.free()
			return nil, err
		}
	}
	return e, nil
}

// openErrorLog opens the main error_log (the first one) of cfg.
func openErrorLog(cfg *conf.Config) (*errlog.Log, error) {
	path, lv, pos := errorLogOf(cfg)
	if path == "stderr" {
		return errlog.New(os.Stderr, lv), nil
	}
	l, err := errlog.Open(path, lv)
	if err != nil {
		return nil, conf.Errorf(pos, "%v", err)
	}
	return l, nil
}

// errorLogOf is the error_log that applies to the engine: the stream
// level's first, else the main context's first ("stderr" at error when
// neither has one), with its position.
func errorLogOf(cfg *conf.Config) (path string, lv errlog.Level, pos conf.Pos) {
	logs := cfg.Main.ErrorLog
	if cfg.Stream != nil && len(cfg.Stream.ErrorLogs) > 0 {
		logs = cfg.Stream.ErrorLogs
	}
	if len(logs) == 0 {
		return "stderr", errlog.LevelError, conf.Pos{}
	}
	lv, ok := errlog.ParseLevel(logs[0].Level)
	if !ok {
		lv = errlog.LevelError
	}
	path = logs[0].Path
	if path == "" {
		path = "stderr"
	}
	return path, lv, logs[0].Pos
}

// cfg returns the configuration new sessions start on.
func (e *Engine) cfg() *conf.Config { return e.plan.Load().cfg }

// Addrs returns the bound listener addresses, in the order of the
// configuration's listen directives (reuseport copies once); valid once
// Serve has called Options.Ready.
func (e *Engine) Addrs() []net.Addr {
	e.sockMu.Lock()
	defer e.sockMu.Unlock()
	return e.addrsLocked()
}

func (e *Engine) addrsLocked() []net.Addr {
	var out []net.Addr
	for _, s := range e.plan.Load().servers {
		for _, l := range s.listenOpts {
			if ls := e.socks[listenKey(l, 0)]; ls != nil {
				out = append(out, ls.sock.Addr())
			}
		}
	}
	return out
}

// numLoops is worker_processes: the number of event loops.
func (e *Engine) numLoops() int { return e.cfg().Main.Loops() }

// Serve binds the listeners and runs the event loops until ctx is done or
// a graceful stop (Options.Quit) completes. It runs on the caller's
// goroutine and returns when every loop has stopped.
func (e *Engine) Serve(ctx context.Context) error {
	p := e.plan.Load()
	defer e.log.Close()
	defer e.files.CloseAll()
	// The plan in force at the end stops all it runs (a graceful quit
	// and a hard stop both end here); a retired one did with its last
	// session.
	defer func() { e.plan.Load().free() }()
	defer e.keyLogs.Close()
	if len(p.servers) == 0 {
		return errors.New("no listen addresses: the configuration has no stream server")
	}
	n := e.numLoops()
	socks, err := e.openListeners(p, nil, n)
	if err != nil {
		return err
	}
	e.sockMu.Lock()
	e.socks = socks
	e.bindAll(p)
	e.sockMu.Unlock()
	defer e.closeListeners()
	ep, err := e.listenMetrics(p.cfg)
	if err != nil {
		return err
	}
	e.metricsEP = ep
	defer e.closeMetrics()
	e.m.Loaded(time.Now())

	e.dialer = dial.NewDialer(dial.Config{})
	defer e.dialer.Close()
	p.start(e)

	dir, err := e.makeDoorDir()
	if err != nil {
		return fmt.Errorf("making the event loops' door: %w", err)
	}
	defer os.RemoveAll(dir)
	e.door = filepath.Join(dir, "door")
	e.loops = make([]*loop, n)
	e.bootLeft = n
	opts := []gnet.Option{
		gnet.WithNumEventLoop(n),
		gnet.WithLockOSThread(lockLoops(e.cfg().Main.CPUAffinity)),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(gnetLogger{e.log}),
	}
	go e.supervise(ctx)
	go e.tickLoops()
	err = gnet.Run(&handler{e: e}, "unix://"+e.door, opts...)
	close(e.stopped)
	if err != nil {
		return fmt.Errorf("running event loops: %w", err)
	}
	return nil
}

// bindAll points every socket of e.socks at its server block in p and
// gives reuseport copies their loop (once the loops are known). Runs with
// sockMu held.
func (e *Engine) bindAll(p *plan) {
	for _, s := range p.servers {
		for _, l := range s.listenOpts {
			b := newBinding(s, l)
			for key, ls := range e.socks {
				if key == listenKey(l, 0) || (l.ReusePort && sameDirective(key, l)) {
					ls.bind.Store(b)
				}
			}
		}
	}
}

// sameDirective reports whether key names a copy of l's sockets.
func sameDirective(key string, l conf.Listen) bool {
	base := listenKey(l, 0)
	return len(key) > len(base) && key[:len(base)] == base && key[len(base)] == '#'
}

// bootLoops learns the gnet loops: gnet gives no handle on a loop but
// through a conn on it, so the engine connects to its own door until each
// loop has had one (gnet deals accepted conns round robin), then starts
// accepting clients. Runs on its own goroutine, started by OnBoot.
func (e *Engine) bootLoops() {
	for round := 0; round < 20; round++ {
		var conns []net.Conn
		for i := 0; i < len(e.loops); i++ {
			c, err := net.Dial("unix", e.door)
			if err != nil {
				break
			}
			conns = append(conns, c)
		}
		t := time.NewTimer(time.Second)
		select {
		case <-e.loopsKnown:
		case <-t.C:
		case <-e.stopped:
		}
		t.Stop()
		for _, c := range conns {
			c.Close()
		}
		select {
		case <-e.loopsKnown:
			e.startAccepting()
			return
		case <-e.stopped:
			return
		default:
		}
	}
	e.log.Logf(errlog.LevelEmerg, 0, "event loops did not start")
	e.stopOnce()
}

// startAccepting gives the reuseport copies their loops, starts every
// accept goroutine and reports the engine ready.
func (e *Engine) startAccepting() {
	e.gate.Measure()
	e.sockMu.Lock()
	for key, ls := range e.socks {
		e.assignLoop(key, ls)
		ls.start()
	}
	addrs := e.addrsLocked()
	e.sockMu.Unlock()
	close(e.booted)
	if e.opts.Ready != nil {
		e.opts.Ready(addrs)
	}
}

// assignLoop gives the i-th reuseport copy of a listen directive the i-th
// loop; the first copy (or the only socket) feeds all loops in turn unless
// it is a reuseport socket.
func (e *Engine) assignLoop(key string, ls *listenSock) {
	b := ls.bind.Load()
	if b == nil || !b.opts.ReusePort {
		ls.lp.Store(nil)
		return
	}
	i := 0
	if j := len(listenKey(b.opts, 0)); len(key) > j {
		i, _ = strconv.Atoi(key[j+1:])
	}
	ls.lp.Store(e.loops[i%len(e.loops)])
}

// closeListeners closes every listening socket: new connections are
// refused; sessions go on. Safe from any goroutine.
func (e *Engine) closeListeners() {
	e.sockMu.Lock()
	defer e.sockMu.Unlock()
	keys := make([]string, 0, len(e.socks))
	for k := range e.socks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e.socks[k].close()
	}
}

// supervise stops the engine when ctx ends, or gracefully on Quit. Runs on
// its own goroutine.
func (e *Engine) supervise(ctx context.Context) {
	select {
	case <-e.booted:
	case <-e.stopped:
		return
	case <-ctx.Done():
		e.stopOnce()
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
	// Graceful quit: the listening sockets close at once, so that new
	// connections are refused (a balancer in front sees the instance go);
	// open sessions run to their end.
	// No session will start any more: probes, re-resolution and
	// pre-warming end (the ready connections close), the groups stay as
	// last probed for the sessions still connecting. Under reloadMu, so
	// that no reload opens a listener or starts a plan again (a reload
	// waiting for the lock then sees quitting and is refused).
	e.reloadMu.Lock()
	e.quitting.Store(true)
	e.closeListeners()
	e.plan.Load().stop(stopQuiet)
	e.reloadMu.Unlock()
	e.log.Logf(errlog.LevelNotice, 0, "gracefully shutting down")
	// As NGINX: worker_shutdown_timeout bounds the wait; without it
	// sessions run to their end (Options.QuitTimeout, when set, is the
	// bound instead).
	timeout := e.cfg().Main.WorkerShutdownTimeout
	if timeout <= 0 {
		timeout = e.opts.QuitTimeout
	}
	if e.m.Active() == 0 {
		e.stopOnce()
		return
	}
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-ctx.Done():
	case <-expired:
		e.log.Logf(errlog.LevelWarn, 0, "%d sessions still open after %v, closing them", e.m.Active(), timeout)
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

// stop ends everything at once: listeners, sessions (each cancels its
// dial), the dials left, the loops. Runs on its own goroutine (stopOnce).
func (e *Engine) stop() {
	e.closeListeners()
	// The sessions still open end as the proxy's own shutdown (their
	// log says so), before gnet closes the conns under them; a session
	// still connecting cancels its dial as it ends.
	e.closeSessions(func(*session) bool { return true }, "stopping")
	// Dials no session waits for any more end now, not when their
	// proxy_connect_timeout runs out (Close interrupts them).
	if e.dialer != nil {
		e.dialer.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.eng.Stop(ctx)
}

// closeSessions ends, on each loop, the sessions match selects, and
// waits (at most 10 s) until every loop has done so. Safe from any
// goroutine but a loop.
func (e *Engine) closeSessions(match func(*session) bool, why string) {
	select {
	case <-e.loopsKnown:
	default:
		return
	}
	var wg sync.WaitGroup
	for _, lp := range e.loops {
		wg.Add(1)
		err := lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			defer wg.Done()
			lp.closeSessions(match, why)
			return nil
		}))
		if err != nil {
			wg.Done()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// closeMetrics stops the metrics endpoint.
func (e *Engine) closeMetrics() {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	if e.metricsEP != nil {
		e.metricsEP.srv.Close()
		e.metricsEP = nil
	}
}

// flushLogs flushes access-log buffers past their flush= time and returns
// when one will next be due (zero: none). Runs on the ticker goroutine.
func (e *Engine) flushLogs(now time.Time) time.Time {
	return e.files.FlushDue(now)
}

// gnetLogger routes gnet's own messages into the error log.
type gnetLogger struct{ l *errlog.Log }

func (g gnetLogger) Debugf(format string, args ...any) {
	g.l.Logf(errlog.LevelDebug, 0, format, args...)
}

// Infof logs at debug: gnet's info lines name its internals (the loops'
// door, a socket the user never configured), not what tlsrelay serves.
func (g gnetLogger) Infof(format string, args ...any) {
	g.l.Logf(errlog.LevelDebug, 0, format, args...)
}
func (g gnetLogger) Warnf(format string, args ...any) { g.l.Logf(errlog.LevelWarn, 0, format, args...) }
func (g gnetLogger) Errorf(format string, args ...any) {
	g.l.Logf(errlog.LevelError, 0, format, args...)
}
func (g gnetLogger) Fatalf(format string, args ...any) {
	g.l.Logf(errlog.LevelEmerg, 0, format, args...)
}
