package conf

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// The stream block, its server blocks and their own directives (listen,
// proxy_pass), and the address forms they share with upstream servers.

func (p *parser) stream(d *directive, _ ctx) error {
	formats, err := builtinLogFormats(d)
	if err != nil {
		return err
	}
	p.cfg.Stream = &Stream{Pos: d.pos, LogFormats: formats, LimitConnZones: map[string]*LimitConnZone{}}
	p.streamLvl = p.newLevel()
	p.streamSeen = map[string]bool{}
	p.zoneSizes = map[string]int64{}
	p.zoneUsers = map[string]Pos{}
	p.backupPos = map[*Upstream]Pos{}
	p.listenAddrs = map[string]bool{}
	p.findStreamVars(d.block)
	return p.walk(d.block, ctxStream)
}

func (p *parser) serverBlock(d *directive, _ ctx) error {
	st := &serverState{srv: &Server{Pos: d.pos}, lvl: p.newLevel(), seen: map[string]bool{}}
	p.server = st
	defer func() { p.server = nil }()
	if err := p.walk(d.block, ctxServer); err != nil {
		return err
	}
	if len(st.srv.Listen) == 0 {
		// NGINX names the line of "server {", not of its "}".
		return Errorf(d.pos, "no \"listen\" is defined for server")
	}
	p.servers = append(p.servers, st)
	p.cfg.Stream.Servers = append(p.cfg.Stream.Servers, st.srv)
	return nil
}

// listen parses `listen address [parameters]` (ngx_stream_core_listen).
func (p *parser) listen(d *directive, _ ctx) error {
	l := Listen{Pos: d.pos, Network: "tcp", Backlog: 511, IPv6Only: true}
	addr, err := listenAddr(d.args[0])
	if err != "" {
		return Errorf(d.pos, "%s in %q of the \"listen\" directive", err, d.args[0])
	}
	l.Addr = addr
	if strings.HasPrefix(addr, "unix:") {
		l.Network = "unix"
	}
	for _, a := range d.args[1:] {
		name, val, hasVal := strings.Cut(a, "=")
		switch {
		case a == "bind":
			l.Bind = true
		case a == "reuseport":
			l.ReusePort = true
		case a == "proxy_protocol":
			l.ProxyProtocol = true
		case a == "deferred":
			l.Deferred = true
		case a == "default_server":
			l.DefaultServer = true
		case a == "udp", a == "ssl", a == "quic", name == "accept_filter", name == "setfib", a == "multipath":
			return Errorf(d.pos, "\"listen ... %s\" is not supported", name)
		case hasVal && name == "backlog":
			n, ok := atoiInt(val)
			if !ok || n == 0 {
				return Errorf(d.pos, "invalid backlog %q", a)
			}
			l.Backlog = n
		case hasVal && (name == "rcvbuf" || name == "sndbuf"):
			n, ok := ParseSize(val)
			if !ok {
				return Errorf(d.pos, "invalid %s %q", name, val)
			}
			if name == "rcvbuf" {
				l.Rcvbuf = n
			} else {
				l.Sndbuf = n
			}
		case hasVal && name == "fastopen":
			n, ok := atoiInt(val)
			if !ok {
				return Errorf(d.pos, "invalid fastopen %q", a)
			}
			l.FastOpen = n
		case hasVal && name == "ipv6only":
			switch val {
			case "on":
				l.IPv6Only = true
			case "off":
				l.IPv6Only = false
			default:
				return Errorf(d.pos, "invalid ipv6only flags %q", val)
			}
			l.Bind = true
		case hasVal && name == "so_keepalive":
			ka, ok := parseKeepAlive(val)
			if !ok {
				return Errorf(d.pos, "invalid so_keepalive value: %q", val)
			}
			l.KeepAlive = ka
			l.Bind = true
		default:
			return Errorf(d.pos, "the invalid %q parameter", a)
		}
	}
	if p.listenAddrs[l.Addr] {
		return Errorf(d.pos, "duplicate %q address and port pair", l.Addr)
	}
	p.listenAddrs[l.Addr] = true
	p.server.srv.Listen = append(p.server.srv.Listen, l)
	return nil
}

// MaxUnixPath is the size of sun_path in struct sockaddr_un on Linux: a
// unix domain socket's path must be shorter, for its terminating NUL.
const MaxUnixPath = 108

// listenAddr normalises a listen address: a bare port becomes
// 0.0.0.0:port, "*" becomes 0.0.0.0. Unlike NGINX, an address without a
// port is an error. It returns NGINX's error text.
func listenAddr(s string) (string, string) {
	if strings.HasPrefix(s, "unix:") {
		if len(s) == len("unix:") {
			return "", "no path in the unix domain socket"
		}
		if len(s)-len("unix:") >= MaxUnixPath {
			return "", "too long path in the unix domain socket"
		}
		return s, ""
	}
	if strings.Contains(s, "-") && !strings.HasPrefix(s, "[") {
		return "", "port ranges are not supported"
	}
	if n, ok := atoi(s); ok {
		if n < 1 || n > 65535 {
			return "", "invalid port"
		}
		return "0.0.0.0:" + strconv.FormatInt(n, 10), "" // "01" is port 1, as "listen 1"
	}
	host, port, errText := splitHostPort(s)
	if errText != "" {
		return "", errText
	}
	if port == 0 {
		return "", "no port"
	}
	if host == "" {
		return "", "no host"
	}
	if host == "*" {
		host = "0.0.0.0"
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), ""
}

// splitHostPort splits "host:port", "[v6]:port", "host" or "[v6]" as
// ngx_parse_inet_url does; port 0 means none was given. It returns
// NGINX's error texts ("invalid port", "invalid host", ...).
func splitHostPort(s string) (string, int, string) {
	host, rest := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, "invalid host"
		}
		host, rest = s[1:end], s[end+1:]
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil && !strings.Contains(host, ":") {
			return "", 0, "invalid IPv6 address"
		}
		if rest == "" {
			return host, 0, ""
		}
		if rest[0] != ':' {
			return "", 0, "invalid host"
		}
		rest = rest[1:]
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, rest = s[:i], s[i+1:]
		if strings.Contains(host, ":") {
			return "", 0, "invalid host"
		}
	} else {
		return s, 0, ""
	}
	n, ok := atoi(rest)
	if !ok || n < 1 || n > 65535 {
		return "", 0, "invalid port"
	}
	return host, int(n), ""
}

// parseKeepAlive parses so_keepalive=on|off|[idle]:[intvl]:[cnt].
func parseKeepAlive(v string) (KeepAlive, bool) {
	switch v {
	case "on":
		return KeepAlive{Mode: KeepAliveOn}, true
	case "off":
		return KeepAlive{Mode: KeepAliveOff}, true
	}
	parts := strings.Split(v, ":")
	if len(parts) != 3 {
		return KeepAlive{}, false
	}
	ka := KeepAlive{Mode: KeepAliveCustom}
	set := false
	if parts[0] != "" {
		t, ok := ParseDuration(parts[0], true)
		if !ok || t == 0 {
			return KeepAlive{}, false
		}
		ka.Idle, set = t, true
	}
	if parts[1] != "" {
		t, ok := ParseDuration(parts[1], true)
		if !ok || t == 0 {
			return KeepAlive{}, false
		}
		ka.Intvl, set = t, true
	}
	if parts[2] != "" {
		n, ok := atoiInt(parts[2])
		if !ok || n == 0 {
			return KeepAlive{}, false
		}
		ka.Cnt, set = n, true
	}
	return ka, set
}

func (p *parser) proxyPass(d *directive, _ ctx) error {
	srv := p.server.srv
	v := d.args[0]
	srv.ProxyPass, srv.ProxyPassPos = v, d.pos
	if strings.Contains(v, "$") {
		t, err := p.compileAt(d, v)
		if err != nil {
			return err
		}
		srv.ProxyPassTemplate = t
		return nil
	}
	if _, errText := ParseUpstreamAddr(v); errText != "" {
		return Errorf(d.pos, "%s in upstream %q", errText, v)
	}
	return nil
}

// UpstreamAddr is a proxy_pass address as ngx_parse_url reads it without
// resolving anything: "host:port", "[v6]:port", "host", "[v6]" or
// "unix:/path".
type UpstreamAddr struct {
	// Host is the host as written, without an IPv6 address's brackets,
	// or the unix domain socket's path.
	Host string
	// Port is the port; 0: none was given.
	Port int
	// Unix: Host is a unix domain socket's path.
	Unix bool
	// IP is Host as an address when it is an IP literal.
	IP netip.Addr
}

// ParseUpstreamAddr reads a proxy_pass value (the configuration's, or one
// evaluated from variables for a session) as NGINX's ngx_parse_url does
// with no_resolve. On failure it returns NGINX's error text ("invalid
// port", "no host", ...), which NGINX logs as `%s in upstream "%s"`.
func ParseUpstreamAddr(v string) (UpstreamAddr, string) {
	if path, ok := strings.CutPrefix(v, "unix:"); ok {
		if path == "" {
			return UpstreamAddr{}, "no path in the unix domain socket"
		}
		if len(path) >= MaxUnixPath {
			return UpstreamAddr{}, "too long path in the unix domain socket"
		}
		return UpstreamAddr{Host: path, Unix: true}, ""
	}
	host, port, errText := splitHostPort(v)
	if errText == "" && host == "" {
		errText = "no host"
	}
	if errText != "" {
		return UpstreamAddr{}, errText
	}
	a := UpstreamAddr{Host: host, Port: port}
	if ip, err := netip.ParseAddr(host); err == nil { // splitHostPort refuses zones
		a.IP = ip.Unmap()
	}
	return a, ""
}

// ignoredNumber is the *_hash_* directives: a size, accepted, no effect.
func (p *parser) ignoredNumber(d *directive, _ ctx) error {
	var n int64
	if err := sizeArg(d, &n); err != nil {
		return err
	}
	return nil
}
