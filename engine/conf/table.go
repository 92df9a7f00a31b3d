package conf

import (
	"strconv"
	"time"
)

// directiveTable returns the directive table: one row per directive (per
// set of contexts), in the order -T prints them. Adding a directive is
// adding its row here, and its field to the Config; a directive whose
// parser, check or -T form is more than a line has them in the file of
// its topic. Rebuilt on each call (a function, not a package variable:
// the rows refer to the parser, which refers back to the table).
func directiveTable() []directiveSpec {
	var t []directiveSpec
	for _, part := range [][]directiveSpec{mainDirectives(), eventsDirectives(), streamDirectives(),
		upstreamDirectives(), serverDirectives(), coreDirectives(), proxyDirectives(), sslDirectives()} {
		t = append(t, part...)
	}
	return t
}

// Sets of contexts.
const (
	ctxStreamServer = ctxStream | ctxServer
	ctxAny          = ctxMain | ctxEvents | ctxStream | ctxServer | ctxUpstream
)

// Value accessors for slot rows: each returns the field of a level.
func proxyField[T any](f func(p *Proxy) *T) func(m *mergeable) *T {
	return func(m *mergeable) *T { return f(&m.Proxy) }
}

func sslField[T any](f func(s *SSL) *T) func(m *mergeable) *T {
	return func(m *mergeable) *T { return f(&m.Proxy.SSL) }
}

func coreField[T any](f func(c *Core) *T) func(m *mergeable) *T {
	return func(m *mergeable) *T { return f(&m.Core) }
}

// mainDirectives are the main context's rows.
func mainDirectives() []directiveSpec {
	return []directiveSpec{
		{name: "include", ctx: ctxAny, min: 1, max: 1, repeat: true, parse: (*parser).include, pos: posNowhere,
			unprinted: "the directives of the files it names are printed in its place"},
		{name: "worker_processes", ctx: ctxMain, min: 1, max: 1, parse: (*parser).workerProcesses, pos: posMain,
			mainDefault: func(m *Main) { m.WorkerProcesses = 0 },
			format: func(w *confWriter, at *formatAt) {
				if n := at.cfg.Main.WorkerProcesses; n != 0 {
					w.line("worker_processes", strconv.Itoa(n))
				} else {
					w.line("worker_processes", "auto")
				}
			}},
		{name: "worker_cpu_affinity", ctx: ctxMain, min: 1, max: noMax, parse: (*parser).workerCPUAffinity,
			pos: posMain, format: formatCPUAffinity, check: (*parser).checkCPUAffinity},
		{name: "worker_rlimit_nofile", ctx: ctxMain, min: 1, max: 1, parse: (*parser).workerRlimitNofile, pos: posMain,
			format: func(w *confWriter, at *formatAt) {
				if n := at.cfg.Main.RlimitNofile; n > 0 {
					w.line("worker_rlimit_nofile", strconv.Itoa(n))
				}
			}},
		{name: "error_log", ctx: ctxMain, min: 1, max: noMax, repeat: true, parse: (*parser).mainErrorLog, pos: posValue,
			format: func(w *confWriter, at *formatAt) { formatErrorLogs(w, at.cfg.Main.ErrorLog) }},
		{name: "pid", ctx: ctxMain, min: 1, max: 1, parse: (*parser).pid, pos: posMain,
			format: func(w *confWriter, at *formatAt) {
				if at.cfg.Main.PID != "" {
					w.line("pid", at.cfg.Main.PID)
				}
			}},
		{name: "worker_shutdown_timeout", ctx: ctxMain, min: 1, max: 1, parse: (*parser).workerShutdownTimeout,
			pos: posMain, format: func(w *confWriter, at *formatAt) {
				if t := at.cfg.Main.WorkerShutdownTimeout; t > 0 {
					w.line("worker_shutdown_timeout", formatDuration(t))
				}
			}},
		{name: "metrics_listen", ctx: ctxMain, min: 1, max: 1, parse: (*parser).metricsListen, pos: posMain,
			check: (*parser).checkMetricsListen,
			format: func(w *confWriter, at *formatAt) {
				if a := at.cfg.Main.MetricsListen; a != "" {
					w.line("metrics_listen", a)
				}
			}},
		{name: "api", ctx: ctxMain, min: 0, max: 2, parse: (*parser).api, pos: posMain, check: (*parser).checkAPI,
			format: formatAPI},
		{name: "daemon", ctx: ctxMain, min: 1, max: 1, parse: (*parser).daemon, pos: posMain,
			mainDefault: func(m *Main) { m.Daemon = true },
			format:      func(w *confWriter, _ *formatAt) { w.line("daemon", "off") }},
		{name: "events", ctx: ctxMain, block: true, parse: (*parser).events, pos: posMain,
			format: func(w *confWriter, at *formatAt) { w.block("events", nil, func() { w.rows(ctxEvents, at) }) }},
		{name: "stream", ctx: ctxMain, block: true, parse: (*parser).stream, pos: posMain,
			format: func(w *confWriter, at *formatAt) {
				if at.cfg.Stream != nil {
					w.block("stream", nil, func() { w.rows(ctxStream, at) })
				}
			}},
	}
}

// eventsDirectives are the events block's rows.
func eventsDirectives() []directiveSpec {
	t := []directiveSpec{
		{name: "worker_connections", ctx: ctxEvents, min: 1, max: 1, parse: (*parser).workerConnections, pos: posMain,
			mainDefault: func(m *Main) { m.WorkerConnections = 0 },
			format: func(w *confWriter, at *formatAt) {
				if n := at.cfg.Main.WorkerConnections; n > 0 {
					w.line("worker_connections", strconv.Itoa(n))
				}
			}},
	}
	for _, name := range []string{"use", "accept_mutex_delay", "debug_connection", "worker_aio_requests"} {
		t = append(t, directiveSpec{name: name, ctx: ctxEvents, min: 1, max: 1, parse: (*parser).ignoredEvents,
			pos: posMain, unprinted: "ignored"})
	}
	for _, name := range []string{"multi_accept", "accept_mutex"} {
		t = append(t, directiveSpec{name: name, ctx: ctxEvents, min: 1, max: 1, parse: (*parser).ignoredEventsFlag,
			pos: posMain, unprinted: "ignored"})
	}
	return t
}

// streamDirectives are the rows of the directives allowed in the stream
// block only.
func streamDirectives() []directiveSpec {
	t := []directiveSpec{
		{name: "log_format", ctx: ctxStream, min: 2, max: noMax, repeat: true, parse: (*parser).logFormat,
			pos: posValue, format: formatLogFormats},
		{name: "limit_conn_zone", ctx: ctxStream, min: 2, max: 2, repeat: true, parse: (*parser).limitConnZone,
			pos: posValue, format: formatLimitConnZones},
	}
	for _, name := range []string{"variables_hash_max_size", "variables_hash_bucket_size",
		"server_names_hash_max_size", "server_names_hash_bucket_size", "map_hash_max_size", "map_hash_bucket_size"} {
		t = append(t, directiveSpec{name: name, ctx: ctxStream, min: 1, max: 1, parse: (*parser).ignoredNumber,
			pos: posNowhere, unprinted: "no effect"})
	}
	return append(t,
		directiveSpec{name: "match", ctx: ctxStream, block: true, min: 1, max: 1, repeat: true, parse: (*parser).match,
			pos: posValue, format: formatMatches},
		directiveSpec{name: "split_clients", ctx: ctxStream, block: true, min: 2, max: 2, repeat: true,
			parse: (*parser).splitClients, pos: posValue, format: formatSplitClients},
		directiveSpec{name: "map", ctx: ctxStream, block: true, min: 2, max: 2, repeat: true,
			parse: (*parser).mapBlock, pos: posValue, format: formatMaps},
		directiveSpec{name: "upstream", ctx: ctxStream, block: true, min: 1, max: 1, repeat: true,
			parse: (*parser).upstreamBlock, pos: posValue, format: formatUpstreams},
		directiveSpec{name: "server", ctx: ctxStream, block: true, repeat: true, parse: (*parser).serverBlock,
			pos: posValue, format: formatServers},
	)
}

// upstreamDirectives are the upstream block's rows.
func upstreamDirectives() []directiveSpec {
	return []directiveSpec{
		{name: "hash", ctx: ctxUpstream, min: 1, max: 2, repeat: true, parse: (*parser).hash, pos: posValue,
			format: formatHash},
		{name: "random", ctx: ctxUpstream, min: 0, max: 2, repeat: true, parse: (*parser).random, pos: posValue,
			format: formatRandom},
		{name: "least_conn", ctx: ctxUpstream, repeat: true, parse: (*parser).leastConn, pos: posValue,
			format: formatLeastConn},
		{name: "least_time", ctx: ctxUpstream, min: 1, max: 2, repeat: true, parse: (*parser).leastTime, pos: posValue,
			format: formatLeastTime},
		{name: "zone", ctx: ctxUpstream, min: 1, max: 2, parse: (*parser).zone, pos: posNowhere,
			format: func(w *confWriter, at *formatAt) {
				if at.up.Zone != "" {
					w.line("zone", at.up.Zone, formatSize(at.up.ZoneSize))
				}
			}},
		{name: "resolver", ctx: ctxUpstream, min: 1, max: noMax, parse: (*parser).upstreamResolver, pos: posValue,
			format: func(w *confWriter, at *formatAt) {
				if at.up.Resolver != nil {
					w.line("resolver", resolverArgs(at.up.Resolver)...)
				}
			}},
		{name: "resolver_timeout", ctx: ctxUpstream, min: 1, max: 1, parse: (*parser).upstreamResolverTimeout,
			pos: posNowhere, format: func(w *confWriter, at *formatAt) {
				if t := at.up.ResolverTimeout; t != 0 {
					w.line("resolver_timeout", formatDuration(t))
				}
			}},
		{name: "server", ctx: ctxUpstream, min: 1, max: noMax, repeat: true, parse: (*parser).upstreamServer,
			pos: posValue, format: formatUpstreamServers},
	}
}

// serverDirectives are the rows of the server block's own directives and
// of the access, limit and health check directives (stream and server).
func serverDirectives() []directiveSpec {
	return []directiveSpec{
		{name: "listen", ctx: ctxServer, min: 1, max: noMax, repeat: true, parse: (*parser).listen, pos: posValue,
			format: func(w *confWriter, at *formatAt) {
				for _, l := range at.srv.Listen {
					w.line("listen", listenArgs(l)...)
				}
			}},
		{name: "proxy_pass", ctx: ctxServer, min: 1, max: 1, parse: (*parser).proxyPass, pos: posValue,
			format: func(w *confWriter, at *formatAt) { w.line("proxy_pass", at.srv.ProxyPass) }},
		{name: "limit_conn", ctx: ctxStreamServer, min: 2, max: 2, repeat: true, parse: (*parser).limitConn,
			pos: posValue, format: func(w *confWriter, at *formatAt) {
				for _, l := range at.srv.LimitConn {
					w.line("limit_conn", l.Zone, strconv.Itoa(l.Number))
				}
			}},
		{name: "set_real_ip_from", ctx: ctxStreamServer, min: 1, max: 1, repeat: true, parse: (*parser).accessRule,
			pos: posValue, format: func(w *confWriter, at *formatAt) {
				for _, r := range at.srv.RealIPFrom {
					w.line("set_real_ip_from", ruleArg(r))
				}
			}},
		{name: "allow", ctx: ctxStreamServer, min: 1, max: 1, repeat: true, parse: (*parser).accessRule,
			pos: posValue, format: formatAccess},
		{name: "deny", ctx: ctxStreamServer, min: 1, max: 1, repeat: true, parse: (*parser).accessRule,
			pos: posValue, unprinted: "allow's row prints the allow and deny rules together, in their order"},
		{name: "health_check", ctx: ctxServer, min: 0, max: noMax, parse: (*parser).healthCheck, pos: posValue,
			format: formatHealthCheck, check: (*parser).checkHealthChecks},
		{name: "health_check_timeout", ctx: ctxStreamServer, min: 1, max: 1, parse: (*parser).healthCheckTimeout,
			pos: posValue, check: (*parser).inheritHealthCheckTimeout,
			format: func(w *confWriter, at *formatAt) {
				if at.srv.HealthCheck != nil {
					w.line("health_check_timeout", formatDuration(at.srv.HealthCheckTimeout))
				}
			}},
	}
}

// coreDirectives are the rows of ngx_stream_core_module's stream and
// server directives, and of the logs.
func coreDirectives() []directiveSpec {
	return []directiveSpec{
		slot("tcp_nodelay", posCore, true, coreField(func(c *Core) *bool { return &c.TCPNoDelay }), flagArg, onOff),
		{name: "resolver", ctx: ctxStreamServer, min: 1, max: noMax, merge: mergeResolver, pos: posCore,
			format: func(w *confWriter, at *formatAt) {
				if r := at.lvl.Core.Resolver; r != nil {
					w.line("resolver", resolverArgs(r)...)
				}
			}},
		slot("resolver_timeout", posCore, defaultCoreTimeout,
			coreField(func(c *Core) *time.Duration { return &c.ResolverTimeout }), msecArg, formatDuration),
		slot("preread_buffer_size", posCore, defaultBufferSize,
			coreField(func(c *Core) *int64 { return &c.PrereadBufferSize }), sizeArg, formatSize),
		slot("preread_timeout", posCore, defaultCoreTimeout,
			coreField(func(c *Core) *time.Duration { return &c.PrereadTimeout }), msecArg, formatDuration),
		slot("proxy_protocol_timeout", posCore, defaultCoreTimeout,
			coreField(func(c *Core) *time.Duration { return &c.ProxyProtocolTimeout }), msecArg, formatDuration),
		slot("limit_conn_log_level", posCore, "error",
			coreField(func(c *Core) *string { return &c.LimitConnLogLevel }), limitConnLogLevelArg, plain),
		slot("limit_conn_status", posCore, 503,
			coreField(func(c *Core) *int { return &c.LimitConnStatus }), limitConnStatusArg, strconv.Itoa),
		slot("limit_conn_dry_run", posCore, false,
			coreField(func(c *Core) *bool { return &c.LimitConnDryRun }), flagArg, onOff),
		{name: "error_log", ctx: ctxStreamServer, min: 1, max: noMax, repeat: true, merge: mergeErrorLog,
			reset: func(m *mergeable) { m.ErrorLogs = nil }, pos: posValue,
			format: func(w *confWriter, at *formatAt) { formatErrorLogs(w, at.lvl.ErrorLogs) }},
		{name: "access_log", ctx: ctxStreamServer, min: 1, max: noMax, repeat: true, merge: mergeAccessLog,
			reset: func(m *mergeable) { m.AccessLogs = nil }, pos: posValue, format: formatAccessLogs},
	}
}

// proxyDirectives are the rows of ngx_stream_proxy_module's directives
// other than proxy_pass and proxy_ssl*.
func proxyDirectives() []directiveSpec {
	return []directiveSpec{
		slot("proxy_connect_timeout", posProxy, defaultProxyConnectTimeout,
			proxyField(func(p *Proxy) *time.Duration { return &p.ConnectTimeout }), msecArg, formatDuration),
		slot("proxy_timeout", posProxy, defaultProxyTimeout,
			proxyField(func(p *Proxy) *time.Duration { return &p.Timeout }), msecArg, formatDuration),
		withAliases(slot("proxy_buffer_size", posProxy, defaultBufferSize,
			proxyField(func(p *Proxy) *int64 { return &p.BufferSize }), sizeArg, formatSize),
			"proxy_downstream_buffer", "proxy_upstream_buffer"),
		slot("proxy_next_upstream", posProxy, true,
			proxyField(func(p *Proxy) *bool { return &p.NextUpstream }), flagArg, onOff),
		slot("proxy_next_upstream_tries", posProxy, 0,
			proxyField(func(p *Proxy) *int { return &p.NextUpstreamTries }), numArg, strconv.Itoa),
		slot("proxy_next_upstream_timeout", posProxy, 0,
			proxyField(func(p *Proxy) *time.Duration { return &p.NextUpstreamTimeout }), msecArg, formatDuration),
		slot("proxy_upload_rate", posProxy, 0,
			proxyField(func(p *Proxy) *int64 { return &p.UploadRate }), rateArg, formatSize),
		slot("proxy_download_rate", posProxy, 0,
			proxyField(func(p *Proxy) *int64 { return &p.DownloadRate }), rateArg, formatSize),
		slot("proxy_protocol", posProxy, 0,
			proxyField(func(p *Proxy) *int { return &p.ProxyProtocol }), proxyProtocolArg, formatProxyProtocol),
		slot("proxy_half_close", posProxy, false,
			proxyField(func(p *Proxy) *bool { return &p.HalfClose }), flagArg, onOff),
		slot("proxy_socket_keepalive", posProxy, false,
			proxyField(func(p *Proxy) *bool { return &p.SocketKeepalive }), flagArg, onOff),
		optSlot("proxy_socket_rcvbuf", posProxy,
			proxyField(func(p *Proxy) *int64 { return &p.SocketRcvbuf }), sizeArg, formatSize),
		optSlot("proxy_socket_sndbuf", posProxy,
			proxyField(func(p *Proxy) *int64 { return &p.SocketSndbuf }), sizeArg, formatSize),
		{name: "proxy_bind", ctx: ctxStreamServer, min: 1, max: 2, merge: mergeProxyBind, pos: posProxy,
			format: formatProxyBind},
		unprintedRow(slot("proxy_requests", posProxy, 0,
			proxyField(func(p *Proxy) *int { return &p.Requests }), numArg, strconv.Itoa), "UDP only: no effect on TCP"),
		unprintedRow(slot("proxy_responses", posProxy, -1,
			proxyField(func(p *Proxy) *int { return &p.Responses }), numArg, strconv.Itoa), "UDP only: no effect on TCP"),
	}
}

// sslDirectives are the rows of the proxy_ssl* directives.
func sslDirectives() []directiveSpec {
	return []directiveSpec{
		slot("proxy_ssl", posSSL, false, sslField(func(s *SSL) *bool { return &s.Enabled }), flagArg, onOff),
		fileRow("proxy_ssl_certificate", func(s *SSL) *string { return &s.Certificate }, certificatePath),
		fileRow("proxy_ssl_certificate_key", func(s *SSL) *string { return &s.CertificateKey }, certificateKeyPath),
		fileRow("proxy_ssl_password_file", func(s *SSL) *string { return &s.PasswordFile }, confFile),
		{name: "proxy_ssl_protocols", ctx: ctxStreamServer, min: 1, max: noMax, repeat: true, merge: mergeProtocols,
			reset:        func(m *mergeable) { m.Proxy.SSL.Protocols = nil },
			levelDefault: func(m *mergeable) { m.Proxy.SSL.Protocols = []string{"TLSv1.2", "TLSv1.3"} },
			pos:          posSSL,
			format:       func(w *confWriter, at *formatAt) { w.line("proxy_ssl_protocols", at.lvl.Proxy.SSL.Protocols...) }},
		slot("proxy_ssl_ciphers", posSSL, DefaultProxySSLCiphers,
			sslField(func(s *SSL) *string { return &s.Ciphers }), stringArg, plain),
		optSlot("proxy_ssl_name", posSSL, sslField(func(s *SSL) *string { return &s.Name }), nameArg, plain),
		slot("proxy_ssl_server_name", posSSL, false,
			sslField(func(s *SSL) *bool { return &s.ServerName }), flagArg, onOff),
		slot("proxy_ssl_verify", posSSL, false, sslField(func(s *SSL) *bool { return &s.Verify }), flagArg, onOff),
		slot("proxy_ssl_verify_depth", posSSL, 1,
			sslField(func(s *SSL) *int { return &s.VerifyDepth }), numArg, strconv.Itoa),
		fileRow("proxy_ssl_trusted_certificate", func(s *SSL) *string { return &s.TrustedCertificate }, confFile),
		fileRow("proxy_ssl_crl", func(s *SSL) *string { return &s.CRL }, confFile),
		slot("proxy_ssl_session_reuse", posSSL, true,
			sslField(func(s *SSL) *bool { return &s.SessionReuse }), flagArg, onOff),
		{name: "proxy_ssl_conf_command", ctx: ctxStreamServer, min: 2, max: 2, repeat: true, merge: mergeConfCommand,
			reset: func(m *mergeable) { m.Proxy.SSL.ConfCommands = nil }, pos: posSSL,
			format: func(w *confWriter, at *formatAt) {
				for _, c := range at.lvl.Proxy.SSL.ConfCommands {
					w.line("proxy_ssl_conf_command", c.Name, c.Value)
				}
			}},
		{name: "proxy_ssl_alpn", ctx: ctxStreamServer, min: 1, max: noMax, merge: mergeALPN, pos: posSSL,
			format: func(w *confWriter, at *formatAt) {
				if alpn := at.lvl.Proxy.SSL.ALPN; len(alpn) > 0 {
					w.line("proxy_ssl_alpn", alpn...)
				}
			}},
		{name: "proxy_ssl_verify_identity", ctx: ctxStreamServer, min: 1, max: noMax, merge: mergeIdentities, pos: posSSL,
			format: func(w *confWriter, at *formatAt) {
				if ids := at.lvl.Proxy.SSL.Identities; len(ids) > 0 {
					w.line("proxy_ssl_verify_identity", ids...)
				}
			}},
		{name: "proxy_ssl_certificate_cache", ctx: ctxStreamServer, min: 1, max: 3, merge: mergeCertificateCache,
			pos: posSSL, format: formatCertificateCache,
			levelDefault: func(m *mergeable) {
				m.Proxy.SSL.CertificateCache = CertificateCache{Inactive: defaultCertCacheInactive, Valid: defaultCertCacheValid}
			}},
		{name: "proxy_ssl_key_log", ctx: ctxStreamServer, min: 1, max: 1, merge: mergeKeyLog, pos: posSSL,
			format: func(w *confWriter, at *formatAt) {
				if f := at.lvl.Proxy.SSL.KeyLog; f != "" {
					w.line("proxy_ssl_key_log", f)
				}
			}},
		{name: "proxy_ssl_watch", ctx: ctxStreamServer, min: 1, max: 1, merge: mergeWatch, pos: posSSL,
			check: (*parser).checkWatch, format: formatWatch},
		{name: "proxy_ssl_prewarm", ctx: ctxStreamServer, min: 1, max: 2, merge: mergePrewarm, pos: posSSL,
			levelDefault: func(m *mergeable) { m.Proxy.SSL.Prewarm = Prewarm{MaxIdle: DefaultPrewarmMaxIdle} },
			check:        (*parser).checkPrewarm,
			format: func(w *confWriter, at *formatAt) {
				w.line("proxy_ssl_prewarm", formatPrewarm(at.lvl.Proxy.SSL.Prewarm)...)
			}},
	}
}

// withAliases returns r with its deprecated spellings.
func withAliases(r directiveSpec, aliases ...string) directiveSpec {
	r.aliases = aliases
	return r
}

// unprintedRow returns r without its -T form, for the reason given.
func unprintedRow(r directiveSpec, why string) directiveSpec {
	r.format, r.unprinted = nil, why
	return r
}

// fileRow is the row of a proxy_ssl_* directive naming a file, kept at
// field as resolve makes it; -T prints it when set.
func fileRow(name string, field func(s *SSL) *string, resolve func(p *parser, d *directive) (string, error)) directiveSpec {
	return directiveSpec{
		name: name, ctx: ctxStreamServer, min: 1, max: 1, pos: posSSL,
		merge: func(p *parser, m *mergeable, d *directive) error {
			v, err := resolve(p, d)
			*field(&m.Proxy.SSL) = v
			return err
		},
		format: func(w *confWriter, at *formatAt) {
			if v := *field(&at.lvl.Proxy.SSL); v != "" {
				w.line(name, v)
			}
		},
	}
}
