package conf

import (
	"strconv"
	"strings"
	"time"
)

// Bounds and default of proxy_ssl_prewarm.
const (
	// MaxPrewarm is the most connections proxy_ssl_prewarm keeps per
	// peer: each is a socket and a TLS connection held open at the
	// upstream.
	MaxPrewarm = 64
	// DefaultPrewarmMaxIdle is max_idle's default.
	DefaultPrewarmMaxIdle = 30 * time.Second
	// minPrewarmMaxIdle and maxPrewarmMaxIdle bound max_idle: below a
	// second connections churn for nothing; upstreams rarely keep an idle
	// connection open for an hour.
	minPrewarmMaxIdle = time.Second
	maxPrewarmMaxIdle = time.Hour
)

// Prewarm is proxy_ssl_prewarm (tlsrelay's own directive).
type Prewarm struct {
	// Size is how many connections with their TLS handshake done are kept
	// ready per upstream peer; 0: off (the default).
	Size int
	// MaxIdle is how long a ready connection may wait for a session
	// before it is closed and replaced (max_idle=, default 30s).
	MaxIdle time.Duration
}

// mergePrewarm is `proxy_ssl_prewarm off | number [max_idle=time]`.
func mergePrewarm(p *parser, m *mergeable, d *directive) error {
	pw := Prewarm{MaxIdle: DefaultPrewarmMaxIdle}
	if strings.EqualFold(d.args[0], "off") {
		if len(d.args) > 1 {
			return Errorf(d.pos, "invalid parameter %q in %q directive", d.args[1], d.name)
		}
		m.Proxy.SSL.Prewarm = pw
		return nil
	}
	n, err := strconv.Atoi(d.args[0])
	if err != nil || n < 0 {
		return Errorf(d.pos, "invalid value %q in %q directive, it must be \"off\" or a number of connections", d.args[0], d.name)
	}
	if n > MaxPrewarm {
		return Errorf(d.pos, "%q value %d is above the maximum of %d", d.name, n, MaxPrewarm)
	}
	pw.Size = n
	for _, a := range d.args[1:] {
		v, ok := strings.CutPrefix(a, "max_idle=")
		if !ok {
			return Errorf(d.pos, "invalid parameter %q in %q directive", a, d.name)
		}
		t, ok := ParseDuration(v, false)
		if !ok {
			return Errorf(d.pos, "invalid max_idle value %q in %q directive", v, d.name)
		}
		if t < minPrewarmMaxIdle || t > maxPrewarmMaxIdle {
			return Errorf(d.pos, "%q max_idle %q is out of range (1s to 1h)", d.name, v)
		}
		pw.MaxIdle = t
	}
	m.Proxy.SSL.Prewarm = pw
	return nil
}

// prewarmProblem returns why proxy_ssl_prewarm cannot work in srv, or "".
// A pre-warmed connection is made before its session exists, so nothing
// of what it sends may depend on the session: no PROXY header (it names the
// client), no name or certificate chosen by variables.
func prewarmProblem(srv *Server) string {
	s := &srv.Proxy.SSL
	switch {
	case !s.Enabled:
		return `"proxy_ssl_prewarm" requires "proxy_ssl on"`
	case srv.Proxy.ProxyProtocol != 0:
		return `"proxy_ssl_prewarm" cannot be used with "proxy_protocol on": the PROXY header names the client, ` +
			`which a pre-warmed connection does not have yet`
	case hasVariables(s.Name):
		return `"proxy_ssl_prewarm" cannot be used with variables in "proxy_ssl_name": the handshake would depend on the session`
	case hasVariables(s.Certificate) || hasVariables(s.CertificateKey):
		return `"proxy_ssl_prewarm" cannot be used with variables in "proxy_ssl_certificate": the handshake would depend on the session`
	case srv.ProxyPassVariables():
		return `"proxy_ssl_prewarm" cannot be used with variables in "proxy_pass"`
	case resolves(srv.Upstream):
		return `"proxy_ssl_prewarm" cannot be used with an upstream that has "resolve" servers: its addresses change at run time`
	}
	return ""
}

// resolves reports whether u has a server re-resolved at run time.
func resolves(u *Upstream) bool {
	if u == nil {
		return false
	}
	for _, us := range u.Servers {
		if us.Resolve {
			return true
		}
	}
	return false
}

// checkPrewarm refuses proxy_ssl_prewarm where it cannot work. Servers with
// proxy_ssl off that inherit it from stream level ignore it (it is cleared,
// as every proxy_ssl_* directive means nothing there), and it is refused
// only when none of the servers that inherit it has proxy_ssl on. Every
// other conflict is refused at the directive's position, naming the server
// when the directive is inherited.
func (p *parser) checkPrewarm() error {
	st := p.cfg.Stream
	inheriting, usable := 0, 0
	for _, ss := range p.servers {
		srv := ss.srv
		s := &srv.Proxy.SSL
		if s.Prewarm.Size == 0 {
			continue
		}
		own := len(ss.lvl.set["proxy_ssl_prewarm"]) > 0
		if !own {
			inheriting++
		}
		problem := prewarmProblem(srv)
		switch {
		case problem == "":
			if !own {
				usable++
			}
		case own:
			return Errorf(s.Pos["proxy_ssl_prewarm"], "%s", problem)
		case !s.Enabled:
			s.Prewarm = Prewarm{MaxIdle: DefaultPrewarmMaxIdle}
			delete(s.Pos, "proxy_ssl_prewarm")
		default:
			return Errorf(s.Pos["proxy_ssl_prewarm"], "%s (inherited by the server at %s)", problem, srv.Pos)
		}
	}
	if inheriting > 0 && usable == 0 {
		return Errorf(st.Proxy.SSL.Pos["proxy_ssl_prewarm"], `"proxy_ssl_prewarm" requires "proxy_ssl on"`)
	}
	return nil
}

// formatPrewarm is proxy_ssl_prewarm's -T form.
func formatPrewarm(pw Prewarm) []string {
	if pw.Size == 0 {
		return []string{"off"}
	}
	args := []string{strconv.Itoa(pw.Size)}
	if pw.MaxIdle != DefaultPrewarmMaxIdle {
		args = append(args, "max_idle="+formatDuration(pw.MaxIdle))
	}
	return args
}
