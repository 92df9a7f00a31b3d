package conf

import (
	"net/netip"
	"strings"
)

// API is `api [write=on|off] [allow=PREFIX,...]` (NGINX Plus's directive,
// which it places in an http location; here in the main context, served on
// metrics_listen): the runtime API at /api/9/stream/upstreams.
type API struct {
	// Write lets PATCH change peers (drain, down, weight, max_conns);
	// off (the default): read only, as NGINX Plus's `api`.
	Write bool
	// Allow are the client addresses the API answers (every method);
	// default loopback only (127.0.0.0/8, ::1).
	Allow []netip.Prefix
	Pos   Pos
}

// Allows reports whether the API answers a client at addr.
func (a *API) Allows(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range a.Allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// defaultAPIAllow is the API's allow list when none is written.
const defaultAPIAllow = "127.0.0.0/8,::1/128"

func (p *parser) api(d *directive, _ ctx) error {
	a := &API{Pos: d.pos}
	allow := strings.Split(defaultAPIAllow, ",")
	for _, arg := range d.args {
		name, val, ok := strings.Cut(arg, "=")
		switch {
		case ok && name == "write" && (val == "on" || val == "off"):
			a.Write = val == "on"
		case ok && name == "allow" && val != "":
			allow = strings.Split(val, ",")
		default:
			return Errorf(d.pos, "invalid parameter %q of the \"api\" directive (write=on|off, allow=ADDRESS/PREFIX,...)", arg)
		}
	}
	for _, s := range allow {
		pfx, ok := parseAddrPrefix(s)
		if !ok {
			return Errorf(d.pos, "invalid address %q in the allow list of the \"api\" directive", s)
		}
		a.Allow = append(a.Allow, pfx)
	}
	p.cfg.Main.API = a
	return nil
}

// checkAPI refuses an api without metrics_listen (the listener it is
// served on) and warns when writes are open to more than loopback.
func (p *parser) checkAPI() error {
	a := p.cfg.Main.API
	if a == nil {
		return nil
	}
	if p.cfg.Main.MetricsListen == "" {
		return Errorf(a.Pos, "\"api\" needs \"metrics_listen\": the API is served on its address")
	}
	if a.Write {
		for _, pfx := range a.Allow {
			if !pfx.Addr().IsLoopback() {
				p.warnf(a.Pos, "\"api write=on\" lets %s drain, stop and reweight upstream servers: the API has no authentication", pfx)
				break
			}
		}
	}
	return nil
}

// formatAPI prints api for -T.
func formatAPI(w *confWriter, at *formatAt) {
	a := at.cfg.Main.API
	if a == nil {
		return
	}
	allow := make([]string, len(a.Allow))
	for i, p := range a.Allow {
		allow[i] = p.String()
	}
	write := "off"
	if a.Write {
		write = "on"
	}
	w.line("api", "write="+write, "allow="+strings.Join(allow, ","))
}
