package conf

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Active health checks, NGINX Plus's ngx_stream_upstream_hc_module:
// health_check in a server block, health_check_timeout at stream and server
// level, and match blocks at stream level.

// DefaultHealthCheckTimeout is health_check_timeout's default.
const DefaultHealthCheckTimeout = 5 * time.Second

// HealthCheck is a health_check directive.
type HealthCheck struct {
	Pos Pos
	// Interval between probes (interval=, 5s); Jitter the random delay
	// added to each (jitter=, 0).
	Interval, Jitter time.Duration
	// Fails (fails=, 1) consecutive failures take a peer out; Passes
	// (passes=, 1) consecutive successes bring it back.
	Fails, Passes int
	// Port probes this port instead of each peer's own (port=); 0: the
	// peer's port.
	Port int
	// Mandatory (mandatory): peers start out until their first probe
	// passes. Persistent (persistent) is accepted; it only matters to
	// NGINX Plus's run-time API.
	Mandatory, Persistent bool
	// Match names a match block (match=); "": the probe is the connection
	// and TLS handshake alone.
	Match string
}

// Match is a match block: what a probe sends once the TLS handshake is
// done, and what the answer must hold.
type Match struct {
	Name string
	Pos  Pos
	// Send is sent as is (\xHH escapes decoded); "": nothing is sent.
	Send string
	// Expect is the text the answer must start with ("": nothing is
	// read), unless Regexp is set: then the answer read within the
	// timeout must match it (expect ~ or ~*).
	Expect string
	Regexp *regexp.Regexp
}

// healthCheck parses `health_check [interval=time] [jitter=time]
// [fails=number] [passes=number] [port=number] [match=name] [mandatory
// [persistent]]` in a server block.
func (p *parser) healthCheck(d *directive, _ ctx) error {
	srv := p.server.srv
	hc := &HealthCheck{Pos: d.pos, Interval: 5 * time.Second, Fails: 1, Passes: 1}
	for _, a := range d.args {
		k, v, hasValue := strings.Cut(a, "=")
		bad := func() error { return Errorf(d.pos, "invalid parameter %q in %q directive", a, d.name) }
		var err error
		switch {
		case k == "interval" && hasValue:
			hc.Interval, err = healthTime(v, bad)
			if err == nil && hc.Interval == 0 {
				err = bad()
			}
		case k == "jitter" && hasValue:
			hc.Jitter, err = healthTime(v, bad)
		case (k == "fails" || k == "passes") && hasValue:
			n, ok := atoiInt(v)
			if !ok || n < 1 {
				return bad()
			}
			if k == "fails" {
				hc.Fails = n
			} else {
				hc.Passes = n
			}
		case k == "port" && hasValue:
			n, ok := atoiInt(v)
			if !ok || n < 1 || n > 65535 {
				return bad()
			}
			hc.Port = n
		case k == "match" && hasValue && v != "":
			hc.Match = v
		case a == "mandatory":
			hc.Mandatory = true
		case a == "persistent":
			hc.Persistent = true
		case a == "udp":
			return Errorf(d.pos, "\"udp\" parameter of %q is not supported: tlsrelay proxies TCP", d.name)
		default:
			return bad()
		}
		if err != nil {
			return err
		}
	}
	if hc.Persistent && !hc.Mandatory {
		return Errorf(d.pos, "\"persistent\" requires \"mandatory\" in %q directive", d.name)
	}
	srv.HealthCheck = hc
	return nil
}

func healthTime(v string, bad func() error) (time.Duration, error) {
	t, ok := ParseDuration(v, false)
	if !ok {
		return 0, bad()
	}
	return t, nil
}

// healthCheckTimeout parses `health_check_timeout time` at stream and
// server level; servers inherit the stream level's.
func (p *parser) healthCheckTimeout(d *directive, c ctx) error {
	t, ok := ParseDuration(d.args[0], false)
	if !ok || t == 0 {
		return Errorf(d.pos, "%q directive invalid value", d.name)
	}
	if c == ctxServer {
		srv := p.server.srv
		srv.HealthCheckTimeout, srv.HealthCheckTimeoutPos = t, d.pos
		return nil
	}
	st := p.cfg.Stream
	st.HealthCheckTimeout, st.HealthCheckTimeoutPos = t, d.pos
	return nil
}

// match parses a `match name { send string; expect string | ~ regex; }`
// block at stream level.
func (p *parser) match(d *directive, _ ctx) error {
	st := p.cfg.Stream
	name := d.args[0]
	if st.Matches == nil {
		st.Matches = map[string]*Match{}
	}
	if st.Matches[name] != nil {
		return Errorf(d.pos, "duplicate match %q", name)
	}
	m := &Match{Name: name, Pos: d.pos}
	seen := map[string]bool{}
	for _, c := range d.block {
		if c.name != "send" && c.name != "expect" {
			return Errorf(c.pos, "unknown directive %q in match block", c.name)
		}
		if c.isBlock {
			return Errorf(c.pos, "directive %q is not terminated by \";\"", c.name)
		}
		if seen[c.name] {
			return Errorf(c.pos, "%q directive is duplicate", c.name)
		}
		seen[c.name] = true
		switch {
		case c.name == "send" && len(c.args) == 1:
			m.Send = decodeHex(c.args[0])
		case c.name == "expect" && len(c.args) == 1:
			m.Expect = decodeHex(c.args[0])
		case c.name == "expect" && len(c.args) == 2 && (c.args[0] == "~" || c.args[0] == "~*"):
			expr := c.args[1]
			if c.args[0] == "~*" {
				expr = "(?i)" + expr
			}
			re, err := regexp.Compile(expr)
			if err != nil {
				return Errorf(c.pos, "invalid regex %q in %q directive: %v", c.args[1], c.name, err)
			}
			m.Regexp = re
		default:
			return Errorf(c.pos, "invalid number of arguments in %q directive", c.name)
		}
	}
	st.Matches[name] = m
	return nil
}

// decodeHex turns \xHH escapes (which NGINX Plus allows in send and
// expect) into bytes; other text is kept.
func decodeHex(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if n, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkHealthChecks is health_check's check: each health_check's match
// must exist and its upstream must be an upstream block with a zone, as
// NGINX Plus requires.
func (p *parser) checkHealthChecks() error {
	st := p.cfg.Stream
	for _, srv := range st.Servers {
		hc := srv.HealthCheck
		if hc == nil {
			continue
		}
		if hc.Match != "" && st.Matches[hc.Match] == nil {
			return Errorf(hc.Pos, "match %q not found in %q directive", hc.Match, "health_check")
		}
		if srv.ProxyPassVariables() || srv.ProxyPass == "" {
			return Errorf(hc.Pos, "\"health_check\" requires an upstream block in \"proxy_pass\"")
		}
		host, _, _ := splitHostPort(srv.ProxyPass)
		u := st.Upstream(host)
		if u == nil {
			// A literal address: NGINX's implicit group has no zone.
			return Errorf(hc.Pos, "\"health_check\" requires a \"zone\" in upstream %q", srv.ProxyPass)
		}
		if u.Zone == "" {
			return Errorf(hc.Pos, "\"health_check\" requires a \"zone\" in upstream %q", u.Name)
		}
		for _, us := range u.Servers {
			if hc.Port != 0 && us.Unix {
				return Errorf(hc.Pos, "\"health_check port=\" cannot be used with the unix domain socket server %q in upstream %q", us.Addr, u.Name)
			}
		}
	}
	return nil
}

// inheritHealthCheckTimeout is health_check_timeout's check: a server
// without its own takes the stream level's, else the default.
func (p *parser) inheritHealthCheckTimeout() error {
	st := p.cfg.Stream
	for _, srv := range st.Servers {
		if srv.HealthCheckTimeoutPos.IsZero() {
			srv.HealthCheckTimeout = st.HealthCheckTimeout
			if srv.HealthCheckTimeout == 0 {
				srv.HealthCheckTimeout = DefaultHealthCheckTimeout
			}
		}
	}
	return nil
}

// formatMatches prints the match blocks for -T, in name order, as one
// token each send and expect (bytes outside printable ASCII as \xHH).
func formatMatches(w *confWriter, at *formatAt) {
	st := at.cfg.Stream
	for _, name := range sortedKeys(st.Matches) {
		m := st.Matches[name]
		w.block("match", []string{name}, func() {
			if m.Send != "" {
				w.line("send", encodeHex(m.Send))
			}
			switch {
			case m.Regexp != nil:
				w.line("expect", "~", m.Regexp.String())
			case m.Expect != "":
				w.line("expect", encodeHex(m.Expect))
			}
		})
	}
}

// formatHealthCheck prints a server's health_check for -T.
func formatHealthCheck(w *confWriter, at *formatAt) {
	hc := at.srv.HealthCheck
	if hc == nil {
		return
	}
	args := []string{"interval=" + formatDuration(hc.Interval), "jitter=" + formatDuration(hc.Jitter),
		"fails=" + strconv.Itoa(hc.Fails), "passes=" + strconv.Itoa(hc.Passes)}
	if hc.Port != 0 {
		args = append(args, "port="+strconv.Itoa(hc.Port))
	}
	if hc.Match != "" {
		args = append(args, "match="+hc.Match)
	}
	if hc.Mandatory {
		args = append(args, "mandatory")
	}
	if hc.Persistent {
		args = append(args, "persistent")
	}
	w.line("health_check", args...)
}

// encodeHex is decodeHex's inverse for the bytes quote cannot write:
// control characters other than \t \r \n, and bytes from 0x7f.
func encodeHex(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c >= 0x7f {
			b.WriteString(`\x` + strconv.FormatUint(uint64(c)>>4, 16) + strconv.FormatUint(uint64(c)&15, 16))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
