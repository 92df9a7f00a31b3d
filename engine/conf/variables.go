package conf

import "strings"

// knownVariable reports whether NGINX's stream core and upstream modules
// define the variable (ngx_stream_variables.c, ngx_stream_upstream.c).
// tlsrelay adds a few of its own (see docs/configuration.md). Variables of
// modules tlsrelay does not implement (ssl_*, ssl_preread_*,
// realip_*, geoip_*, map and geo results) are unknown here.
func knownVariable(name string) bool {
	if strings.HasPrefix(name, "proxy_protocol_tlv_") {
		return true
	}
	switch name {
	case "binary_remote_addr", "remote_addr", "remote_port", "proxy_protocol_addr", "proxy_protocol_port",
		"proxy_protocol_server_addr", "proxy_protocol_server_port", "server_addr", "server_port",
		"bytes_sent", "bytes_received", "session_time", "status", "connection", "nginx_version",
		"hostname", "pid", "msec", "time_iso8601", "time_local", "protocol",
		"upstream_addr", "upstream_bytes_sent", "upstream_bytes_received", "upstream_connect_time",
		"upstream_first_byte_time", "upstream_session_time", "limit_conn_status":
		return true
	// tlsrelay's own, for the access log (NGINX's stream module has no
	// upstream TLS variables).
	case "upstream_tcp_connect_time", "upstream_ssl_protocol", "upstream_ssl_cipher",
		"upstream_ssl_session_reused", "upstream_ssl_handshake_time",
		"upstream_ssl_server_subject", "upstream_ssl_error", "close_reason",
		"upstream_ssl_alpn", "upstream_ssl_curve", "upstream_ssl_handshake":
		return true
	}
	return false
}

// checkVariables checks the variables in a value as NGINX compiles it
// (CompileTemplate), with d's file and line in the error.
func checkVariables(d *directive, value string) error {
	_, err := compileWith(d, value, knownVariable)
	return err
}

// knownVariable is the package's knownVariable, and the variables
// split_clients blocks of the stream block define.
func (p *parser) knownVariable(name string) bool {
	return knownVariable(name) || p.splitVars[name] != nil || p.mapVars[name] != nil
}

func isVarChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}
