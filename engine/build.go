package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/listen"
	"github.com/tlsrelay/tlsrelay/engine/logfile"
	"github.com/tlsrelay/tlsrelay/pool"
	"github.com/tlsrelay/tlsrelay/pool/dial"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// server is the runtime form of one server{} block. It is immutable once
// built and shared by every loop.
type server struct {
	// alpnHinted is when alpnHint last warned (unix nanoseconds).
	alpnHinted atomic.Int64
	conf       *conf.Server
	group      *pool.Group
	policy     *tlsbridge.Policy // nil when proxy_ssl is off
	// listen addresses of this block, as "ip:port".
	listen []string

	connectTimeout time.Duration
	idleTimeout    time.Duration
	nextUpstream   bool
	tries          int
	nextTimeout    time.Duration
	proxyProtocol  int
	// nameVars: proxy_ssl_name uses variables, so each session passes
	// its addresses to the policy.
	nameVars bool
	// name is how logs name the block: its first listen address.
	name string
	// accessLogs are the block's access_log directives, opened.
	accessLogs []accessLog
	// listenOpts are the listen directives (socket options per accepted
	// client).
	listenOpts []conf.Listen
	// highWater and lowWater bound what a session queues toward one
	// socket: 32 × proxy_buffer_size (16k: 512 KiB), clamped to
	// 64 KiB..8 MiB, and a quarter of it.
	highWater, lowWater int
	// uploadRate and downloadRate are proxy_upload_rate and
	// proxy_download_rate in bytes per second; 0: unlimited.
	uploadRate, downloadRate int64
	// sock are the upstream socket's options.
	sock dial.SocketOptions
	// hash is the upstream block's hash key, compiled; nil: the block
	// does not balance by hash.
	hash *hashTemplate
	// bindVar is proxy_bind's address when it holds variables, compiled
	// (evaluated per session, bindLocal); nil: none, or a fixed address
	// in sock.Bind.
	bindVar *hashTemplate
	// plan is the plan the server belongs to.
	plan *plan
	// limits are the zones of conf.LimitConn, index for index.
	limits []*connZone
	// halfClose is proxy_half_close: each direction ends on its own (a
	// peer's FIN is passed on as a FIN, and the other direction is
	// relayed until it ends too).
	halfClose bool
	// warm holds the block's pre-warmed upstream connections
	// (proxy_ssl_prewarm); nil: off.
	warm *dial.Warm
	// pass is proxy_pass with variables (passtarget.go); group is nil
	// then. Nil: proxy_pass names group.
	pass *passVar
}

// build loads and checks everything cfg describes without binding a port.
// resolve resolves upstream host names (nil: the system resolver).
// openLogs opens the access logs (Run); Check leaves files alone.
func build(cfg *conf.Config, openLogs bool, resolve func(ctx context.Context, host string) ([]netip.Addr, error)) (*plan, error) {
	env := planEnv{resolve: resolve}
	if openLogs {
		env.files = logfile.NewFiles()
	}
	return buildPlan(cfg, env)
}

// buildPlan is build with what a reload carries over. On error nothing it
// opened stays open.
func buildPlan(cfg *conf.Config, env planEnv) (_ *plan, err error) {
	resolve := env.resolve
	openLogs := env.files != nil
	p := &plan{cfg: cfg, logs: newLogSet(env.files), groups: map[string]*pool.Group{}, zones: map[string]*connZone{},
		workerConns: cfg.Main.ConnectionsPerLoop(listen.NofileLimit())}
	if env.keyLogs == nil {
		p.ownKeyLogs = tlsbridge.NewKeyLogFiles()
		env.keyLogs = p.ownKeyLogs
	}
	if env.prev != nil {
		p.store = env.prev.store
	} else {
		p.store = tlsbridge.NewSessionStore(tlsbridge.SessionStoreOptions{})
	}
	if cfg.Stream == nil {
		return p, nil
	}
	defer func() {
		if err != nil {
			p.free()
		}
	}()
	groups := map[*conf.Upstream]*pool.Group{}
	p.vars = compileVars(cfg.Stream)
	p.logs.vars = p.vars
	groupOf := func(u *conf.Upstream) (*pool.Group, error) {
		if g, ok := groups[u]; ok {
			return g, nil
		}
		g, err := newGroup(u, resolve)
		if err != nil {
			return nil, err
		}
		// A reload keeps an unchanged group whole (health,
		// connections, weights, counters); a changed one inherits the
		// state of the peers that stayed.
		if env.prev != nil {
			if old := env.prev.groups[g.Name()]; old != nil {
				if g.SameAs(old) {
					g = old
				} else {
					g.Inherit(old)
				}
			}
		}
		groups[u] = g
		p.groups[g.Name()] = g
		if g.Resolves() {
			rc, err := resolverConfig(u, cfg.Stream, resolve)
			if err != nil {
				return nil, err
			}
			p.resolvers = append(p.resolvers, groupResolver{g: g, cfg: rc})
		}
		return g, nil
	}
	if err := p.buildNamed(cfg.Stream, groupOf); err != nil {
		return nil, err
	}
	for _, sc := range cfg.Stream.Servers {
		if err := checkSupported(sc, p.vars); err != nil {
			return nil, err
		}
		s := &server{
			plan:           p,
			conf:           sc,
			connectTimeout: sc.Proxy.ConnectTimeout,
			idleTimeout:    sc.Proxy.Timeout,
			nextUpstream:   sc.Proxy.NextUpstream,
			tries:          sc.Proxy.NextUpstreamTries,
			nextTimeout:    sc.Proxy.NextUpstreamTimeout,
			proxyProtocol:  sc.Proxy.ProxyProtocol,
			halfClose:      sc.Proxy.HalfClose,
		}
		for _, l := range sc.Listen {
			p.listens++
			s.listen = append(s.listen, l.Addr)
			s.listenOpts = append(s.listenOpts, l)
		}
		s.highWater = clamp(sc.Proxy.BufferSize*32, 64<<10, 8<<20)
		s.lowWater = s.highWater / 4
		s.uploadRate, s.downloadRate = sc.Proxy.UploadRate, sc.Proxy.DownloadRate
		s.sock = dial.SocketOptions{
			KeepAlive: sc.Proxy.SocketKeepalive,
			Rcvbuf:    int(sc.Proxy.SocketRcvbuf),
			Sndbuf:    int(sc.Proxy.SocketSndbuf),
			NoDelay:   sc.Core.TCPNoDelay,
		}
		if b := sc.Proxy.Bind; b != nil && b.Template != nil {
			s.bindVar, s.sock.Transparent = compileHashKey(b.Template, p.vars), b.Transparent
		} else if b != nil {
			ip, err := netip.ParseAddr(b.Addr)
			if err != nil {
				return nil, conf.Errorf(sc.Proxy.Pos["proxy_bind"], "invalid proxy_bind address %q", b.Addr)
			}
			s.sock.Bind, s.sock.Transparent = ip, b.Transparent
		}
		if len(s.listen) > 0 {
			s.name = s.listen[0]
		}
		if sc.ProxyPassVariables() {
			pv, err := p.newPassVar(sc, resolve, env.nameStats)
			if err != nil {
				return nil, err
			}
			s.pass = pv
		} else {
			g, err := groupOf(sc.Upstream)
			if err != nil {
				return nil, err
			}
			s.group = g
			if err := checkUnixUpstream(sc, g); err != nil {
				return nil, err
			}
		}
		for _, l := range sc.LimitConn {
			z := p.zones[l.Zone]
			if z == nil {
				zc := cfg.Stream.LimitConnZones[l.Zone]
				if env.prev != nil {
					if old := env.prev.zones[l.Zone]; old != nil && old.text == zc.Key {
						z = old // its counts are of sessions still open
					}
				}
				if z == nil {
					z = newConnZone(zc)
				}
				p.zones[l.Zone] = z
			}
			s.limits = append(s.limits, z)
		}
		if u := sc.Upstream; u != nil && u.Hash != nil {
			s.hash = compileHashKey(u.Hash, p.vars)
		}
		if sc.Proxy.SSL.Enabled {
			pol, err := newPolicy(&sc.Proxy.SSL, sc.Pos, p.store, env.keyLogs)
			if err != nil {
				return nil, err
			}
			s.policy = pol
			s.nameVars = strings.Contains(sc.Proxy.SSL.Name, "$")
			for _, w := range pol.Warnings() {
				// Servers that inherit one stream-level directive share
				// its position: say it once.
				if w := fmt.Sprintf("%s in %s", w, warningPos(w, &sc.Proxy.SSL, sc.Pos)); !slices.Contains(p.warnings, w) {
					p.warnings = append(p.warnings, w)
				}
			}
		}
		s.warm = s.newWarm()
		if openLogs {
			als, err := p.logs.open(cfg, sc.AccessLogs)
			if err != nil {
				return nil, err
			}
			s.accessLogs = als
		}
		p.servers = append(p.servers, s)
	}
	return p, nil
}

// newGroup builds the pool group of an upstream block (or implicit group).
func newGroup(u *conf.Upstream, resolve func(ctx context.Context, host string) ([]netip.Addr, error)) (*pool.Group, error) {
	gc := pool.GroupConfig{
		Name:     u.Name,
		Implicit: u.Implicit,
		Balancer: pool.BalancerConfig{
			Method: u.Method, Key: u.HashKey, Consistent: u.Consistent, Two: u.RandomTwo,
			LeastTime: u.LeastTime, Inflight: u.LeastTimeInflight,
		},
	}
	for _, us := range u.Servers {
		addr := net.JoinHostPort(us.Host, strconv.Itoa(us.Port))
		if us.Service != "" {
			addr = us.Host
		}
		if us.Unix {
			addr = "unix:" + us.Host
		}
		gc.Servers = append(gc.Servers, pool.ServerConfig{
			Addr:        addr,
			Resolve:     us.Resolve,
			Service:     us.Service,
			Weight:      us.Weight,
			MaxFails:    us.MaxFails,
			MaxConns:    us.MaxConns,
			FailTimeout: us.FailTimeout,
			Backup:      us.Backup,
			Down:        us.Down,
		})
	}
	g, err := pool.NewGroup(gc, resolve)
	if err != nil {
		return nil, conf.Errorf(u.Pos, "%v", err)
	}
	return g, nil
}

// newPolicy builds a server's upstream TLS policy; errors carry the
// position of the directive most likely at fault.
func newPolicy(ssl *conf.SSL, fallback conf.Pos, store *tlsbridge.SessionStore, keyLogs *tlsbridge.KeyLogFiles) (*tlsbridge.Policy, error) {
	pc := tlsbridge.PolicyConfig{
		Certificate:        ssl.Certificate,
		CertificateKey:     ssl.CertificateKey,
		PasswordFile:       ssl.PasswordFile,
		Protocols:          ssl.Protocols,
		Ciphers:            ssl.Ciphers,
		Name:               ssl.Name,
		ServerName:         ssl.ServerName,
		Verify:             ssl.Verify,
		VerifyDepth:        ssl.VerifyDepth,
		TrustedCertificate: ssl.TrustedCertificate,
		CRL:                ssl.CRL,
		SessionReuse:       ssl.SessionReuse,
		ALPN:               ssl.ALPN,
		Identities:         ssl.Identities,
		KeyLog:             ssl.KeyLog,
		KeyLogFiles:        keyLogs,
	}
	for _, cc := range ssl.ConfCommands {
		pc.ConfCommands = append(pc.ConfCommands, tlsbridge.ConfCommand{Name: cc.Name, Value: cc.Value})
	}
	// The store also counts handshakes when session reuse is off.
	pol, err := tlsbridge.NewPolicy(pc, store)
	if err != nil {
		pos := fallback
		if pp, ok := ssl.Pos["proxy_ssl"]; ok {
			pos = pp
		}
		var ce *tlsbridge.ConfigError
		if errors.As(err, &ce) {
			if pp, ok := ssl.Pos[ce.Directive]; ok {
				pos = pp
			}
		}
		return nil, conf.Errorf(pos, "%v", err)
	}
	return pol, nil
}

// tlsConfig returns the TLS configuration to dial p with for a session
// whose local and remote addresses are given.
func (s *server) tlsConfig(p *pool.Peer, remote, local net.Addr, full bool) (*tls.Config, error) {
	t, v := s.target(p, remote, local)
	if full {
		return s.policy.ConfigWithoutResumption(t, v)
	}
	return s.policy.ClientConfig(t, v)
}

// target describes peer p and the session's variables to the TLS policy;
// it does not allocate (the peer's address text is made once, with the
// peer, which DNS re-resolution may add at any time).
func (s *server) target(p *pool.Peer, remote, local net.Addr) (tlsbridge.Target, tlsbridge.Vars) {
	t := tlsbridge.Target{Addr: p.String(), Host: p.Host}
	var v tlsbridge.Vars
	if s.nameVars {
		v.RemoteAddr = hostOf(remote)
		v.ServerAddr = hostOf(local)
		v.ServerPort = portOf(local)
	}
	return t, v
}

// hostOf is an address's host as $remote_addr and $server_addr show it:
// the IP, or "unix:" and the path for a unix domain socket ("unix:" alone
// for an unnamed client, as NGINX).
func hostOf(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.String()
	case *net.UnixAddr:
		return unixText(a)
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// portOf is an address's port ($remote_port, $server_port); "" for a
// unix domain socket.
func portOf(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return strconv.Itoa(a.Port)
	case *net.UnixAddr:
		return ""
	}
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

// warningPos points a policy warning at the directive it is about: the one
// it names, or proxy_ssl_protocols for a protocol version.
func warningPos(w string, ssl *conf.SSL, fallback conf.Pos) conf.Pos {
	d := ""
	if strings.HasPrefix(w, "proxy_ssl_") {
		d, _, _ = strings.Cut(w, " ")
	} else if strings.HasPrefix(w, "TLSv1") {
		d = "proxy_ssl_protocols"
	}
	if pos, ok := ssl.Pos[d]; ok {
		return pos
	}
	if pos, ok := ssl.Pos["proxy_ssl"]; ok {
		return pos
	}
	return fallback
}

func clamp(v, lo, hi int64) int {
	if v < lo {
		return int(lo)
	}
	if v > hi {
		return int(hi)
	}
	return int(v)
}

// checkSupported refuses, with the directive's position, settings the
// configuration language accepts (they are NGINX's) but the engine cannot
// honour: silently ignoring them would change what a session does.
func checkSupported(sc *conf.Server, vars *sessionVars) error {
	// proxy_pass's value and proxy_bind's address are evaluated when
	// the session starts (passTarget, bindLocal): the client's and the
	// listener's addresses and ports are known then, and map and split
	// variables of them.
	if t := sc.ProxyPassTemplate; t != nil {
		if name := vars.unknownAtStart(t); name != "" {
			return conf.Errorf(sc.ProxyPassPos, "proxy_pass with the \"$%s\" variable is not supported", name)
		}
	}
	if b := sc.Proxy.Bind; b != nil && b.Template != nil {
		if name := vars.unknownAtStart(b.Template); name != "" {
			return conf.Errorf(sc.Proxy.Pos["proxy_bind"], "proxy_bind with the \"$%s\" variable is not supported", name)
		}
		if sc.Proxy.SSL.Prewarm.Size > 0 {
			// A ready connection was bound before its session, and so
			// before its address was known.
			return conf.Errorf(sc.Proxy.SSL.Pos["proxy_ssl_prewarm"], "proxy_ssl_prewarm cannot be used with proxy_bind variables")
		}
	}
	for _, l := range sc.Listen {
		if err := checkListenNetwork(l); err != nil {
			return err
		}
	}
	return nil
}
