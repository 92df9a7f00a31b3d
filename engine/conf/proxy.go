package conf

import (
	"net"
	"strings"
)

// ngx_stream_proxy_module's directives that need more than a slot row
// (the others are rows of proxyDirectives in table.go).

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
	t, err := p.compileAt(d, b.Addr)
	if err != nil {
		return err
	}
	if t.HasVars() {
		b.Template = t
	} else {
		if net.ParseIP(strings.Trim(b.Addr, "[]")) == nil {
			if _, _, errText := splitHostPort(b.Addr); errText != "" {
				return Errorf(d.pos, "invalid address %q", b.Addr)
			}
		}
	}
	m.Proxy.Bind = b
	return nil
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
