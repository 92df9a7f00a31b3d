package engine

import (
	"fmt"
	"slices"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
)

// Reload replaces the configuration that new sessions start on, as
// SIGHUP does for NGINX: cfg is built and checked fully, and the listening
// sockets it adds are bound, before anything changes; on error nothing
// changes and the error names the file and line. On success new sessions
// use the new configuration (upstreams, balancers, TLS policies, logs,
// timeouts); established sessions run on with the one they started on.
// A listening socket whose address is unchanged keeps accepting
// throughout; added addresses start accepting; removed ones stop (their
// sessions go on). Session tickets carry over: a peer and TLS policy that
// did not change resume at once.
//
// Reload is safe from any goroutine; reloads are serialized. It may be
// called only while Serve runs (after Options.Ready).
func (e *Engine) Reload(cfg *conf.Config) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	select {
	case <-e.booted:
	default:
		return fmt.Errorf("reloading: the engine is not serving yet")
	}
	select {
	case <-e.stopped:
		return fmt.Errorf("reloading: the engine has stopped")
	default:
	}
	if e.quitting.Load() {
		return fmt.Errorf("reloading: the engine is shutting down")
	}
	old := e.plan.Load()
	p, err := buildPlan(cfg, planEnv{files: e.files, keyLogs: e.keyLogs, prev: old, nameStats: e.names})
	if err != nil {
		e.m.ReloadFailed()
		return err
	}
	if len(p.servers) == 0 {
		p.free()
		e.m.ReloadFailed()
		return fmt.Errorf("reloading: the configuration has no stream server")
	}
	if e.opts.Log == nil {
		if err := e.reconfigureErrorLog(cfg); err != nil {
			p.free()
			e.m.ReloadFailed()
			return err
		}
	}

	// A changed metrics_listen: bind the new address before anything
	// changes, close the old one after.
	var ep *metricsEndpoint
	oldEP := e.metricsEP
	if cfg.Main.MetricsListen != "" && (oldEP == nil || oldEP.addr != cfg.Main.MetricsListen) {
		if ep, err = e.listenMetrics(cfg); err != nil {
			p.free()
			e.m.ReloadFailed()
			return err
		}
	}

	e.sockMu.Lock()
	socks, err := e.openListeners(p, e.socks, len(e.loops))
	if err != nil {
		e.sockMu.Unlock()
		if ep != nil {
			ep.srv.Close()
		}
		p.free()
		e.m.ReloadFailed()
		return err
	}
	prev := e.socks
	e.socks = socks
	// New sessions start on p from here: its plan first, then each
	// socket's binding. Its proxy_pass lookups log from the first.
	p.namesLog.Store(e.log)
	e.plan.Store(p)
	e.bindAll(p)
	for key, ls := range socks {
		e.assignLoop(key, ls)
		if prev[key] == nil {
			ls.start()
		}
	}
	for key, ls := range prev {
		if socks[key] == nil {
			ls.drop()
		}
	}
	e.sockMu.Unlock()
	switch {
	case ep != nil:
		if oldEP != nil {
			oldEP.srv.Close()
		}
		e.metricsEP = ep
	case cfg.Main.MetricsListen == "" && oldEP != nil:
		oldEP.srv.Close()
		e.metricsEP = nil
		e.metricsAddr.Store("")
	}
	p.start(e)
	old.retire()
	// As NGINX's old workers: the sessions of the replaced
	// configuration are closed once its worker_shutdown_timeout passes.
	if t := old.cfg.Main.WorkerShutdownTimeout; t > 0 {
		time.AfterFunc(t, func() {
			e.closeSessions(func(s *session) bool { return s.srv.plan == old }, "worker_shutdown_timeout after a reload")
		})
	}
	e.m.ReloadOK(time.Now())
	for _, w := range startOnly(cfg, len(e.loops), e.affinity) {
		e.log.Logf(errlog.LevelWarn, 0, "%s", w)
	}
	e.log.Logf(errlog.LevelNotice, 0, "reconfigured: %d servers, %d listening sockets", len(p.servers), len(socks))
	return nil
}

// startOnly says which main-context settings of cfg a reload cannot apply
// to the running process, one warning each: the event loops and their
// pinning are made at start (gnet's loop count is fixed), where NGINX
// would start workers of the new count. A binary upgrade starts a process
// that reads them. loops and affinity are what the process runs with.
func startOnly(cfg *conf.Config, loops int, affinity conf.CPUAffinity) []string {
	var out []string
	at := func(name string) string {
		if pos := cfg.Main.Pos[name]; !pos.IsZero() {
			return " in " + pos.String()
		}
		return ""
	}
	if want := cfg.Main.Loops(); want != loops {
		out = append(out, fmt.Sprintf("\"worker_processes\" is %d%s, but a reload keeps the %d event loop(s) this process started with: a binary upgrade (SIGUSR2) or a restart applies it",
			want, at("worker_processes"), loops))
	}
	if a := cfg.Main.CPUAffinity; a.Auto != affinity.Auto || !slices.Equal(a.Masks, affinity.Masks) {
		out = append(out, fmt.Sprintf("\"worker_cpu_affinity\" changed%s, but a reload keeps the event loops pinned as they were at start: a binary upgrade (SIGUSR2) or a restart applies it",
			at("worker_cpu_affinity")))
	}
	return out
}

// reconfigureErrorLog points the error log at the new configuration's
// error_log, when it changed.
func (e *Engine) reconfigureErrorLog(cfg *conf.Config) error {
	path, lv, pos := errorLogOf(cfg)
	if cur := e.log.Path(); cur == path || (cur == "" && path == "stderr") {
		e.log.SetLevel(lv)
		return nil
	}
	if err := e.log.Reconfigure(path, lv); err != nil {
		return conf.Errorf(pos, "%v", err)
	}
	return nil
}

// Reopen reopens the error log and every access log by their paths, as
// SIGUSR1 does for NGINX (logrotate renames the files, then signals).
// Buffered access-log lines go to the old file first; nothing is lost or
// written twice. Safe from any goroutine.
func (e *Engine) Reopen() error {
	err := e.files.Reopen()
	if kerr := e.keyLogs.Reopen(); err == nil {
		err = kerr
	}
	if lerr := e.log.Reopen(); err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("reopening logs: %w", err)
	}
	e.log.Logf(errlog.LevelNotice, 0, "reopened the logs")
	return nil
}
