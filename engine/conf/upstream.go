package conf

import (
	"strconv"
	"strings"
)

// Upstream blocks (ngx_stream_upstream_module): servers, balancing
// methods, zone, and the resolver of their names.

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
	key, err := p.compileKey(d, d.args[0])
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

// mergeResolver is `resolver ...` at stream and server level.
func mergeResolver(_ *parser, m *mergeable, d *directive) error {
	r, err := parseResolver(d)
	m.Core.Resolver = r
	return err
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
