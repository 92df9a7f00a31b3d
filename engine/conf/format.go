package conf

import (
	"fmt"
	"strconv"
	"strings"
)

// Format writes the effective configuration in NGINX syntax, every setting
// explicit with its default filled in and inherited values written in each
// server (what `tlsrelay -T` prints). Re-reading the output gives the same
// Config, except for positions, implicit groups and files' checks.
func (c *Config) Format() string {
	var b strings.Builder
	w := func(indent int, name string, args ...string) {
		b.WriteString(strings.Repeat("    ", indent))
		b.WriteString(name)
		for _, a := range args {
			b.WriteByte(' ')
			b.WriteString(quote(a))
		}
		b.WriteString(";\n")
	}
	m := &c.Main
	if m.WorkerProcesses == 0 {
		w(0, "worker_processes", "auto")
	} else {
		w(0, "worker_processes", strconv.Itoa(m.WorkerProcesses))
	}
	if m.CPUAffinity.Auto || len(m.CPUAffinity.Masks) > 0 {
		var args []string
		if m.CPUAffinity.Auto {
			args = append(args, "auto")
		}
		for _, mask := range m.CPUAffinity.Masks {
			args = append(args, strconv.FormatUint(mask, 2))
		}
		w(0, "worker_cpu_affinity", args...)
	}
	if m.RlimitNofile > 0 {
		w(0, "worker_rlimit_nofile", strconv.Itoa(m.RlimitNofile))
	}
	for _, l := range m.ErrorLog {
		w(0, "error_log", l.Path, l.Level)
	}
	if m.PID != "" {
		w(0, "pid", m.PID)
	}
	if m.WorkerShutdownTimeout > 0 {
		w(0, "worker_shutdown_timeout", formatDuration(m.WorkerShutdownTimeout))
	}
	if m.MetricsListen != "" {
		w(0, "metrics_listen", m.MetricsListen)
	}
	w(0, "daemon", "off")
	b.WriteString("\nevents {\n")
	w(1, "worker_connections", strconv.Itoa(m.WorkerConnections))
	b.WriteString("}\n")
	st := c.Stream
	if st == nil {
		return b.String()
	}
	b.WriteString("\nstream {\n")
	for _, name := range sortedKeys(st.LogFormats) {
		f := st.LogFormats[name]
		w(1, "log_format", name, "escape="+f.Escape, f.Format)
	}
	for _, name := range sortedKeys(st.LimitConnZones) {
		z := st.LimitConnZones[name]
		w(1, "limit_conn_zone", z.Key, "zone="+z.Name+":"+formatSize(z.Size))
	}
	formatMatches(&b, w, st)
	for _, u := range st.Upstreams {
		if u.Implicit {
			continue
		}
		fmt.Fprintf(&b, "\n    upstream %s {\n", quote(u.Name))
		switch u.Method {
		case "hash":
			args := []string{u.HashKey}
			if u.Consistent {
				args = append(args, "consistent")
			}
			w(2, "hash", args...)
		case "random":
			if u.RandomTwo {
				w(2, "random", "two", "least_conn")
			} else {
				w(2, "random")
			}
		case "least_conn":
			w(2, "least_conn")
		case "least_time":
			args := []string{u.LeastTime}
			if u.LeastTimeInflight {
				args = append(args, "inflight")
			}
			w(2, "least_time", args...)
		}
		if u.Zone != "" {
			w(2, "zone", u.Zone, formatSize(u.ZoneSize))
		}
		if u.Resolver != nil {
			w(2, "resolver", resolverArgs(u.Resolver)...)
		}
		if u.ResolverTimeout != 0 {
			w(2, "resolver_timeout", formatDuration(u.ResolverTimeout))
		}
		for _, s := range u.Servers {
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
			w(2, "server", args...)
		}
		b.WriteString("    }\n")
	}
	for _, srv := range st.Servers {
		b.WriteString("\n    server {\n")
		for _, l := range srv.Listen {
			w(2, "listen", listenArgs(l)...)
		}
		w(2, "proxy_pass", srv.ProxyPass)
		for _, l := range srv.LimitConn {
			w(2, "limit_conn", l.Zone, strconv.Itoa(l.Number))
		}
		for _, r := range srv.RealIPFrom {
			w(2, "set_real_ip_from", ruleArg(r))
		}
		for _, r := range srv.Access {
			if r.Deny {
				w(2, "deny", ruleArg(r))
			} else {
				w(2, "allow", ruleArg(r))
			}
		}
		formatHealth(w, srv)
		formatCore(w, &srv.Core)
		for _, l := range srv.ErrorLogs {
			w(2, "error_log", l.Path, l.Level)
		}
		if len(srv.AccessLogs) == 0 {
			w(2, "access_log", "off")
		}
		for _, l := range srv.AccessLogs {
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
			w(2, "access_log", args...)
		}
		formatProxy(w, &srv.Proxy)
		b.WriteString("    }\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func onOff(v bool) string {
	if v {
		return "on"
	}
	return "off"
}

func formatCore(w func(int, string, ...string), c *Core) {
	w(2, "tcp_nodelay", onOff(c.TCPNoDelay))
	if c.Resolver != nil {
		w(2, "resolver", resolverArgs(c.Resolver)...)
	}
	w(2, "resolver_timeout", formatDuration(c.ResolverTimeout))
	w(2, "preread_buffer_size", formatSize(c.PrereadBufferSize))
	w(2, "preread_timeout", formatDuration(c.PrereadTimeout))
	w(2, "proxy_protocol_timeout", formatDuration(c.ProxyProtocolTimeout))
	w(2, "limit_conn_log_level", c.LimitConnLogLevel)
	w(2, "limit_conn_status", strconv.Itoa(c.LimitConnStatus))
	w(2, "limit_conn_dry_run", onOff(c.LimitConnDryRun))
}

func formatProxy(w func(int, string, ...string), p *Proxy) {
	w(2, "proxy_connect_timeout", formatDuration(p.ConnectTimeout))
	w(2, "proxy_timeout", formatDuration(p.Timeout))
	w(2, "proxy_buffer_size", formatSize(p.BufferSize))
	w(2, "proxy_next_upstream", onOff(p.NextUpstream))
	w(2, "proxy_next_upstream_tries", strconv.Itoa(p.NextUpstreamTries))
	w(2, "proxy_next_upstream_timeout", formatDuration(p.NextUpstreamTimeout))
	w(2, "proxy_upload_rate", formatSize(p.UploadRate))
	w(2, "proxy_download_rate", formatSize(p.DownloadRate))
	w(2, "proxy_protocol", []string{"off", "on", "v2"}[p.ProxyProtocol])
	w(2, "proxy_half_close", onOff(p.HalfClose))
	w(2, "proxy_socket_keepalive", onOff(p.SocketKeepalive))
	if p.SocketRcvbuf != 0 {
		w(2, "proxy_socket_rcvbuf", formatSize(p.SocketRcvbuf))
	}
	if p.SocketSndbuf != 0 {
		w(2, "proxy_socket_sndbuf", formatSize(p.SocketSndbuf))
	}
	if p.Bind == nil {
		w(2, "proxy_bind", "off")
	} else if p.Bind.Transparent {
		w(2, "proxy_bind", p.Bind.Addr, "transparent")
	} else {
		w(2, "proxy_bind", p.Bind.Addr)
	}
	s := &p.SSL
	w(2, "proxy_ssl", onOff(s.Enabled))
	if s.Certificate != "" {
		w(2, "proxy_ssl_certificate", s.Certificate)
	}
	if s.CertificateKey != "" {
		w(2, "proxy_ssl_certificate_key", s.CertificateKey)
	}
	if s.PasswordFile != "" {
		w(2, "proxy_ssl_password_file", s.PasswordFile)
	}
	w(2, "proxy_ssl_protocols", s.Protocols...)
	w(2, "proxy_ssl_ciphers", s.Ciphers)
	if s.Name != "" {
		w(2, "proxy_ssl_name", s.Name)
	}
	w(2, "proxy_ssl_server_name", onOff(s.ServerName))
	w(2, "proxy_ssl_verify", onOff(s.Verify))
	w(2, "proxy_ssl_verify_depth", strconv.Itoa(s.VerifyDepth))
	if s.TrustedCertificate != "" {
		w(2, "proxy_ssl_trusted_certificate", s.TrustedCertificate)
	}
	if s.CRL != "" {
		w(2, "proxy_ssl_crl", s.CRL)
	}
	w(2, "proxy_ssl_session_reuse", onOff(s.SessionReuse))
	for _, c := range s.ConfCommands {
		w(2, "proxy_ssl_conf_command", c.Name, c.Value)
	}
	if len(s.ALPN) > 0 {
		w(2, "proxy_ssl_alpn", s.ALPN...)
	}
	if s.CertificateCache.Max > 0 {
		w(2, "proxy_ssl_certificate_cache", "max="+strconv.Itoa(s.CertificateCache.Max),
			"inactive="+formatDuration(s.CertificateCache.Inactive), "valid="+formatDuration(s.CertificateCache.Valid))
	}
	if s.KeyLog != "" {
		w(2, "proxy_ssl_key_log", s.KeyLog)
	}
	if s.Watch > 0 {
		w(2, "proxy_ssl_watch", formatDuration(s.Watch))
	} else {
		w(2, "proxy_ssl_watch", "off")
	}
	w(2, "proxy_ssl_prewarm", formatPrewarm(s.Prewarm)...)
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
