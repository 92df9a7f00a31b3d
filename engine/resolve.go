package engine

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/errlog"
	"github.com/tlsrelay/tlsrelay/pool"
)

// DNS re-resolution (`server NAME resolve`, `service=`): one
// pool.Resolver per group that has such servers, for the plan's lifetime,
// started and stopped as the health checkers are (health.go). A group a
// reload keeps whole keeps its resolved addresses, and the new plan's
// resolver asks again when the old one would have.

// groupResolver is a group with `resolve` servers and the resolver in
// force for it.
type groupResolver struct {
	g   *pool.Group
	cfg pool.ResolverConfig
}

// resolverConfig returns the resolver of upstream u: its own resolver and
// resolver_timeout, or the stream level's (server-level resolvers are for
// proxy_pass, as in NGINX). Name servers given by name are resolved now
// with resolve (nil: the system resolver), as NGINX does at load.
func resolverConfig(u *conf.Upstream, st *conf.Stream, resolve func(ctx context.Context, host string) ([]netip.Addr, error)) (pool.ResolverConfig, error) {
	r := u.Resolver
	if r == nil {
		r = st.Core.Resolver
	}
	timeout := u.ResolverTimeout
	if timeout == 0 {
		timeout = st.Core.ResolverTimeout
	}
	if r == nil {
		// The configuration layer refuses this already.
		return pool.ResolverConfig{}, conf.Errorf(u.Pos, "no resolver defined to resolve names at run time in upstream %q", u.Name)
	}
	return resolverConfigOf(r, timeout, resolve)
}

// resolverConfigOf is the pool's form of resolver r with timeout
// (resolver_timeout). Name servers given by name are resolved now with
// resolve (nil: the system resolver), as NGINX does at load.
func resolverConfigOf(r *conf.Resolver, timeout time.Duration, resolve func(ctx context.Context, host string) ([]netip.Addr, error)) (pool.ResolverConfig, error) {
	rc := pool.ResolverConfig{Valid: r.Valid, IPv4: r.IPv4, IPv6: r.IPv6, Timeout: timeout}
	if resolve == nil {
		resolve = pool.SystemResolve
	}
	for _, a := range r.Addrs {
		host, port, err := nameServerAddr(a)
		if err != nil {
			return rc, conf.Errorf(r.Pos, "invalid resolver address %q: %v", a, err)
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			rc.Servers = append(rc.Servers, netip.AddrPortFrom(ip, port).String())
			continue
		}
		ips, err := resolve(context.Background(), host)
		if err != nil || len(ips) == 0 {
			return rc, conf.Errorf(r.Pos, "host not found in resolver %q", a)
		}
		for _, ip := range ips {
			rc.Servers = append(rc.Servers, netip.AddrPortFrom(ip.Unmap(), port).String())
		}
	}
	return rc, nil
}

// nameServerAddr splits a resolver address, "host", "host:port", "[v6]"
// or "[v6]:port"; the port defaults to 53.
func nameServerAddr(a string) (host string, port uint16, err error) {
	port = 53
	h, p, hasPort := a, "", false
	switch {
	case strings.HasPrefix(a, "["):
		end := strings.IndexByte(a, ']')
		if end < 0 {
			return "", 0, fmt.Errorf("missing \"]\"")
		}
		h = a[1:end]
		if rest := a[end+1:]; rest != "" {
			if p, hasPort = strings.CutPrefix(rest, ":"); !hasPort {
				return "", 0, fmt.Errorf("junk after \"]\"")
			}
		}
	case strings.Count(a, ":") == 1:
		h, p, hasPort = strings.Cut(a, ":")
	}
	if hasPort {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return "", 0, fmt.Errorf("invalid port %q", p)
		}
		port = uint16(n)
	}
	if h == "" {
		return "", 0, fmt.Errorf("no host")
	}
	return h, port, nil
}

// startResolvers starts the plan's resolvers; they end with ctx, which
// plan.stop cancels when the plan is retired or freed. Runs in
// plan.start.
func (p *plan) startResolvers(ctx context.Context, log *errlog.Log) {
	for _, gr := range p.resolvers {
		cfg := gr.cfg
		cfg.Logf = func(failed bool, format string, args ...any) { logResolver(log, failed, format, args...) }
		go pool.NewResolver(gr.g, cfg).Run(ctx)
	}
}

// logResolver writes a resolver's line to log (nil: nowhere): failures
// at error, changes of addresses at info. Any goroutine.
func logResolver(log *errlog.Log, failed bool, format string, args ...any) {
	if log == nil {
		return
	}
	lv := errlog.LevelInfo
	if failed {
		lv = errlog.LevelError
	}
	log.Logf(lv, 0, format, args...)
}
