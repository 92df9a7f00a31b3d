package conf

import (
	"net/netip"
	"strconv"
	"strings"
)

// Access and connection limits: allow, deny and set_real_ip_from
// (ngx_stream_access_module, ngx_stream_realip_module), limit_conn_zone,
// limit_conn and its settings (ngx_stream_limit_conn_module).

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
	default:
		pfx, ok := parseAddrPrefix(v)
		if !ok {
			return Errorf(d.pos, "invalid parameter %q", v)
		}
		r.Prefix = pfx
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

// parseAddrPrefix reads an address or a CIDR as allow and deny do: an
// address is a prefix of its full length (an IPv4-mapped IPv6 address
// as IPv4, as clients are matched), a CIDR is masked.
func parseAddrPrefix(v string) (netip.Prefix, bool) {
	if strings.Contains(v, "/") {
		pfx, err := netip.ParsePrefix(v)
		return pfx.Masked(), err == nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), true
}

// limitConnZone parses `limit_conn_zone key zone=name:size`.
func (p *parser) limitConnZone(d *directive, _ ctx) error {
	key := d.args[0]
	// Not split_clients variables: a zone, and its key, outlive a reload.
	tmpl, err := p.compileLimited(d, key, isKeyVariable, keyVariablesText)
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

// formatLimitConnZones prints the limit_conn_zone directives in name
// order.
func formatLimitConnZones(w *confWriter, at *formatAt) {
	st := at.cfg.Stream
	for _, name := range sortedKeys(st.LimitConnZones) {
		z := st.LimitConnZones[name]
		w.line("limit_conn_zone", z.Key, "zone="+z.Name+":"+formatSize(z.Size))
	}
}
