package conf

import (
	"strconv"
	"strings"
)

// Format writes the effective configuration in NGINX syntax, every setting
// explicit with its default filled in and inherited values written in each
// server (what `tlsrelay -T` prints). Re-reading the output gives the same
// Config, except for positions, implicit groups and files' checks.
//
// Each block prints its directives through the directive table, in table
// order: a directive is printed by its row's format, in the innermost of
// the contexts it is allowed in.
func (c *Config) Format() string {
	w := &confWriter{table: directiveTable()}
	w.rows(ctxMain, &formatAt{cfg: c})
	return w.b.String()
}

// confWriter writes directives and blocks for -T, four spaces per block
// level.
type confWriter struct {
	b     strings.Builder
	depth int
	table []directiveSpec
}

// formatAt is what -T is printing: the configuration and, inside a server
// or upstream block, that block. lvl holds the server's effective values
// of the stream and server directives.
type formatAt struct {
	cfg *Config
	srv *Server
	lvl *mergeable
	up  *Upstream
}

// line writes one directive, each argument as one token.
func (w *confWriter) line(name string, args ...string) {
	w.b.WriteString(strings.Repeat("    ", w.depth))
	w.b.WriteString(name)
	for _, a := range args {
		w.b.WriteByte(' ')
		w.b.WriteString(quote(a))
	}
	w.b.WriteString(";\n")
}

// block writes a block after a blank line, with body's directives inside.
func (w *confWriter) block(name string, args []string, body func()) {
	indent := strings.Repeat("    ", w.depth)
	w.b.WriteString("\n" + indent + name)
	for _, a := range args {
		w.b.WriteString(" " + quote(a))
	}
	w.b.WriteString(" {\n")
	w.depth++
	body()
	w.depth--
	w.b.WriteString(indent + "}\n")
}

// rows prints the directives of context c: the rows whose innermost
// context is c, in table order.
func (w *confWriter) rows(c ctx, at *formatAt) {
	for i := range w.table {
		if r := &w.table[i]; r.format != nil && r.ctx.innermost() == c {
			r.format(w, at)
		}
	}
}

// formatServers prints the server blocks, each with its effective values.
func formatServers(w *confWriter, at *formatAt) {
	for _, srv := range at.cfg.Stream.Servers {
		in := &formatAt{cfg: at.cfg, srv: srv,
			lvl: &mergeable{Proxy: srv.Proxy, Core: srv.Core, AccessLogs: srv.AccessLogs, ErrorLogs: srv.ErrorLogs}}
		w.block("server", nil, func() { w.rows(ctxServer, in) })
	}
}

// formatUpstreams prints the upstream blocks (not the implicit groups).
func formatUpstreams(w *confWriter, at *formatAt) {
	for _, u := range at.cfg.Stream.Upstreams {
		if u.Implicit {
			continue
		}
		in := &formatAt{cfg: at.cfg, up: u}
		w.block("upstream", []string{u.Name}, func() { w.rows(ctxUpstream, in) })
	}
}

func onOff(v bool) string {
	if v {
		return "on"
	}
	return "off"
}

// plain is a string value's -T form: itself.
func plain(s string) string { return s }

func formatCPUAffinity(w *confWriter, at *formatAt) {
	a := at.cfg.Main.CPUAffinity
	if !a.Auto && len(a.Masks) == 0 {
		return
	}
	var args []string
	if a.Auto {
		args = append(args, "auto")
	}
	for _, mask := range a.Masks {
		args = append(args, strconv.FormatUint(mask, 2))
	}
	w.line("worker_cpu_affinity", args...)
}

func listenArgs(l Listen) []string {
	args := []string{l.Addr}
	if l.Backlog != 511 {
		args = append(args, "backlog="+strconv.Itoa(l.Backlog))
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{l.Bind, "bind"}, {l.ReusePort, "reuseport"}, {l.ProxyProtocol, "proxy_protocol"}, {l.Deferred, "deferred"},
		{l.DefaultServer, "default_server"}, {!l.IPv6Only, "ipv6only=off"}} {
		if f.on {
			args = append(args, f.name)
		}
	}
	if l.Rcvbuf != 0 {
		args = append(args, "rcvbuf="+formatSize(l.Rcvbuf))
	}
	if l.Sndbuf != 0 {
		args = append(args, "sndbuf="+formatSize(l.Sndbuf))
	}
	if l.FastOpen != 0 {
		args = append(args, "fastopen="+strconv.Itoa(l.FastOpen))
	}
	switch l.KeepAlive.Mode {
	case KeepAliveOn:
		args = append(args, "so_keepalive=on")
	case KeepAliveOff:
		args = append(args, "so_keepalive=off")
	case KeepAliveCustom:
		ka := l.KeepAlive
		var idle, intvl, cnt string
		if ka.Idle != 0 {
			idle = strconv.Itoa(int(ka.Idle.Seconds()))
		}
		if ka.Intvl != 0 {
			intvl = strconv.Itoa(int(ka.Intvl.Seconds()))
		}
		if ka.Cnt != 0 {
			cnt = strconv.Itoa(ka.Cnt)
		}
		args = append(args, "so_keepalive="+idle+":"+intvl+":"+cnt)
	}
	return args
}

func resolverArgs(r *Resolver) []string {
	args := append([]string(nil), r.Addrs...)
	if r.Valid != 0 {
		args = append(args, "valid="+formatDuration(r.Valid))
	}
	if !r.IPv4 {
		args = append(args, "ipv4=off")
	}
	if !r.IPv6 {
		args = append(args, "ipv6=off")
	}
	return args
}

// quote returns s as one NGINX token: as is when it is plain, else in
// double quotes with \ and " escaped.
func quote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\r\n;{}\"'\\#") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`, "\r", `\r`)
	return `"` + r.Replace(s) + `"`
}

// formatAccess prints a server's allow and deny rules in their order.
func formatAccess(w *confWriter, at *formatAt) {
	for _, r := range at.srv.Access {
		if r.Deny {
			w.line("deny", ruleArg(r))
		} else {
			w.line("allow", ruleArg(r))
		}
	}
}

// ruleArg is the argument of an allow, deny or set_real_ip_from rule.
func ruleArg(r AccessRule) string {
	switch {
	case r.All:
		return "all"
	case r.Unix:
		return "unix:"
	case r.Prefix.IsSingleIP():
		return r.Prefix.Addr().String()
	}
	return r.Prefix.String()
}
