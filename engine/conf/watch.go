package conf

import (
	"strings"
	"time"
)

// minWatchInterval is the shortest proxy_ssl_watch interval: polling
// faster buys nothing for files that change a few times a year and costs a
// stat per file per interval.
const minWatchInterval = time.Second

// mergeWatch is `proxy_ssl_watch off | time`, tlsrelay's own directive.
func mergeWatch(p *parser, m *mergeable, d *directive) error {
	if strings.EqualFold(d.args[0], "off") {
		m.Proxy.SSL.Watch = 0
		return nil
	}
	t, ok := ParseDuration(d.args[0], false)
	if !ok {
		return Errorf(d.pos, "invalid value %q in %q directive, it must be \"off\" or a time such as 5s", d.args[0], d.name)
	}
	if t < minWatchInterval {
		return Errorf(d.pos, "%q interval %q is below the minimum of 1s (use \"off\" to disable it)", d.name, d.args[0])
	}
	m.Proxy.SSL.Watch = t
	return nil
}

// watchProblem returns why proxy_ssl_watch cannot work with s, or "" when
// s has files to watch: a client certificate named without variables, or
// trusted certificates (read only with proxy_ssl_verify on, as NGINX).
func watchProblem(s *SSL) string {
	if !s.Enabled {
		return `"proxy_ssl_watch" requires "proxy_ssl on"`
	}
	if s.Certificate != "" && !hasVariables(s.Certificate) && !hasVariables(s.CertificateKey) {
		return ""
	}
	if s.Verify && s.TrustedCertificate != "" {
		return ""
	}
	return `"proxy_ssl_watch" has nothing to watch: no "proxy_ssl_certificate" (without variables), ` +
		`and no "proxy_ssl_trusted_certificate" with "proxy_ssl_verify on"`
}

// checkWatch refuses proxy_ssl_watch where it cannot work. Written in a
// server block, it must work there. Written at stream level, it applies to
// the servers that inherit it and can use it, and is cleared (0) in the
// others; it is refused only when none of the servers that inherit it can.
func (p *parser) checkWatch() error {
	st := p.cfg.Stream
	inheriting, usable := 0, 0
	why := ""
	for _, ss := range p.servers {
		s := &ss.srv.Proxy.SSL
		if s.Watch == 0 {
			continue
		}
		problem := watchProblem(s)
		own := len(ss.lvl.set["proxy_ssl_watch"]) > 0
		switch {
		case own && problem != "":
			return Errorf(s.Pos["proxy_ssl_watch"], "%s", problem)
		case own:
		case problem == "":
			inheriting++
			usable++
		default:
			inheriting++
			if why == "" {
				why = problem
			}
			s.Watch = 0
			delete(s.Pos, "proxy_ssl_watch")
		}
	}
	if inheriting > 0 && usable == 0 {
		return Errorf(st.Proxy.SSL.Pos["proxy_ssl_watch"], "%s", why)
	}
	return nil
}

// formatWatch prints proxy_ssl_watch for -T.
func formatWatch(w *confWriter, at *formatAt) {
	if t := at.lvl.Proxy.SSL.Watch; t > 0 {
		w.line("proxy_ssl_watch", formatDuration(t))
	} else {
		w.line("proxy_ssl_watch", "off")
	}
}
