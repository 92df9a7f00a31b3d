package engine

// Unix domain sockets: `listen unix:/path` for clients, `server
// unix:/path` and `proxy_pass unix:/path` for upstreams. The socket file
// of a listener is created at bind (a stale one, which no process accepts
// on, is removed first), chmod'ed 0666 as NGINX does, kept across
// reloads that keep the listen line, deleted when a reload drops the line
// and when the engine stops (net.UnixListener unlinks on Close) — but not
// by a process that handed the socket to a new binary (tableflip turns
// unlink-on-close off, and removes the file itself on a stop without an
// upgrade). The listener's file is package listen's (Open, Drop); this
// file holds what the engine checks and prints.

import (
	"fmt"
	"net"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/pool"
)

// unixText is a unix domain address as NGINX prints one: "unix:" and the
// path; "unix:" alone for an unnamed socket (a client that did not bind,
// which Go names "@").
func unixText(a *net.UnixAddr) string {
	if a == nil || a.Name == "" || a.Name == "@" {
		return "unix:"
	}
	return "unix:" + a.Name
}

// checkListenNetwork refuses the listen parameters that are TCP's on a
// unix domain socket, where they would do nothing or fail per client.
func checkListenNetwork(l conf.Listen) error {
	switch l.Network {
	case "", "tcp":
		return nil
	case "unix":
	default:
		return conf.Errorf(l.Pos, "listen on %q is not supported", l.Addr)
	}
	var bad string
	switch {
	case l.ReusePort:
		bad = "reuseport"
	case l.Deferred:
		bad = "deferred"
	case l.FastOpen != 0:
		bad = "fastopen"
	case l.KeepAlive.Mode == conf.KeepAliveOn || l.KeepAlive.Mode == conf.KeepAliveCustom:
		bad = "so_keepalive"
	}
	if bad != "" {
		return conf.Errorf(l.Pos, "\"listen %s ... %s\": %s is for TCP sockets, not unix domain sockets", l.Addr, bad, bad)
	}
	return nil
}

// checkUnixUpstream refuses what cannot work with a unix domain socket
// upstream of the server sc: verifying its certificate with no
// proxy_ssl_name (a path is no host name; NGINX would fail every
// handshake). Runs while a plan is built.
func checkUnixUpstream(sc *conf.Server, g *pool.Group) error {
	ssl := &sc.Proxy.SSL
	if !g.HasUnix() || !ssl.Enabled || !ssl.Verify || ssl.Name != "" {
		return nil
	}
	pos, ok := ssl.Pos["proxy_ssl_verify"]
	if !ok {
		pos = sc.Pos
	}
	what := fmt.Sprintf("upstream %q", g.Name())
	for _, p := range g.Peers() {
		if p.Path != "" && p.Name != g.Name() {
			what = fmt.Sprintf("server %q in upstream %q", p.Name, g.Name())
			break
		}
	}
	return conf.Errorf(pos, "\"proxy_ssl_verify on\" needs \"proxy_ssl_name\" for the unix domain socket %s: a path is no host name to verify the certificate against", what)
}
