package engine

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/logfile"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/pool/dial"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// A plan is one configuration built (build.go) and, once published, in
// force for the sessions that start on it. Besides its sessions it runs
// background work: a proxy_ssl_watch goroutine per policy that asks for
// one, a health checker per server block with health_check, a resolver
// per group with `resolve` servers, pre-warm refillers per server block
// with proxy_ssl_prewarm. All of it is started by one start, when the plan
// is published (Serve, or a reload's swap), and ended by stop, in up to
// three steps: stopQuiet at a graceful quit (no new session will come:
// probes, re-resolution and refills end, the ready pre-warmed connections
// close, and the groups stay as last probed and resolved for the sessions
// still connecting), stopNew when a reload retires the plan (the same, and
// a replaced plan's checks no longer hold peers out), stopAll when it is
// freed with its last session, at the end of Serve (graceful quit or hard
// stop), or after a build or reload that failed (nothing was started; a
// start after it does nothing).

// stopScope is what plan.stop ends.
type stopScope uint8

const (
	// stopQuiet ends what serves only new sessions and keeps what it
	// found: health checks end with the peers they hold out still out,
	// re-resolution ends with the addresses last resolved, pre-warm
	// refillers end and their ready connections close. A graceful quit:
	// the sessions still connecting walk the groups as they were.
	stopQuiet stopScope = iota + 1
	// stopNew is stopQuiet, and the health checks release the peers they
	// held out: a retired plan's sessions that linger need none of it,
	// and the new plan's checks decide.
	stopNew
	// stopAll ends everything start started, the certificate watchers
	// too: they keep a lingering session's next handshake (another
	// upstream, proxy_next_upstream) on the rotated files until then.
	stopAll
)

// plan is everything a configuration describes, built and checked but not
// yet serving: what Check stops at and Serve starts from.
type plan struct {
	cfg     *conf.Config
	servers []*server
	// listens is the number of listen directives, which take one of
	// each loop's worker_connections.
	listens int
	// workerConns is worker_connections in force per loop (the
	// directive's, or derived from the descriptor limit); 0: no limit.
	workerConns int
	// vars are the split_clients and map variables, for the keys,
	// proxy_bind values and log formats that name them.
	vars  *sessionVars
	store *tlsbridge.SessionStore
	// groups are the upstream groups by name, for a reload to carry over.
	groups map[string]*pool.Group
	// zones are the limit_conn zones by name, carried over likewise.
	zones    map[string]*connZone
	logs     *logSet
	warnings []string
	// resolvers re-resolve the groups with `resolve` servers
	// (resolve.go) while the plan runs.
	resolvers []groupResolver
	// named are the groups a proxy_pass value may name, dyn the groups
	// made for the addresses values gave, names the resolvers of their
	// names, namesLog where those log (passtarget.go). Nil when no
	// proxy_pass has variables.
	named    map[upstreamKey]namedGroup
	dyn      *dynGroups
	names    map[namesKey]*pool.Names
	namesLog atomic.Pointer[errlog.Log]

	// sessions counts the sessions started on this plan that have not
	// ended; once the plan is retired (a reload published another) and
	// the count is zero, what only it holds is released.
	sessions atomic.Int64
	retired  atomic.Bool
	release  sync.Once
	// ownKeyLogs is the key-log set of a plan built without the engine's
	// (Check); closed with the plan.
	ownKeyLogs *tlsbridge.KeyLogFiles

	// runMu orders start and stop: started and stopped say how far the
	// plan's background work has gone, and the fields after them are
	// set by start.
	runMu   sync.Mutex
	started bool
	stopped stopScope
	// stopWatch cancels the context of everything start started (the
	// certificate watchers'); stopServing the context of what serves
	// new sessions (health checkers', resolvers'), a child of it.
	stopWatch, stopServing context.CancelFunc
	// stopHealth ends the health checkers and releases the peers they
	// hold out; holdHealth ends them and keeps those peers out (health.go
	// sets both).
	stopHealth, holdHealth func()
	// warms are the pre-warm pools startWarm started (prewarm.go);
	// warmStopped: stopWarm ran, nothing starts any more.
	warmMu      sync.Mutex
	warms       []*dial.Warm
	warmStopped bool
}

// planEnv is what building a plan draws on besides the configuration.
type planEnv struct {
	// files opens access logs; nil: they are not opened (Check).
	files *logfile.Files
	// prev is the plan being replaced by a reload: its session store is
	// carried over, so tickets of unchanged peers and policies resume.
	prev *plan
	// resolve resolves upstream host names (nil: the system resolver).
	resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// keyLogs opens proxy_ssl_key_log files, one descriptor per path for
	// the process; nil: the plan opens its own (Check).
	keyLogs *tlsbridge.KeyLogFiles
	// nameStats counts the lookups of proxy_pass names for the process;
	// nil: the plan's own (Check).
	nameStats *pool.NameStats
}

// start starts the plan's background work: certificate watchers, health
// checkers, resolvers and pre-warm refillers (which dial through e's
// dialer). It runs once, on the goroutine that publishes the plan (Serve
// or Reload, after the dialer exists); a plan stopped before, or started
// already, starts nothing.
func (p *plan) start(e *Engine) {
	p.runMu.Lock()
	defer p.runMu.Unlock()
	if p.started || p.stopped != 0 {
		return
	}
	p.started = true
	p.namesLog.Store(e.log)
	ctx, cancel := context.WithCancel(context.Background())
	serving, stopServing := context.WithCancel(ctx)
	p.stopWatch, p.stopServing = cancel, stopServing
	p.watch(ctx, e.log)
	p.startHealth(serving, e.log)
	p.startResolvers(serving, e.log)
	p.startWarm(e)
}

// stop ends what scope says of the plan's background work (each scope
// includes the ones before it), whether or not start ran. Each part is
// stopped once however often stop is called; the stopping runs outside
// runMu, so that a loop freeing a plan never waits behind a reload
// retiring it. Any goroutine.
func (p *plan) stop(scope stopScope) {
	p.runMu.Lock()
	if scope <= p.stopped {
		p.runMu.Unlock()
		return
	}
	var ends []func()
	if p.started && p.stopped < stopQuiet {
		if scope == stopQuiet && p.holdHealth != nil {
			ends = append(ends, p.holdHealth) // before the context ends
		}
		ends = append(ends, p.stopServing)
	}
	if p.started && scope >= stopNew && p.stopped < stopNew && p.stopHealth != nil {
		ends = append(ends, p.stopHealth)
	}
	if p.stopped < stopQuiet {
		ends = append(ends, p.stopWarm)
	}
	if p.started && scope == stopAll {
		ends = append(ends, p.stopWatch)
	}
	p.stopped = scope
	p.runMu.Unlock()
	for _, end := range ends {
		end()
	}
}

// sessionStarted counts a session that started on p. Runs on a loop.
func (p *plan) sessionStarted() { p.sessions.Add(1) }

// sessionEnded counts a session of p that ended, and frees p after its
// last session once it is retired. Runs on a loop.
func (p *plan) sessionEnded() {
	if p.sessions.Add(-1) == 0 && p.retired.Load() {
		p.free()
	}
}

// retire marks p as replaced: what serves only new sessions stops now,
// and the plan frees itself with its last session (at once if it has
// none). Runs on the reloading goroutine.
func (p *plan) retire() {
	p.retired.Store(true)
	p.stop(stopNew)
	if p.sessions.Load() == 0 {
		p.free()
	}
}

// free stops everything the plan runs and releases what it holds: its
// access-log files (a file the new plan also names stays open) and its
// own key logs. Any goroutine, effective once.
func (p *plan) free() {
	p.release.Do(func() {
		p.stop(stopAll)
		for _, n := range p.names {
			n.Close()
		}
		p.logs.close()
		if p.ownKeyLogs != nil {
			p.ownKeyLogs.Close()
		}
	})
}

// watch starts a proxy_ssl_watch goroutine for each policy that asks for
// one; they end with ctx. Runs in start.
func (p *plan) watch(ctx context.Context, log *errlog.Log) {
	for _, s := range p.servers {
		if s.policy == nil || s.conf.Proxy.SSL.Watch <= 0 {
			continue
		}
		go s.policy.Watch(ctx, s.conf.Proxy.SSL.Watch, func(format string, args ...any) {
			msg := fmt.Sprintf(format, args...)
			lv := errlog.LevelNotice
			if strings.Contains(msg, "keeping the files loaded before") {
				lv = errlog.LevelError
			}
			log.Logf(lv, 0, "%s, server: %s", msg, s.name)
		})
	}
}
