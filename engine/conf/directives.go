package conf

import (
	"strconv"
	"strings"
	"time"
)

// spec describes one directive in one set of contexts, with NGINX's
// argument rule (min..max arguments; max -1: no limit).
type spec struct {
	ctx      ctx
	block    bool
	min, max int
	// fn handles directives that are not mergeable.
	fn func(p *parser, d *directive, c ctx) error
	// merge applies a mergeable (stream and server level) directive to a
	// level's values. It must validate fully: applying the same directive
	// again when inheriting cannot fail.
	merge func(p *parser, m *mergeable, d *directive) error
	// reset clears the values before the first directive of a level of a
	// multi directive is applied (proxy_ssl_protocols, access_log, ...).
	reset func(m *mergeable)
	// multi: the directive may repeat at one level.
	multi bool
}

// mergeable is what stream level passes down to servers.
type mergeable struct {
	Proxy      Proxy
	Core       Core
	AccessLogs []AccessLog
	ErrorLogs  []ErrorLog
}

func defaultMergeable() mergeable {
	return mergeable{
		Proxy: Proxy{
			ConnectTimeout: 60 * time.Second,
			Timeout:        10 * time.Minute,
			BufferSize:     16 << 10,
			NextUpstream:   true,
			Responses:      -1,
			SSL: SSL{
				Protocols:    []string{"TLSv1.2", "TLSv1.3"},
				Ciphers:      DefaultProxySSLCiphers,
				VerifyDepth:  1,
				SessionReuse: true,
				Prewarm:      Prewarm{MaxIdle: DefaultPrewarmMaxIdle},
				CertificateCache: CertificateCache{
					Inactive: 10 * time.Second,
					Valid:    60 * time.Second,
				},
				Pos: map[string]Pos{},
			},
			Pos: map[string]Pos{},
		},
		Core: Core{
			TCPNoDelay:           true,
			ResolverTimeout:      30 * time.Second,
			PrereadBufferSize:    16 << 10,
			PrereadTimeout:       30 * time.Second,
			ProxyProtocolTimeout: 30 * time.Second,
			LimitConnLogLevel:    "error",
			LimitConnStatus:      503,
			Pos:                  map[string]Pos{},
		},
	}
}

func (m *mergeable) setPos(name string, pos Pos) {
	switch {
	case name == "access_log" || name == "error_log":
	case strings.HasPrefix(name, "proxy_ssl"):
		m.Proxy.SSL.Pos[name] = pos
	case strings.HasPrefix(name, "proxy_") && name != "proxy_protocol_timeout":
		m.Proxy.Pos[name] = pos
	default:
		m.Core.Pos[name] = pos
	}
}

// DefaultProxySSLCiphers is tlsrelay's default proxy_ssl_ciphers: the
// ECDHE suites with AEAD ciphers only (no RSA key exchange, no CBC). NGINX's
// default is OpenSSL's "DEFAULT"; docs/tls.md says where they differ. It
// equals tlsbridge.DefaultCiphers (this package imports nothing of
// tlsrelay's; a tlsbridge test checks that the two agree).
const DefaultProxySSLCiphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" +
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" +
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

// any1 as a spec's max: no upper limit on the number of arguments.
const any1 = -1

// specsFor returns the directive's specs, one per set of contexts (server
// is both a stream block and an upstream directive). A switch rather than a
// package-level table keeps the package free of mutable globals.
func specsFor(name string) []spec {
	one := func(c ctx, min, max int, fn func(*parser, *directive, ctx) error) []spec {
		return []spec{{ctx: c, min: min, max: max, fn: fn}}
	}
	blk := func(c ctx, min, max int, fn func(*parser, *directive, ctx) error) []spec {
		return []spec{{ctx: c, block: true, min: min, max: max, fn: fn}}
	}
	mrg := func(min, max int, f func(*parser, *mergeable, *directive) error) []spec {
		return []spec{{ctx: ctxStream | ctxServer, min: min, max: max, merge: f}}
	}
	ss := ctxStream | ctxServer
	switch name {
	// main and events
	case "worker_processes":
		return one(ctxMain, 1, 1, (*parser).workerProcesses)
	case "worker_cpu_affinity":
		return one(ctxMain, 1, any1, (*parser).workerCPUAffinity)
	case "worker_rlimit_nofile":
		return one(ctxMain, 1, 1, (*parser).workerRlimitNofile)
	case "pid":
		return one(ctxMain, 1, 1, (*parser).pid)
	case "daemon":
		return one(ctxMain, 1, 1, (*parser).daemon)
	case "worker_shutdown_timeout":
		return one(ctxMain, 1, 1, (*parser).workerShutdownTimeout)
	case "metrics_listen":
		return one(ctxMain, 1, 1, (*parser).metricsListen)
	case "events":
		return blk(ctxMain, 0, 0, (*parser).events)
	case "stream":
		return blk(ctxMain, 0, 0, (*parser).streamWithHealth)
	case "worker_connections":
		return one(ctxEvents, 1, 1, (*parser).workerConnections)
	case "use", "accept_mutex_delay", "debug_connection", "worker_aio_requests":
		return one(ctxEvents, 1, 1, (*parser).ignoredEvents)
	case "multi_accept", "accept_mutex":
		return one(ctxEvents, 1, 1, (*parser).ignoredEventsFlag)
	case "error_log":
		return []spec{
			{ctx: ctxMain, min: 1, max: any1, fn: (*parser).mainErrorLog},
			{ctx: ss, min: 1, max: any1, multi: true, merge: mergeErrorLog,
				reset: func(m *mergeable) { m.ErrorLogs = nil }},
		}

	// stream
	case "server":
		return []spec{
			{ctx: ctxStream, block: true, fn: (*parser).serverBlock},
			{ctx: ctxUpstream, min: 1, max: any1, fn: (*parser).upstreamServer},
		}
	case "upstream":
		return blk(ctxStream, 1, 1, (*parser).upstreamBlock)
	case "log_format":
		return one(ctxStream, 2, any1, (*parser).logFormat)
	case "variables_hash_max_size", "variables_hash_bucket_size":
		return one(ctxStream, 1, 1, (*parser).ignoredNumber)
	case "server_names_hash_max_size", "server_names_hash_bucket_size":
		return one(ctxStream, 1, 1, (*parser).ignoredNumber)
	case "limit_conn_zone":
		return one(ctxStream, 2, 2, (*parser).limitConnZone)
	case "limit_conn":
		return []spec{{ctx: ss, min: 2, max: 2, fn: (*parser).limitConn}}
	case "limit_conn_log_level":
		return mrg(1, 1, func(p *parser, m *mergeable, d *directive) error {
			switch d.args[0] {
			case "info", "notice", "warn", "error":
				m.Core.LimitConnLogLevel = d.args[0]
				return nil
			}
			return Errorf(d.pos, "invalid value %q in %q directive, it must be \"info\", \"notice\", \"warn\" or \"error\"", d.args[0], d.name)
		})
	case "limit_conn_status":
		return mrg(1, 1, func(p *parser, m *mergeable, d *directive) error {
			n, err := strconv.Atoi(d.args[0])
			if err != nil || n < 400 || n > 599 {
				return Errorf(d.pos, "value must be between 400 and 599")
			}
			m.Core.LimitConnStatus = n
			return nil
		})
	case "limit_conn_dry_run":
		return mrg(1, 1, func(p *parser, m *mergeable, d *directive) error { return flagArg(d, &m.Core.LimitConnDryRun) })
	case "allow", "deny", "set_real_ip_from":
		return []spec{{ctx: ss, min: 1, max: 1, fn: (*parser).accessRule}}
	case "access_log":
		return []spec{{ctx: ss, min: 1, max: any1, multi: true, merge: mergeAccessLog,
			reset: func(m *mergeable) { m.AccessLogs = nil }}}
	case "resolver":
		return []spec{
			{ctx: ss, min: 1, max: any1, merge: func(p *parser, m *mergeable, d *directive) error {
				r, err := parseResolver(d)
				m.Core.Resolver = r
				return err
			}},
			{ctx: ctxUpstream, min: 1, max: any1, fn: (*parser).upstreamResolver},
		}
	case "resolver_timeout":
		return []spec{
			{ctx: ss, min: 1, max: 1, merge: func(p *parser, m *mergeable, d *directive) error {
				return msecArg(d, &m.Core.ResolverTimeout)
			}},
			{ctx: ctxUpstream, min: 1, max: 1, fn: (*parser).upstreamResolverTimeout},
		}
	case "tcp_nodelay":
		return mrg(1, 1, func(p *parser, m *mergeable, d *directive) error { return flagArg(d, &m.Core.TCPNoDelay) })
	case "preread_buffer_size":
		return mrg(1, 1, func(p *parser, m *mergeable, d *directive) error { return sizeArg(d, &m.Core.PrereadBufferSize) })
	case "preread_timeout":
		return mrg(1, 1, func(p *parser, m *mergeable, d *directive) error { return msecArg(d, &m.Core.PrereadTimeout) })
	case "proxy_protocol_timeout":
		return mrg(1, 1, func(p *parser, m *mergeable, d *directive) error {
			return msecArg(d, &m.Core.ProxyProtocolTimeout)
		})

	case "match":
		return blk(ctxStream, 1, 1, (*parser).match)
	case "health_check":
		return one(ctxServer, 0, any1, (*parser).healthCheck)
	case "health_check_timeout":
		return one(ss, 1, 1, (*parser).healthCheckTimeout)

	// server
	case "listen":
		return one(ctxServer, 1, any1, (*parser).listen)
	case "proxy_pass":
		return one(ctxServer, 1, 1, (*parser).proxyPass)

	// upstream
	case "zone":
		return one(ctxUpstream, 1, 2, (*parser).zone)
	case "hash":
		return one(ctxUpstream, 1, 2, (*parser).hash)
	case "random":
		return one(ctxUpstream, 0, 2, (*parser).random)
	case "least_conn":
		return one(ctxUpstream, 0, 0, (*parser).leastConn)
	case "least_time":
		return one(ctxUpstream, 1, 2, (*parser).leastTime)
	}
	if s, ok := proxySpec(name); ok {
		return []spec{s}
	}
	return nil
}

// proxySpec returns the spec of a proxy_* directive (stream and server).
func proxySpec(name string) (spec, bool) {
	s := spec{ctx: ctxStream | ctxServer, min: 1, max: 1}
	set := func(f func(p *parser, m *mergeable, d *directive) error) (spec, bool) {
		s.merge = f
		return s, true
	}
	switch name {
	case "proxy_connect_timeout":
		return set(func(p *parser, m *mergeable, d *directive) error { return msecArg(d, &m.Proxy.ConnectTimeout) })
	case "proxy_timeout":
		return set(func(p *parser, m *mergeable, d *directive) error { return msecArg(d, &m.Proxy.Timeout) })
	case "proxy_buffer_size":
		return set(func(p *parser, m *mergeable, d *directive) error { return sizeArg(d, &m.Proxy.BufferSize) })
	case "proxy_next_upstream":
		return set(func(p *parser, m *mergeable, d *directive) error { return flagArg(d, &m.Proxy.NextUpstream) })
	case "proxy_next_upstream_tries":
		return set(func(p *parser, m *mergeable, d *directive) error { return numArg(d, &m.Proxy.NextUpstreamTries) })
	case "proxy_next_upstream_timeout":
		return set(func(p *parser, m *mergeable, d *directive) error {
			return msecArg(d, &m.Proxy.NextUpstreamTimeout)
		})
	case "proxy_upload_rate":
		return set(func(p *parser, m *mergeable, d *directive) error { return rateArg(d, &m.Proxy.UploadRate) })
	case "proxy_download_rate":
		return set(func(p *parser, m *mergeable, d *directive) error { return rateArg(d, &m.Proxy.DownloadRate) })
	case "proxy_protocol":
		return set(func(p *parser, m *mergeable, d *directive) error {
			switch strings.ToLower(d.args[0]) {
			case "on", "v1":
				m.Proxy.ProxyProtocol = 1
			case "off":
				m.Proxy.ProxyProtocol = 0
			case "v2":
				m.Proxy.ProxyProtocol = 2
			default:
				return Errorf(d.pos, "invalid value %q in %q directive, it must be \"on\", \"off\" or \"v2\"",
					d.args[0], d.name)
			}
			return nil
		})
	case "proxy_half_close":
		return set(func(p *parser, m *mergeable, d *directive) error { return flagArg(d, &m.Proxy.HalfClose) })
	case "proxy_socket_keepalive":
		return set(func(p *parser, m *mergeable, d *directive) error { return flagArg(d, &m.Proxy.SocketKeepalive) })
	case "proxy_socket_rcvbuf":
		return set(func(p *parser, m *mergeable, d *directive) error { return sizeArg(d, &m.Proxy.SocketRcvbuf) })
	case "proxy_socket_sndbuf":
		return set(func(p *parser, m *mergeable, d *directive) error { return sizeArg(d, &m.Proxy.SocketSndbuf) })
	case "proxy_requests":
		return set(func(p *parser, m *mergeable, d *directive) error { return numArg(d, &m.Proxy.Requests) })
	case "proxy_responses":
		return set(func(p *parser, m *mergeable, d *directive) error { return numArg(d, &m.Proxy.Responses) })
	case "proxy_bind":
		s.max = 2
		return set(mergeProxyBind)

	case "proxy_ssl":
		return set(func(p *parser, m *mergeable, d *directive) error { return flagArg(d, &m.Proxy.SSL.Enabled) })
	case "proxy_ssl_certificate":
		return set(func(p *parser, m *mergeable, d *directive) error {
			m.Proxy.SSL.Certificate = p.confPath(d.args[0])
			return checkVariables(d, d.args[0])
		})
	case "proxy_ssl_certificate_key":
		return set(func(p *parser, m *mergeable, d *directive) error {
			m.Proxy.SSL.CertificateKey = keyPath(p, d.args[0])
			return checkVariables(d, d.args[0])
		})
	case "proxy_ssl_password_file":
		return set(func(p *parser, m *mergeable, d *directive) error {
			m.Proxy.SSL.PasswordFile = p.confPath(d.args[0])
			return nil
		})
	case "proxy_ssl_trusted_certificate":
		return set(func(p *parser, m *mergeable, d *directive) error {
			m.Proxy.SSL.TrustedCertificate = p.confPath(d.args[0])
			return nil
		})
	case "proxy_ssl_crl":
		return set(func(p *parser, m *mergeable, d *directive) error {
			m.Proxy.SSL.CRL = p.confPath(d.args[0])
			return nil
		})
	case "proxy_ssl_ciphers":
		return set(func(p *parser, m *mergeable, d *directive) error {
			m.Proxy.SSL.Ciphers = d.args[0]
			return nil
		})
	case "proxy_ssl_name":
		return set(func(p *parser, m *mergeable, d *directive) error {
			m.Proxy.SSL.Name = d.args[0]
			_, err := compileName(d, d.args[0])
			return err
		})
	case "proxy_ssl_server_name":
		return set(func(p *parser, m *mergeable, d *directive) error { return flagArg(d, &m.Proxy.SSL.ServerName) })
	case "proxy_ssl_verify":
		return set(func(p *parser, m *mergeable, d *directive) error { return flagArg(d, &m.Proxy.SSL.Verify) })
	case "proxy_ssl_verify_depth":
		return set(func(p *parser, m *mergeable, d *directive) error { return numArg(d, &m.Proxy.SSL.VerifyDepth) })
	case "proxy_ssl_session_reuse":
		return set(func(p *parser, m *mergeable, d *directive) error { return flagArg(d, &m.Proxy.SSL.SessionReuse) })
	case "proxy_ssl_protocols":
		s.max, s.multi = any1, true
		s.reset = func(m *mergeable) { m.Proxy.SSL.Protocols = nil }
		return set(mergeProtocols)
	case "proxy_ssl_conf_command":
		s.min, s.max, s.multi = 2, 2, true
		s.reset = func(m *mergeable) { m.Proxy.SSL.ConfCommands = nil }
		return set(func(p *parser, m *mergeable, d *directive) error {
			m.Proxy.SSL.ConfCommands = append(m.Proxy.SSL.ConfCommands,
				ConfCommand{Name: d.args[0], Value: d.args[1], Pos: d.pos})
			return nil
		})
	case "proxy_ssl_alpn":
		s.max = any1
		return set(func(p *parser, m *mergeable, d *directive) error {
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
		})
	case "proxy_ssl_certificate_cache":
		s.max = 3
		return set(mergeCertificateCache)
	case "proxy_ssl_key_log":
		return set(func(p *parser, m *mergeable, d *directive) error {
			if strings.Contains(d.args[0], "$") {
				return Errorf(d.pos, "variables in %q are not supported", d.name)
			}
			m.Proxy.SSL.KeyLog = p.prefixPath(d.args[0])
			return nil
		})
	case "proxy_ssl_watch":
		return set(mergeWatch)
	case "proxy_ssl_prewarm":
		s.max = 2
		return set(mergePrewarm)
	}
	return spec{}, false
}

// keyPath resolves a certificate key path; engine: and store: URIs are
// kept as written.
func keyPath(p *parser, name string) string {
	if strings.HasPrefix(name, "engine:") || strings.HasPrefix(name, "store:") || strings.HasPrefix(name, "data:") {
		return name
	}
	return p.confPath(name)
}

// deprecatedAlias maps NGINX's deprecated spellings to the directive that
// replaced them.
func deprecatedAlias(name string) (string, bool) {
	switch name {
	case "proxy_downstream_buffer", "proxy_upstream_buffer":
		return "proxy_buffer_size", true
	}
	return "", false
}

// isSkipped reports NGINX main-context directives and blocks that have
// nothing to do with a stream proxy; they are skipped with a warning.
func isSkipped(name string) bool {
	switch name {
	case "user", "load_module", "master_process", "env",
		"timer_resolution", "pcre_jit", "lock_file", "worker_priority", "working_directory",
		"worker_rlimit_core", "ssl_engine", "thread_pool", "debug_points", "google_perftools_profiles",
		"ssl_object_cache_inheritable", "http", "mail", "quic_bpf":
		return true
	}
	return false
}

// isUnsupported reports directives of NGINX's stream modules that tlsrelay
// does not implement: refused as `"X" is not supported`.
func isUnsupported(name string) bool {
	if strings.HasPrefix(name, "ssl_") || strings.HasPrefix(name, "js_") ||
		strings.HasPrefix(name, "geoip_") || strings.HasPrefix(name, "zone_sync") ||
		strings.HasPrefix(name, "mqtt") {
		return true
	}
	switch name {
	case "geo", "map", "map_hash_max_size", "map_hash_bucket_size",
		"split_clients", "return", "set", "pass", "server_name",
		"state", "keyval", "keyval_zone", "proxy_session_drop",
		"proxy_bind_dynamic", "open_log_file_cache", "status_zone", "sticky", "ntlm",
		"keepalive", "keepalive_timeout", "keepalive_requests", "keepalive_time", "queue",
		"least_conn_two", "otel_exporter", "otel_trace", "otel_span_name", "proxy_pass_error_message":
		return true
	}
	return false
}
