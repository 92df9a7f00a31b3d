package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/pool"
)

// `proxy_pass` with variables, as NGINX's stream proxy does it
// (ngx_stream_proxy_eval and ngx_stream_proxy_handler): each session
// evaluates the value when it starts, and the value names
//
//   - an upstream group: an upstream block's name without a port, or the
//     address of another server's literal `proxy_pass host:port` (NGINX
//     keeps an implicit group for it), compared without regard to case;
//     the session walks that group with its shared state, its balancer
//     and its hash key;
//   - else an address, "ip:port" or "unix:/path": a group of that one
//     peer;
//   - else "name:port": the name is resolved with the `resolver` in force
//     for the server block, on the dial worker, so the loop never waits
//     for DNS, and its addresses make a group.
//
// A value that cannot be read, has no port, names a name without a
// resolver, or whose name cannot be resolved ends the session with status
// 500 and NGINX's error line. What differs from NGINX: the groups made
// for an address or a name are kept, by value, while its answer holds (at
// most maxDynGroups of them), so sessions that name the same address
// share its round robin and its max_fails (NGINX makes each session a
// group of its own, so its round robin starts afresh each time); they are
// not in the status page, the metrics' upstream labels or the runtime API.
// A reload starts with none kept and no answer kept (the plan's Names are
// new), as NGINX's new cycle starts its resolver afresh.

// maxDynGroups bounds the groups kept for addresses and names.
const maxDynGroups = 1024

// passVar is a server block's proxy_pass with variables.
type passVar struct {
	tmpl *hashTemplate
	// names resolves host names; nil: no resolver is in force, and a
	// name ends its session ("no resolver defined to resolve").
	names *pool.Names
}

// upstreamKey names a group a value may select: an upstream block by its
// name (port 0) or an implicit group by its host and port; host is lower
// case.
type upstreamKey struct {
	host string
	port int
}

// namedGroup is a group a value may select by name, with its block's hash
// key compiled (nil: not balanced by hash).
type namedGroup struct {
	g    *pool.Group
	hash *hashTemplate
}

// dynGroups are the groups made for the addresses and names values gave,
// shared by a plan's sessions. Safe for concurrent use: the loops use it
// for addresses and answers already kept, the dial workers after a
// lookup.
type dynGroups struct {
	mu sync.Mutex
	m  map[string]*dynGroup
}

// dynGroup is one kept group and the addresses it was made of.
type dynGroup struct {
	g     *pool.Group
	addrs []netip.Addr
	used  time.Time
}

// get returns the group for value (the evaluated proxy_pass, which keys
// it, read as a), made of addrs with a's port; for a unix socket addrs is
// nil. A group kept for the same addresses is reused; new addresses
// replace it.
func (d *dynGroups) get(value string, a conf.UpstreamAddr, addrs []netip.Addr, now time.Time) (*pool.Group, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dg := d.m[value]; dg != nil && slices.Equal(dg.addrs, addrs) {
		dg.used = now
		return dg.g, nil
	}
	gc := pool.GroupConfig{Name: value, Implicit: true}
	if addrs == nil {
		gc.Servers = []pool.ServerConfig{pool.NewServerConfig(value)}
	} else {
		// One server line for the addresses: the group's peers keep the
		// host as written, the name the TLS layer verifies.
		gc.Servers = []pool.ServerConfig{pool.NewServerConfig(net.JoinHostPort(a.Host, strconv.Itoa(a.Port)))}
	}
	g, err := pool.NewGroup(gc, func(context.Context, string) ([]netip.Addr, error) { return addrs, nil })
	if err != nil {
		return nil, fmt.Errorf("making the group of %q: %w", value, err)
	}
	if len(d.m) >= maxDynGroups {
		d.evictLocked()
	}
	d.m[value] = &dynGroup{g: g, addrs: addrs, used: now}
	return g, nil
}

// evictLocked forgets the least recently used group (its sessions keep
// it). d.mu is held.
func (d *dynGroups) evictLocked() {
	var oldest string
	var at time.Time
	for v, dg := range d.m {
		if oldest == "" || dg.used.Before(at) {
			oldest, at = v, dg.used
		}
	}
	delete(d.m, oldest)
}

// errPassValue is a proxy_pass value that named nothing the dial worker
// could use (a name not resolved, a group not made): the session ends
// with 500, as in NGINX.
type errPassValue struct{ err error }

func (e *errPassValue) Error() string { return e.err.Error() }

func (e *errPassValue) Unwrap() error { return e.err }

// passTarget evaluates the server's proxy_pass for the session and starts
// its walk over the group the value names, or, for a name not resolved
// yet, gives the dial job the lookup to do first. A value that names
// nothing usable is logged and ends the session with 500. It reports
// whether the session goes on. Runs on the session's loop, before the
// dial job is submitted.
func (s *session) passTarget() bool {
	pv, p := s.srv.pass, s.srv.plan
	value := pv.tmpl.eval(s.remote, s.local, s.pp)
	fail := func(format string, args ...any) bool {
		s.e.log.Logf(errlog.LevelError, s.id, "%s while connecting to upstream, client: %s, server: %s",
			fmt.Sprintf(format, args...), hostOf(s.remote), s.srv.name)
		s.status = 500
		s.finish(metrics.ReasonUpstreamUnreachable)
		return false
	}
	a, errText := conf.ParseUpstreamAddr(value)
	if errText != "" {
		return fail("%s in upstream \"%s\"", errText, value)
	}
	if !a.Unix {
		if ng, ok := p.named[upstreamKey{host: strings.ToLower(a.Host), port: a.Port}]; ok {
			s.startWalk(ng.g, ng.hash)
			return true
		}
	}
	if a.Port == 0 && !a.Unix {
		return fail("no port in upstream \"%s\"", a.Host)
	}
	now := time.Now()
	var addrs []netip.Addr
	switch {
	case a.Unix:
	case a.IP.IsValid():
		addrs = []netip.Addr{a.IP}
	case pv.names == nil:
		return fail("no resolver defined to resolve %s", a.Host)
	default:
		cached, ok := pv.names.Cached(a.Host, now)
		if !ok {
			s.resolveOnWorker(value, a)
			return true
		}
		addrs = cached
	}
	g, err := p.dyn.get(value, a, addrs, now)
	if err != nil {
		return fail("%v", err)
	}
	s.startWalk(g, nil)
	return true
}

// startWalk starts the session's walk over g, hashing by hash's key (nil:
// g is not balanced by hash), and records g for the logs
// (dialState.group): the server's group when the session opens, or the
// one its proxy_pass value names. Runs on the loop, before the dial job
// is submitted.
func (s *session) startWalk(g *pool.Group, hash *hashTemplate) {
	key := ""
	if hash != nil {
		key = hash.eval(s.remote, s.local, s.pp)
	}
	g.InitSelection(&s.dial.sel, key, s.srv.tries, s.start)
	s.dial.group = g
}

// resolveOnWorker makes the dial job look value's host up before it
// walks: the dial worker waits for the answer (resolver_timeout at most,
// or until the client leaves), so the loop does not. Runs on the loop.
func (s *session) resolveOnWorker(value string, a conf.UpstreamAddr) {
	names, dyn := s.srv.pass.names, s.srv.plan.dyn
	s.dial.job.Prepare = func(ctx context.Context) error {
		// An error while ctx is done reads as context.Canceled
		// (dial.Job.Prepare).
		addrs, err := names.Lookup(ctx, a.Host)
		if err != nil {
			return &errPassValue{fmt.Errorf("%s could not be resolved (%w)", a.Host, err)}
		}
		g, err := dyn.get(value, a, addrs, time.Now())
		if err != nil {
			return &errPassValue{err}
		}
		// Not startWalk: the loop owns dialState.group, and a name's
		// group has no hash key.
		g.InitSelection(&s.dial.sel, "", s.srv.tries, s.start)
		return nil
	}
}

// isPassValueError reports a dial that ended because its proxy_pass
// value named nothing usable: a 500, as in NGINX.
func isPassValueError(err error) bool {
	var pe *errPassValue
	return errors.As(err, &pe)
}

// buildNamed makes, when some server block's proxy_pass has variables,
// the group of every upstream block and implicit group, which a value may
// name even if no literal proxy_pass does, and indexes them as values
// name them. Runs in buildPlan.
func (p *plan) buildNamed(st *conf.Stream, groupOf func(*conf.Upstream) (*pool.Group, error)) error {
	if !slices.ContainsFunc(st.Servers, func(sc *conf.Server) bool { return sc.ProxyPassVariables() }) {
		return nil
	}
	p.named = map[upstreamKey]namedGroup{}
	p.dyn = &dynGroups{m: map[string]*dynGroup{}}
	for _, u := range st.Upstreams {
		key := upstreamKey{host: strings.ToLower(u.Name)}
		if u.Implicit {
			us := u.Servers[0]
			if us.Unix {
				continue // NGINX matches a value's host and port only
			}
			key = upstreamKey{host: strings.ToLower(us.Host), port: us.Port}
		}
		g, err := groupOf(u)
		if err != nil {
			return err
		}
		ng := namedGroup{g: g}
		if u.Hash != nil {
			ng.hash = compileHashKey(u.Hash, p.vars)
		}
		p.named[key] = ng
	}
	return nil
}

// newPassVar compiles sc's proxy_pass with variables, with the resolver
// in force for the block (one Names per resolver and timeout, shared by
// the blocks that inherit them, counting its lookups in stats). Runs in
// buildPlan.
func (p *plan) newPassVar(sc *conf.Server, resolve func(ctx context.Context, host string) ([]netip.Addr, error), stats *pool.NameStats) (*passVar, error) {
	pv := &passVar{tmpl: compileHashKey(sc.ProxyPassTemplate, p.vars)}
	r := sc.Core.Resolver
	if r == nil {
		return pv, nil
	}
	key := namesKey{r: r, timeout: sc.Core.ResolverTimeout}
	if n := p.names[key]; n != nil {
		pv.names = n
		return pv, nil
	}
	rc, err := resolverConfigOf(r, sc.Core.ResolverTimeout, resolve)
	if err != nil {
		return nil, err
	}
	// The plan's log is set before the plan serves (Serve's start,
	// Reload before it publishes the plan).
	rc.Logf = func(failed bool, format string, args ...any) { logResolver(p.namesLog.Load(), failed, format, args...) }
	pv.names = pool.NewNames(rc, 0, stats)
	if p.names == nil {
		p.names = map[namesKey]*pool.Names{}
	}
	p.names[key] = pv.names
	return pv, nil
}

// namesKey is a resolver and its timeout, which a Names is made for.
type namesKey struct {
	r       *conf.Resolver
	timeout time.Duration
}
