package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/tlsrelay/tlsrelay/engine"
	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/listen"
)

// serveSignals are the signals the running process handles besides HUP
// (reload, on a channel of its own), as NGINX's master: USR1 reopen the
// logs, USR2 upgrade the binary, QUIT graceful stop, TERM and INT fast
// stop.
func serveSignals() []os.Signal {
	return []os.Signal{syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT}
}

// serve is the run path. It catches the signals first (so that none of
// them can end the process the Go way once anyone may send it one), then
// hands over to a runner.
func serve(o options, stderr io.Writer) int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, serveSignals()...)
	defer signal.Stop(sigs)
	// HUPs that arrive during a reload make one more: a buffer of one.
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	r := &runner{o: o, stderr: stderr, sigs: sigs, hups: hups, notify: sdNotify}
	h, err := newHandover()
	if err != nil {
		r.noUpgrade = err
	} else {
		r.hand = h
	}
	return r.run()
}

// runner is one serving process: the engine, the configuration in force,
// and what the signals do to them. Its methods run on the control
// goroutine (the one that calls run) unless noted, so reloads, reopens and
// upgrades happen one at a time, in the order the signals came.
type runner struct {
	o      options
	stderr io.Writer
	// sigs carries the signals of serveSignals, hups SIGHUP.
	sigs, hups <-chan os.Signal
	// notify tells the service manager (sdNotify); tests replace it.
	notify func(state string) error
	// hand is the binary upgrade; nil when noUpgrade says why not.
	hand      *handover
	noUpgrade error

	cfg *conf.Config
	e   *engine.Engine
	// log is the error log this runner writes its own lines to (reload,
	// reopen, upgrade): the configuration's, as the engine's.
	log *errlog.Log
	// pidFile is the pid file this process wrote ("": none yet).
	pidFile string

	quit       chan struct{}
	quitting   bool // a graceful stop began
	upgrading  bool // a new binary is starting
	handedOver bool // a new binary took over the listeners
}

// run loads the configuration, starts the engine and handles signals until
// the engine stops. It returns the exit code.
func (r *runner) run() int {
	cfg, err := load(r.o, r.stderr)
	if err != nil {
		printErr(r.stderr, err)
		return 1
	}
	for _, w := range insecure(cfg, nil) {
		fmt.Fprintf(r.stderr, "tlsrelay: %s\n", w)
	}
	if err := r.servable(cfg); err != nil {
		printErr(r.stderr, err)
		return 1
	}
	setRlimit(cfg, r.stderr, nil)
	if r.log, err = openRunnerLog(cfg); err != nil {
		printErr(r.stderr, err)
		return 1
	}
	defer func() { r.log.Close() }()
	r.cfg = cfg
	defer r.removePID()
	defer r.hand.stop()
	r.quit = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	var addrs []net.Addr // written before ready closes, read after
	opts := engine.Options{Quit: r.quit, Ready: func(a []net.Addr) { addrs = a; close(ready) }, Version: fullVersion()}
	if r.hand != nil {
		opts.Listen = r.hand.listen
	}
	loopHeadroom(cfg)
	r.e, err = engine.New(cfg, opts)
	if err != nil {
		printErr(r.stderr, err)
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- r.e.Serve(ctx) }()

	upgraded := make(chan error, 1)
	isReady, pendingReload, code := false, false, 0
	for {
		select {
		case err := <-served:
			if err != nil {
				printErr(r.stderr, err)
				return 1
			}
			r.log.Logf(errlog.LevelNotice, 0, "exiting")
			return code
		case <-ready:
			ready = nil
			r.started(addrs)
			if err := r.ready(); err != nil {
				r.log.Logf(errlog.LevelEmerg, 0, "%v", err)
				printErr(r.stderr, err)
				code = 1
				r.stop(cancel)
				continue
			}
			isReady = true
			if pendingReload {
				pendingReload = false
				r.reload()
			}
		case <-r.hups:
			if !isReady {
				pendingReload = true
				continue
			}
			r.reload()
		case s := <-r.sigs:
			switch s {
			case syscall.SIGUSR1:
				r.reopen()
			case syscall.SIGUSR2:
				r.upgrade(isReady, upgraded)
			case syscall.SIGQUIT:
				r.log.Logf(errlog.LevelNotice, 0, "signal %d (SIGQUIT) received, shutting down gracefully", int(syscall.SIGQUIT))
				r.gracefulStop(upgraded)
			default:
				r.log.Logf(errlog.LevelNotice, 0, "signal %d (%s) received, exiting", int(s.(syscall.Signal)), sigName(s))
				r.stop(cancel)
			}
		case err := <-upgraded:
			r.upgradeDone(err)
		}
	}
}

// started logs, at notice, what the process serves and within which
// limits, once its listeners are open. Runs on the runner's goroutine.
func (r *runner) started(addrs []net.Addr) {
	names := make([]string, len(addrs))
	for i, a := range addrs {
		names[i] = a.String()
	}
	nofile := listen.NofileLimit()
	wc := "derived from the descriptor limit"
	if n := r.cfg.Main.WorkerConnections; n > 0 {
		wc = strconv.Itoa(n)
	}
	limit := "unlimited"
	if nofile > 0 {
		limit = strconv.FormatUint(nofile, 10)
	}
	r.log.Logf(errlog.LevelNotice, 0, "%s started, pid %d: %d event loops, listening on %s; worker_connections %s (%d per loop), descriptor limit %s",
		fullVersion(), os.Getpid(), r.cfg.Main.Loops(), strings.Join(names, ", "), wc, r.cfg.Main.ConnectionsPerLoop(nofile), limit)
}

// servable is what makes a configuration one a process can run (beyond
// what -t checks): something to serve.
func (r *runner) servable(cfg *conf.Config) error {
	if cfg.Stream == nil || len(cfg.Stream.Servers) == 0 {
		return fmt.Errorf("no \"stream\" server in %s: nothing to serve", r.o.conf)
	}
	return nil
}

// ready runs once the engine has bound every listener. It writes the pid
// file only now, as NGINX does after opening its sockets, so that whoever
// waits for the file finds every listener accepting; a process an upgrade
// started (whose old process keeps the file until then, so that `-s`
// reaches it) also tells systemd it is the main process now and the old
// process that it can go; then READY=1.
func (r *runner) ready() error {
	if err := r.writePID(r.cfg.Main.PID); err != nil {
		return err
	}
	if r.hand.child() {
		r.sendNotify(fmt.Sprintf("MAINPID=%d", os.Getpid()))
	}
	if r.hand != nil {
		if err := r.hand.upg.Ready(); err != nil {
			// The old process is gone: nothing waits for us.
			r.log.Logf(errlog.LevelAlert, 0, "telling the old binary that the new one serves: %v", err)
		}
		if r.hand.child() {
			r.log.Logf(errlog.LevelNotice, 0, "new binary serving; the old process %d stops accepting and drains its sessions", os.Getppid())
		}
	}
	r.sendNotify("READY=1")
	return nil
}

// reload is SIGHUP: read the configuration again (same -p, -c, -g), check
// it fully and, only if all of it is good, switch the engine to it. On any
// error nothing changes: the process, its listeners and its sessions go on
// with the configuration in force.
func (r *runner) reload() {
	r.log.Logf(errlog.LevelNotice, 0, "signal %d (SIGHUP) received, reconfiguring", int(syscall.SIGHUP))
	r.sendNotify(reloadingState())
	defer r.sendNotify("READY=1")
	if r.quitting {
		r.log.Logf(errlog.LevelNotice, 0, "shutting down: reload ignored")
		return
	}
	cfg, warns, err := conf.Load(r.o.conf, conf.LoadOptions{Prefix: r.o.prefix, Directives: r.o.global})
	for _, w := range warns {
		r.logLine(errlog.LevelWarn, w.String())
	}
	var newLog *errlog.Log
	if err == nil {
		for _, w := range insecure(cfg, nil) {
			r.logLine(errlog.LevelWarn, w)
		}
		err = r.servable(cfg)
	}
	if err == nil {
		newLog, err = openRunnerLog(cfg)
	}
	if err == nil {
		if err = r.e.Reload(cfg); err != nil {
			newLog.Close()
		}
	} else {
		// The engine counts the failures it sees; these it did not.
		r.e.Metrics().ReloadFailed()
	}
	if err != nil {
		r.logLine(errlog.LevelEmerg, err.Error())
		r.log.Logf(errlog.LevelNotice, 0, "reload failed: still serving the previous configuration")
		r.hand.prune(r.cfg)
		return
	}
	r.hand.prune(cfg)
	old := r.cfg
	r.cfg = cfg
	r.log.Close()
	r.log = newLog
	if cfg.Main.PID != old.Main.PID {
		r.removePID()
		if err := r.writePID(cfg.Main.PID); err != nil {
			r.log.Logf(errlog.LevelAlert, 0, "%v", err)
		}
	}
	if cfg.Main.RlimitNofile != old.Main.RlimitNofile {
		setRlimit(cfg, nil, r.log)
	}
	// The engine logged "reconfigured".
}

// reopen is SIGUSR1: the engine reopens the error and access logs (after
// logrotate renamed them) and says so; the runner reopens its handle of
// the error log.
func (r *runner) reopen() {
	r.log.Logf(errlog.LevelNotice, 0, "signal %d (SIGUSR1) received, reopening logs", int(syscall.SIGUSR1))
	if err := r.log.Reopen(); err != nil {
		r.log.Logf(errlog.LevelAlert, 0, "reopening logs: %v", err)
	}
	if err := r.e.Reopen(); err != nil {
		r.log.Logf(errlog.LevelAlert, 0, "%v", err)
	}
}

// upgrade is SIGUSR2: start the binary at the same path with the same
// arguments; it inherits the listening sockets. The result arrives on
// done: nil once the new process serves (the runner then stops
// gracefully).
func (r *runner) upgrade(isReady bool, done chan<- error) {
	r.log.Logf(errlog.LevelNotice, 0, "signal %d (SIGUSR2) received, upgrading the binary", int(syscall.SIGUSR2))
	switch {
	case r.hand == nil:
		r.log.Logf(errlog.LevelAlert, 0, "%s", upgradeUnavailable(r.noUpgrade))
		return
	case r.quitting:
		r.log.Logf(errlog.LevelNotice, 0, "shutting down: upgrade ignored")
		return
	case r.upgrading:
		r.log.Logf(errlog.LevelNotice, 0, "an upgrade is already in progress")
		return
	case !isReady:
		r.log.Logf(errlog.LevelNotice, 0, "not serving yet: upgrade ignored")
		return
	}
	r.upgrading = true
	go func() { done <- r.hand.upg.Upgrade() }()
}

// upgradeDone takes the result of an upgrade.
func (r *runner) upgradeDone(err error) {
	r.upgrading = false
	if err != nil {
		if r.quitting {
			return
		}
		r.log.Logf(errlog.LevelAlert, 0, "binary upgrade failed: %v; this process goes on serving", err)
		return
	}
	r.handedOver = true
	r.log.Logf(errlog.LevelNotice, 0, "the new binary serves: stopping accepting, draining the open sessions")
	r.beginQuit()
}

// gracefulStop is SIGQUIT: close the listening sockets, let the sessions
// end, exit. An upgrade starting is stopped first; if it had already
// succeeded, the new binary keeps the sockets.
func (r *runner) gracefulStop(upgraded <-chan error) {
	if r.quitting {
		return
	}
	if r.upgrading {
		r.hand.stop()
		r.upgradeDone(<-upgraded)
		if r.handedOver {
			return
		}
	}
	r.sendNotify("STOPPING=1")
	r.beginQuit()
}

// beginQuit closes the engine's Quit channel and lets go of the sockets.
func (r *runner) beginQuit() {
	r.quitting = true
	r.hand.stop()
	close(r.quit)
}

// stop is SIGTERM and SIGINT: close everything now.
func (r *runner) stop(cancel context.CancelFunc) {
	if !r.handedOver {
		r.sendNotify("STOPPING=1")
	}
	r.hand.stop()
	cancel()
}

// sendNotify tells the service manager; a failure is logged.
func (r *runner) sendNotify(state string) {
	if err := r.notify(state); err != nil {
		r.log.Logf(errlog.LevelWarn, 0, "%v", err)
	}
}

// logLine logs a message that may carry its level, as "[warn] ...".
func (r *runner) logLine(lv errlog.Level, msg string) {
	if rest, ok := strings.CutPrefix(msg, "["); ok {
		if name, text, ok := strings.Cut(rest, "] "); ok {
			if l, ok := errlog.ParseLevel(name); ok {
				lv, msg = l, text
			}
		}
	}
	r.log.Logf(lv, 0, "%s", msg)
}

// writePID writes this process's pid to path ("": none) atomically, so
// that `tlsrelay -s` never reads half a file, and remembers it.
func (r *runner) writePID(path string) error {
	if path == "" {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing pid file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing pid file: %w", err)
	}
	r.pidFile = path
	return nil
}

// removePID removes the pid file if it still names this process: after an
// upgrade it names the new one, which must stay reachable by `-s`.
func (r *runner) removePID() {
	if r.pidFile == "" {
		return
	}
	data, err := os.ReadFile(r.pidFile)
	if err == nil && strings.TrimSpace(string(data)) == strconv.Itoa(os.Getpid()) {
		os.Remove(r.pidFile)
	}
	r.pidFile = ""
}

// setRlimit applies worker_rlimit_nofile; a failure is reported to stderr
// at start, to the error log on reload.
func setRlimit(cfg *conf.Config, stderr io.Writer, log *errlog.Log) {
	n := cfg.Main.RlimitNofile
	if n <= 0 {
		return
	}
	lim := syscall.Rlimit{Cur: uint64(n), Max: uint64(n)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		msg := fmt.Sprintf("setrlimit(RLIMIT_NOFILE, %d) failed (%v), ignored", n, err)
		if log != nil {
			log.Logf(errlog.LevelAlert, 0, "%s", msg)
		} else {
			fmt.Fprintf(stderr, "tlsrelay: [alert] %s\n", msg)
		}
	}
}

// openRunnerLog opens the error log the engine writes to for cfg (the
// first stream-level error_log, else the first main one, else stderr at
// "error"), for the runner's own lines. Both append, a line per write, so
// their lines interleave whole.
func openRunnerLog(cfg *conf.Config) (*errlog.Log, error) {
	logs := cfg.Main.ErrorLog
	if cfg.Stream != nil && len(cfg.Stream.ErrorLogs) > 0 {
		logs = cfg.Stream.ErrorLogs
	}
	if len(logs) == 0 {
		return errlog.New(os.Stderr, errlog.LevelError), nil
	}
	lv, ok := errlog.ParseLevel(logs[0].Level)
	if !ok {
		lv = errlog.LevelError
	}
	l, err := errlog.Open(logs[0].Path, lv)
	if err != nil {
		return nil, conf.Errorf(logs[0].Pos, "%v", err)
	}
	return l, nil
}

// sigName is a signal's C name.
func sigName(s os.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return s.String()
}

// loopHeadroom makes sure the Go scheduler has a P that no event loop
// holds, unless GOMAXPROCS is set. The loops are locked to their threads
// and wait in epoll_wait, a system call during which a loop keeps its P
// until the runtime's sysmon takes it back, after up to 10 ms once the
// process has been quiet; with as many Ps as loops, the dialer's
// goroutines (connect, handshake) and Go's netpoller then wait for that,
// which showed as a p99 of 17 ms for one client at a time (4 ms with a
// free P, in-process test). So GOMAXPROCS is the default (the CPUs) or
// the loops plus one, whichever is more: one free P is enough, and every
// P more costs the busy path. On the 2-core bench machine, 2 loops with
// 3 Ps against 4 (the earlier rule, a P more per loop): 9 % less CPU per
// resumed TLS 1.3 connection and 7 % per full one; 1 loop with 2 Ps
// against 3: 7 % less in every TLS row (docs/benchmarks.md). Runs on the
// main goroutine before the engine starts.
func loopHeadroom(cfg *conf.Config) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(headroomProcs(runtime.GOMAXPROCS(0), cfg.Main.Loops()))
}

// headroomProcs is loopHeadroom's GOMAXPROCS for the default procs and
// the number of event loops.
func headroomProcs(procs, loops int) int { return max(procs, loops+1) }
