package conf

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

func (p *parser) stream(d *directive, _ ctx) error {
	p.cfg.Stream = &Stream{Pos: d.pos, LogFormats: map[string]*LogFormat{}, LimitConnZones: map[string]*LimitConnZone{}}
	p.streamLvl = p.newLevel()
	p.streamSeen = map[string]bool{}
	p.zoneSizes = map[string]int64{}
	p.zoneUsers = map[string]Pos{}
	p.backupPos = map[*Upstream]Pos{}
	p.listenAddrs = map[string]bool{}
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

// accessRule parses `allow|deny address | CIDR | unix: | all` and
// `set_real_ip_from` (the same values)
// (ngx_stream_access_module): the rules of a level are kept in order, and
// a server with none inherits the stream level's.
func (p *parser) accessRule(d *directive, c ctx) error {
	r := AccessRule{Pos: d.pos, Deny: d.name == "deny"}
	switch v := d.args[0]; {
	case v == "all":
		r.All = true
	case v == "unix:":
		r.Unix = true
	case strings.Contains(v, "/"):
		pfx, err := netip.ParsePrefix(v)
		if err != nil {
			return Errorf(d.pos, "invalid parameter %q", v)
		}
		r.Prefix = pfx.Masked()
	default:
		a, err := netip.ParseAddr(v)
		if err != nil {
			return Errorf(d.pos, "invalid parameter %q", v)
		}
		r.Prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	}
	lvl := p.streamLvl
	if c == ctxServer {
		lvl = p.server.lvl
	}
	if d.name == "set_real_ip_from" {
		lvl.realIP = append(lvl.realIP, r)
		return nil
	}
	lvl.access = append(lvl.access, r)
	return nil
}

// limitConnZone parses `limit_conn_zone key zone=name:size`.
func (p *parser) limitConnZone(d *directive, _ ctx) error {
	key := d.args[0]
	tmpl, err := compileKey(d, key)
	if err != nil {
		return err
	}
	spec, ok := strings.CutPrefix(d.args[1], "zone=")
	if !ok {
		return Errorf(d.pos, "invalid parameter %q", d.args[1])
	}
	name, size, ok := strings.Cut(spec, ":")
	if !ok || name == "" {
		return Errorf(d.pos, "invalid zone size %q", d.args[1])
	}
	n, ok := ParseSize(size)
	if !ok {
		return Errorf(d.pos, "invalid zone size %q", d.args[1])
	}
	if n < 8*4096 {
		return Errorf(d.pos, "zone %q is too small", d.args[1])
	}
	if z := p.cfg.Stream.LimitConnZones[name]; z != nil {
		if z.Key != key {
			return Errorf(d.pos, "zone %q is already bound to key %q", name, z.Key)
		}
		return Errorf(d.pos, "duplicate zone %q", name)
	}
	p.cfg.Stream.LimitConnZones[name] = &LimitConnZone{Pos: d.pos, Name: name, Key: key, KeyTemplate: tmpl, Size: n}
	return nil
}

// limitConn parses `limit_conn zone number`; the zone is checked once the
// whole file is read (it may be declared after).
func (p *parser) limitConn(d *directive, c ctx) error {
	n, err := strconv.Atoi(d.args[1])
	if err != nil || n <= 0 {
		return Errorf(d.pos, "invalid number of connections %q", d.args[1])
	}
	if n > 65535 {
		return Errorf(d.pos, "connection limit must be less 65536")
	}
	lvl := p.streamLvl
	if c == ctxServer {
		lvl = p.server.lvl
	}
	for _, l := range lvl.limits {
		if l.Zone == d.args[0] {
			return Errorf(d.pos, "\"limit_conn\" directive is duplicate")
		}
	}
	lvl.limits = append(lvl.limits, LimitConn{Pos: d.pos, Zone: d.args[0], Number: n})
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
		return "0.0.0.0:" + s, ""
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
		srv.ProxyPassVariables = true
		return checkVariables(d, v)
	}
	if strings.HasPrefix(v, "unix:") {
		if len(v) == len("unix:") {
			return Errorf(d.pos, "no path in the unix domain socket in upstream %q", v)
		}
		if len(v)-len("unix:") >= MaxUnixPath {
			return Errorf(d.pos, "too long path in the unix domain socket in upstream %q", v)
		}
		return nil
	}
	host, _, errText := splitHostPort(v)
	if errText == "" && host == "" {
		errText = "no host"
	}
	if errText != "" {
		return Errorf(d.pos, "%s in upstream %q", errText, v)
	}
	return nil
}

// upstreamBlock is `upstream name { ... }`.
func (p *parser) upstreamBlock(d *directive, _ ctx) error {
	name := d.args[0]
	for _, u := range p.cfg.Stream.Upstreams {
		if strings.EqualFold(u.Name, name) {
			return Errorf(d.pos, "duplicate upstream %q", name)
		}
	}
	u := &Upstream{Name: name, Pos: d.pos}
	p.upstream, p.upSeen = u, map[string]bool{}
	defer func() { p.upstream, p.upSeen = nil, nil }()
	if err := p.walk(d.block, ctxUpstream); err != nil {
		return err
	}
	if len(u.Servers) == 0 {
		return Errorf(d.end, "no servers are inside upstream")
	}
	if u.Method == "hash" || u.Method == "random" {
		primary := false
		for _, s := range u.Servers {
			primary = primary || !s.Backup
		}
		if !primary {
			// NGINX names the line of "upstream {" here (and the "}" for
			// an empty block above).
			return Errorf(d.pos, "no servers in upstream %q", u.Name)
		}
	}
	p.cfg.Stream.Upstreams = append(p.cfg.Stream.Upstreams, u)
	return nil
}

// upstreamServer is `server address [parameters]` in an upstream block.
func (p *parser) upstreamServer(d *directive, _ ctx) error {
	u := p.upstream
	s := UpstreamServer{Pos: d.pos, Addr: d.args[0], Weight: 1, MaxFails: 1, FailTimeout: 10e9}
	for _, a := range d.args[1:] {
		name, val, hasVal := strings.Cut(a, "=")
		bad := false
		switch {
		case hasVal && name == "weight":
			n, ok := atoiInt(val)
			bad = !ok || n == 0
			s.Weight = n
		case hasVal && name == "max_conns":
			n, ok := atoiInt(val)
			bad = !ok
			s.MaxConns = n
		case hasVal && name == "max_fails":
			n, ok := atoiInt(val)
			bad = !ok
			s.MaxFails = n
		case hasVal && name == "fail_timeout":
			t, ok := ParseDuration(val, true)
			bad = !ok
			s.FailTimeout = t
		case hasVal && name == "service":
			bad = val == ""
			s.Service = val
		case hasVal && name == "slow_start":
			return Errorf(d.pos, "\"server ... slow_start\" is not supported")
		case !hasVal && a == "backup":
			if u.Method == "hash" || u.Method == "random" {
				return Errorf(d.pos, "balancing method does not support parameter %q", a)
			}
			s.Backup = true
			if _, ok := p.backupPos[u]; !ok {
				p.backupPos[u] = d.pos
			}
		case !hasVal && a == "down":
			s.Down = true
		case !hasVal && a == "resolve":
			s.Resolve = true
		default:
			bad = true
		}
		if bad {
			return Errorf(d.pos, "invalid parameter %q", a)
		}
	}
	if s.Service != "" && !s.Resolve {
		return Errorf(d.pos, "service upstream %q requires \"resolve\" parameter", s.Addr)
	}
	if strings.HasPrefix(s.Addr, "unix:") {
		if len(s.Addr) == len("unix:") {
			return Errorf(d.pos, "no path in the unix domain socket in upstream %q", s.Addr)
		}
		if len(s.Addr)-len("unix:") >= MaxUnixPath {
			return Errorf(d.pos, "too long path in the unix domain socket in upstream %q", s.Addr)
		}
		s.Unix, s.Host = true, s.Addr[len("unix:"):]
	} else {
		host, port, errText := splitHostPort(s.Addr)
		switch {
		case errText != "":
		case host == "":
			errText = "no host"
		case port == 0 && s.Service == "":
			errText = "no port"
		case port != 0 && s.Service != "":
			return Errorf(d.pos, "service upstream %q may not have port", s.Addr)
		}
		if errText != "" {
			return Errorf(d.pos, "%s in upstream %q", errText, s.Addr)
		}
		s.Host, s.Port = host, port
	}
	u.Servers = append(u.Servers, s)
	return nil
}

// setMethod records the balancing method, warning as NGINX does when an
// upstream sets two.
func (p *parser) setMethod(d *directive, method string) error {
	u := p.upstream
	if u.Method != "" || p.upSeen["method"] {
		p.warnf(d.pos, "load balancing method redefined")
	}
	p.upSeen["method"] = true
	if bp, ok := p.backupPos[u]; ok && (method == "hash" || method == "random") {
		// NGINX accepts backup servers written before the method and
		// never uses them.
		p.warnf(bp, "backup servers of upstream %q are never used with the %q balancing method", u.Name, method)
	}
	u.Method, u.MethodPos = method, d.pos
	u.HashKey, u.Hash, u.Consistent, u.RandomTwo, u.LeastTime, u.LeastTimeInflight = "", nil, false, false, "", false
	return nil
}

func (p *parser) hash(d *directive, _ ctx) error {
	if len(d.args) == 2 && d.args[1] != "consistent" {
		return Errorf(d.pos, "invalid parameter %q", d.args[1])
	}
	key, err := compileKey(d, d.args[0])
	if err != nil {
		return err
	}
	if err := p.setMethod(d, "hash"); err != nil {
		return err
	}
	p.upstream.HashKey, p.upstream.Hash = d.args[0], key
	p.upstream.Consistent = len(d.args) == 2
	return nil
}

func (p *parser) random(d *directive, _ ctx) error {
	two := false
	if len(d.args) > 0 {
		if d.args[0] != "two" {
			return Errorf(d.pos, "invalid parameter %q", d.args[0])
		}
		two = true
		if len(d.args) == 2 {
			switch {
			case d.args[1] == "least_conn":
			case strings.HasPrefix(d.args[1], "least_time="):
				return Errorf(d.pos, "\"random two least_time\" is not supported")
			default:
				return Errorf(d.pos, "invalid parameter %q", d.args[1])
			}
		}
	}
	if err := p.setMethod(d, "random"); err != nil {
		return err
	}
	p.upstream.RandomTwo = two
	return nil
}

func (p *parser) leastConn(d *directive, _ ctx) error {
	return p.setMethod(d, "least_conn")
}

func (p *parser) leastTime(d *directive, _ ctx) error {
	switch d.args[0] {
	case "connect", "first_byte", "last_byte":
	default:
		return Errorf(d.pos, "invalid parameter %q", d.args[0])
	}
	if len(d.args) == 2 && d.args[1] != "inflight" {
		return Errorf(d.pos, "invalid parameter %q", d.args[1])
	}
	if err := p.setMethod(d, "least_time"); err != nil {
		return err
	}
	p.upstream.LeastTime = d.args[0]
	p.upstream.LeastTimeInflight = len(d.args) == 2
	return nil
}

// zone is `zone name [size]`; NGINX needs a size somewhere for each name
// (checked in finish) and at least 8 pages.
func (p *parser) zone(d *directive, _ ctx) error {
	u := p.upstream
	u.Zone = d.args[0]
	if len(d.args) == 2 {
		n, ok := ParseSize(d.args[1])
		if !ok {
			return Errorf(d.pos, "invalid zone size %q", d.args[1])
		}
		if n < 8*4096 {
			return Errorf(d.pos, "zone %q is too small", d.args[1])
		}
		u.ZoneSize = n
		if prev, ok := p.zoneSizes[u.Zone]; ok && prev != n && prev != 0 {
			return Errorf(d.pos, "the size %d of shared memory zone %q conflicts with already declared size %d",
				n, u.Zone, prev)
		}
		p.zoneSizes[u.Zone] = n
	} else if _, ok := p.zoneSizes[u.Zone]; !ok {
		p.zoneSizes[u.Zone] = 0
	}
	if _, ok := p.zoneUsers[u.Zone]; !ok {
		p.zoneUsers[u.Zone] = d.pos
	}
	return nil
}

func (p *parser) upstreamResolver(d *directive, _ ctx) error {
	r, err := parseResolver(d)
	p.upstream.Resolver = r
	return err
}

func (p *parser) upstreamResolverTimeout(d *directive, _ ctx) error {
	return msecArg(d, &p.upstream.ResolverTimeout)
}

// parseResolver is `resolver address ... [valid=time] [ipv4=on|off]
// [ipv6=on|off]`.
func parseResolver(d *directive) (*Resolver, error) {
	r := &Resolver{IPv4: true, IPv6: true, Pos: d.pos}
	for _, a := range d.args {
		name, val, hasVal := strings.Cut(a, "=")
		switch {
		case hasVal && name == "valid":
			t, ok := ParseDuration(val, true)
			if !ok {
				return nil, Errorf(d.pos, "invalid parameter: %s", a)
			}
			r.Valid = t
		case hasVal && (name == "ipv4" || name == "ipv6"):
			var on bool
			switch val {
			case "on":
				on = true
			case "off":
			default:
				return nil, Errorf(d.pos, "invalid parameter: %s", a)
			}
			if name == "ipv4" {
				r.IPv4 = on
			} else {
				r.IPv6 = on
			}
		case hasVal && name == "status_zone":
			return nil, Errorf(d.pos, "\"resolver ... status_zone\" is not supported")
		default:
			host, _, errText := splitHostPort(a)
			if errText != "" || host == "" {
				return nil, Errorf(d.pos, "invalid resolver address %q", a)
			}
			r.Addrs = append(r.Addrs, a)
		}
	}
	if !r.IPv4 && !r.IPv6 {
		return nil, Errorf(d.pos, "\"ipv4\" and \"ipv6\" cannot both be \"off\"")
	}
	if len(r.Addrs) == 0 {
		return nil, Errorf(d.pos, "no name servers defined")
	}
	return r, nil
}

// logFormat is `log_format name [escape=default|json|none] string ...`.
func (p *parser) logFormat(d *directive, _ ctx) error {
	name := d.args[0]
	if _, ok := p.cfg.Stream.LogFormats[name]; ok {
		return Errorf(d.pos, "duplicate \"log_format\" name %q", name)
	}
	f := &LogFormat{Name: name, Escape: "default", Pos: d.pos}
	rest := d.args[1:]
	if v, ok := strings.CutPrefix(rest[0], "escape="); ok {
		switch v {
		case "default", "json", "none":
			f.Escape = v
		default:
			return Errorf(d.pos, "unknown log format escaping %q", v)
		}
		rest = rest[1:]
		if len(rest) == 0 {
			return Errorf(d.pos, "invalid number of arguments in \"log_format\" directive")
		}
	}
	f.Format = strings.Join(rest, "")
	t, err := compileAt(d, f.Format)
	if err != nil {
		return err
	}
	f.Template = t
	p.cfg.Stream.LogFormats[name] = f
	return nil
}

// mergeAccessLog is `access_log path format [buffer=size] [gzip[=level]]
// [flush=time] [if=condition] | off`.
func mergeAccessLog(p *parser, m *mergeable, d *directive) error {
	if d.args[0] == "off" {
		if len(d.args) > 1 {
			return Errorf(d.pos, "invalid parameter %q", d.args[1])
		}
		m.AccessLogs = append(m.AccessLogs, AccessLog{Pos: d.pos, Off: true})
		return nil
	}
	if err := checkVariables(d, d.args[0]); err != nil {
		return err
	}
	l := AccessLog{Pos: d.pos, Path: p.prefixPath(d.args[0])}
	if len(d.args) < 2 {
		return Errorf(d.pos, "log format is not specified")
	}
	l.Format = d.args[1]
	if _, ok := p.cfg.Stream.LogFormats[l.Format]; !ok {
		return Errorf(d.pos, "unknown log format %q", l.Format)
	}
	for _, a := range d.args[2:] {
		name, val, hasVal := strings.Cut(a, "=")
		switch {
		case hasVal && name == "buffer":
			n, ok := ParseSize(val)
			if !ok {
				return Errorf(d.pos, "invalid buffer size %q", val)
			}
			l.Buffer = n
		case name == "gzip":
			l.Gzip = 1
			if hasVal {
				n, ok := atoiInt(val)
				if !ok || n < 1 || n > 9 {
					return Errorf(d.pos, "invalid compression level %q", val)
				}
				l.Gzip = n
			}
		case hasVal && name == "flush":
			t, ok := ParseDuration(val, false)
			if !ok {
				return Errorf(d.pos, "invalid flush time %q", val)
			}
			l.Flush = t
		case hasVal && name == "if":
			t, err := compileAt(d, val)
			if err != nil {
				return err
			}
			l.If, l.IfTemplate = val, t
		default:
			return Errorf(d.pos, "invalid parameter %q", a)
		}
	}
	if l.Flush != 0 && l.Buffer == 0 && l.Gzip == 0 {
		return Errorf(d.pos, "no buffer is defined for access_log %q", d.args[0])
	}
	if l.Gzip != 0 && l.Buffer == 0 {
		l.Buffer = 64 << 10
	}
	m.AccessLogs = append(m.AccessLogs, l)
	return nil
}

// mergeProxyBind is `proxy_bind address [transparent] | off`.
func mergeProxyBind(p *parser, m *mergeable, d *directive) error {
	if d.args[0] == "off" {
		if len(d.args) > 1 {
			return Errorf(d.pos, "invalid number of arguments in %q directive", d.name)
		}
		m.Proxy.Bind = nil
		return nil
	}
	b := &Bind{Addr: d.args[0]}
	if len(d.args) == 2 {
		if d.args[1] != "transparent" {
			return Errorf(d.pos, "invalid parameter %q", d.args[1])
		}
		b.Transparent = true
	}
	if err := checkVariables(d, b.Addr); err != nil {
		return err
	}
	if !strings.Contains(b.Addr, "$") {
		if net.ParseIP(strings.Trim(b.Addr, "[]")) == nil {
			if _, _, errText := splitHostPort(b.Addr); errText != "" {
				return Errorf(d.pos, "invalid address %q", b.Addr)
			}
		}
	}
	m.Proxy.Bind = b
	return nil
}

// mergeProtocols is ngx_conf_set_bitmask_slot over the TLS versions: values
// add up, repeated ones are warned about.
func mergeProtocols(p *parser, m *mergeable, d *directive) error {
	for _, a := range d.args {
		canon := ""
		for _, v := range []string{"SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"} {
			if strings.EqualFold(a, v) {
				canon = v
			}
		}
		if canon == "" {
			return Errorf(d.pos, "invalid value %q", a)
		}
		dup := false
		for _, have := range m.Proxy.SSL.Protocols {
			dup = dup || have == canon
		}
		if dup {
			p.warnf(d.pos, "duplicate value %q", a)
			continue
		}
		m.Proxy.SSL.Protocols = append(m.Proxy.SSL.Protocols, canon)
	}
	order := map[string]int{"SSLv2": 0, "SSLv3": 1, "TLSv1": 2, "TLSv1.1": 3, "TLSv1.2": 4, "TLSv1.3": 5}
	ps := m.Proxy.SSL.Protocols
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && order[ps[j]] < order[ps[j-1]]; j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
	return nil
}

// mergeCertificateCache is `proxy_ssl_certificate_cache off | max=N
// [inactive=time] [valid=time]`.
func mergeCertificateCache(p *parser, m *mergeable, d *directive) error {
	c := CertificateCache{Inactive: 10e9, Valid: 60e9}
	if d.args[0] == "off" {
		if len(d.args) > 1 {
			return Errorf(d.pos, "invalid parameter %q", d.args[1])
		}
		m.Proxy.SSL.CertificateCache = c
		return nil
	}
	for _, a := range d.args {
		name, val, _ := strings.Cut(a, "=")
		var ok bool
		switch name {
		case "max":
			c.Max, ok = atoiInt(val)
			ok = ok && c.Max > 0
		case "inactive":
			c.Inactive, ok = ParseDuration(val, true)
		case "valid":
			c.Valid, ok = ParseDuration(val, true)
		}
		if !ok {
			return Errorf(d.pos, "invalid parameter %q", a)
		}
	}
	if c.Max == 0 {
		return Errorf(d.pos, "%q must have \"max\" parameter", d.name)
	}
	m.Proxy.SSL.CertificateCache = c
	return nil
}

// mergeResolver is `resolver ...` at stream and server level.
func mergeResolver(_ *parser, m *mergeable, d *directive) error {
	r, err := parseResolver(d)
	m.Core.Resolver = r
	return err
}

// limitConnLogLevelArg is limit_conn_log_level's value.
func limitConnLogLevelArg(d *directive, v *string) error {
	switch d.args[0] {
	case "info", "notice", "warn", "error":
		*v = d.args[0]
		return nil
	}
	return Errorf(d.pos, "invalid value %q in %q directive, it must be \"info\", \"notice\", \"warn\" or \"error\"", d.args[0], d.name)
}

// limitConnStatusArg is limit_conn_status's value.
func limitConnStatusArg(d *directive, v *int) error {
	n, err := strconv.Atoi(d.args[0])
	if err != nil || n < 400 || n > 599 {
		return Errorf(d.pos, "value must be between 400 and 599")
	}
	*v = n
	return nil
}

// formatErrorLogs prints error_log directives for -T.
func formatErrorLogs(w *confWriter, logs []ErrorLog) {
	for _, l := range logs {
		w.line("error_log", l.Path, l.Level)
	}
}

// formatAccessLogs prints a server's access_log directives for -T ("off"
// for none).
func formatAccessLogs(w *confWriter, at *formatAt) {
	if len(at.lvl.AccessLogs) == 0 {
		w.line("access_log", "off")
	}
	for _, l := range at.lvl.AccessLogs {
		args := []string{l.Path, l.Format}
		if l.Buffer != 0 {
			args = append(args, "buffer="+formatSize(l.Buffer))
		}
		if l.Gzip != 0 {
			args = append(args, "gzip="+strconv.Itoa(l.Gzip))
		}
		if l.Flush != 0 {
			args = append(args, "flush="+formatDuration(l.Flush))
		}
		if l.If != "" {
			args = append(args, "if="+l.If)
		}
		w.line("access_log", args...)
	}
}

// formatLogFormats prints the log_format directives in name order.
func formatLogFormats(w *confWriter, at *formatAt) {
	st := at.cfg.Stream
	for _, name := range sortedKeys(st.LogFormats) {
		f := st.LogFormats[name]
		w.line("log_format", name, "escape="+f.Escape, f.Format)
	}
}

// formatLimitConnZones prints the limit_conn_zone directives in name
// order.
func formatLimitConnZones(w *confWriter, at *formatAt) {
	st := at.cfg.Stream
	for _, name := range sortedKeys(st.LimitConnZones) {
		z := st.LimitConnZones[name]
		w.line("limit_conn_zone", z.Key, "zone="+z.Name+":"+formatSize(z.Size))
	}
}

// formatHash, formatRandom, formatLeastConn and formatLeastTime print an
// upstream block's balancing method, each its own.
func formatHash(w *confWriter, at *formatAt) {
	if u := at.up; u.Method == "hash" {
		args := []string{u.HashKey}
		if u.Consistent {
			args = append(args, "consistent")
		}
		w.line("hash", args...)
	}
}

func formatRandom(w *confWriter, at *formatAt) {
	switch u := at.up; {
	case u.Method != "random":
	case u.RandomTwo:
		w.line("random", "two", "least_conn")
	default:
		w.line("random")
	}
}

func formatLeastConn(w *confWriter, at *formatAt) {
	if at.up.Method == "least_conn" {
		w.line("least_conn")
	}
}

func formatLeastTime(w *confWriter, at *formatAt) {
	if u := at.up; u.Method == "least_time" {
		args := []string{u.LeastTime}
		if u.LeastTimeInflight {
			args = append(args, "inflight")
		}
		w.line("least_time", args...)
	}
}

// formatUpstreamServers prints an upstream block's servers, every
// parameter explicit.
func formatUpstreamServers(w *confWriter, at *formatAt) {
	for _, s := range at.up.Servers {
		args := []string{s.Addr, "weight=" + strconv.Itoa(s.Weight), "max_fails=" + strconv.Itoa(s.MaxFails),
			"fail_timeout=" + formatDuration(s.FailTimeout)}
		if s.MaxConns != 0 {
			args = append(args, "max_conns="+strconv.Itoa(s.MaxConns))
		}
		for _, f := range []struct {
			on   bool
			name string
		}{{s.Backup, "backup"}, {s.Down, "down"}, {s.Resolve, "resolve"}} {
			if f.on {
				args = append(args, f.name)
			}
		}
		if s.Service != "" {
			args = append(args, "service="+s.Service)
		}
		w.line("server", args...)
	}
}

// proxyProtocolArg is proxy_protocol's value: 0 off, 1 on (v1), 2 v2.
func proxyProtocolArg(d *directive, v *int) error {
	switch strings.ToLower(d.args[0]) {
	case "on", "v1":
		*v = 1
	case "off":
		*v = 0
	case "v2":
		*v = 2
	default:
		return Errorf(d.pos, "invalid value %q in %q directive, it must be \"on\", \"off\" or \"v2\"",
			d.args[0], d.name)
	}
	return nil
}

// formatProxyProtocol is proxy_protocol's -T form.
func formatProxyProtocol(v int) string { return []string{"off", "on", "v2"}[v] }

// formatProxyBind prints proxy_bind for -T.
func formatProxyBind(w *confWriter, at *formatAt) {
	switch b := at.lvl.Proxy.Bind; {
	case b == nil:
		w.line("proxy_bind", "off")
	case b.Transparent:
		w.line("proxy_bind", b.Addr, "transparent")
	default:
		w.line("proxy_bind", b.Addr)
	}
}

// stringArg is a directive's one argument as written.
func stringArg(d *directive, v *string) error {
	*v = d.args[0]
	return nil
}

// nameArg is proxy_ssl_name's value: text and the variables a name may
// hold.
func nameArg(d *directive, v *string) error {
	*v = d.args[0]
	_, err := compileName(d, d.args[0])
	return err
}

// certificatePath resolves proxy_ssl_certificate's file, which may hold
// variables.
func certificatePath(p *parser, d *directive) (string, error) {
	return p.confPath(d.args[0]), checkVariables(d, d.args[0])
}

// certificateKeyPath resolves proxy_ssl_certificate_key's file, which may
// hold variables.
func certificateKeyPath(p *parser, d *directive) (string, error) {
	return keyPath(p, d.args[0]), checkVariables(d, d.args[0])
}

// confFile resolves a file name against the configuration prefix.
func confFile(p *parser, d *directive) (string, error) {
	return p.confPath(d.args[0]), nil
}

// keyPath resolves a certificate key path; engine: and store: URIs are
// kept as written.
func keyPath(p *parser, name string) string {
	if strings.HasPrefix(name, "engine:") || strings.HasPrefix(name, "store:") || strings.HasPrefix(name, "data:") {
		return name
	}
	return p.confPath(name)
}

// mergeConfCommand is `proxy_ssl_conf_command name value`; the commands
// of a level add up.
func mergeConfCommand(_ *parser, m *mergeable, d *directive) error {
	m.Proxy.SSL.ConfCommands = append(m.Proxy.SSL.ConfCommands, ConfCommand{Name: d.args[0], Value: d.args[1], Pos: d.pos})
	return nil
}

// mergeALPN is `proxy_ssl_alpn protocol ...`.
func mergeALPN(_ *parser, m *mergeable, d *directive) error {
	for _, a := range d.args {
		if len(a) == 0 || len(a) > 255 {
			return Errorf(d.pos, "invalid value %q in %q directive", a, d.name)
		}
		if err := checkVariables(d, a); err != nil {
			return err
		}
	}
	m.Proxy.SSL.ALPN = append([]string(nil), d.args...)
	return nil
}

// mergeKeyLog is `proxy_ssl_key_log file` (no variables).
func mergeKeyLog(p *parser, m *mergeable, d *directive) error {
	if strings.Contains(d.args[0], "$") {
		return Errorf(d.pos, "variables in %q are not supported", d.name)
	}
	m.Proxy.SSL.KeyLog = p.prefixPath(d.args[0])
	return nil
}

// formatCertificateCache prints proxy_ssl_certificate_cache when it is on.
func formatCertificateCache(w *confWriter, at *formatAt) {
	if c := at.lvl.Proxy.SSL.CertificateCache; c.Max > 0 {
		w.line("proxy_ssl_certificate_cache", "max="+strconv.Itoa(c.Max),
			"inactive="+formatDuration(c.Inactive), "valid="+formatDuration(c.Valid))
	}
}
