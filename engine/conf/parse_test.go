package conf

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// parseIn parses src as t.conf in a temporary directory and returns the
// error text with the directory taken out.
func parseIn(t *testing.T, src string, opts LoadOptions) (*Config, []Warning, string) {
	t.Helper()
	dir := t.TempDir()
	cfg, warns, err := Parse(filepath.Join(dir, "t.conf"), []byte(src), opts)
	msg := ""
	if err != nil {
		msg = strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "")
	}
	return cfg, warns, msg
}

// srv wraps server-level directives in a minimal valid stream block.
func srv(body string) string {
	return "stream { server { listen 80; proxy_pass 127.0.0.1:80; " + body + " } }"
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		// grammar and contexts
		{"unknown", "stream { server { listen 80; proxy_pass x:1; proxy_ssl_verfiy on; } }",
			`unknown directive "proxy_ssl_verfiy" in t.conf:1`},
		{"unknown main", "foo;", `unknown directive "foo" in t.conf:1`},
		{"not allowed main", "proxy_pass x:1;", `"proxy_pass" directive is not allowed here in t.conf:1`},
		{"not allowed stream", "stream { proxy_pass x:1; }", `"proxy_pass" directive is not allowed here in t.conf:1`},
		{"not allowed events", "events { stream {} }", `"stream" directive is not allowed here in t.conf:1`},
		{"listen in stream", "stream { listen 80; }", `"listen" directive is not allowed here in t.conf:1`},
		{"worker in stream", "stream { worker_processes 1; }", `"worker_processes" directive is not allowed here in t.conf:1`},
		{"skipped not main", "stream { user nobody; }", `"user" directive is not allowed here in t.conf:1`},
		{"no block", "stream;", `directive "stream" has no opening "{" in t.conf:1`},
		{"block not expected", srv("proxy_ssl on {}"), `directive "proxy_ssl" is not terminated by ";" in t.conf:1`},
		{"args", srv("proxy_ssl;"), `invalid number of arguments in "proxy_ssl" directive in t.conf:1`},
		{"args too many", srv("proxy_ssl on off;"), `invalid number of arguments in "proxy_ssl" directive in t.conf:1`},
		{"stream args", "stream x {}", `invalid number of arguments in "stream" directive in t.conf:1`},
		{"include args", "include;", `invalid number of arguments in "include" directive in t.conf:1`},
		{"include missing", "include nope.conf;", `open() "nope.conf" failed (2: No such file or directory) in t.conf:1`},
		{"unexpected close", "stream {}\n}", `unexpected "}" in t.conf:2`},
		{"eof", "stream {\n", `unexpected end of file, expecting "}" in t.conf:2`},
		{"unsupported", srv("ssl_preread on;"), `"ssl_preread" is not supported in t.conf:1`},
		{"unsupported session drop", srv("proxy_session_drop on;"), `"proxy_session_drop" is not supported in t.conf:1`},
		{"unsupported udp", "stream { server { listen 53 udp; proxy_pass x:1; } }",
			`"listen ... udp" is not supported in t.conf:1`},
		{"unsupported ssl listen", "stream { server { listen 443 ssl; proxy_pass x:1; } }",
			`"listen ... ssl" is not supported in t.conf:1`},
		{"duplicate stream", "stream {} stream {}", `"stream" directive is duplicate in t.conf:1`},
		{"duplicate events", "events {} events {}", `"events" directive is duplicate in t.conf:1`},

		// main
		{"worker_processes", "worker_processes x;", `"worker_processes" directive invalid value in t.conf:1`},
		{"worker_processes dup", "worker_processes 1; worker_processes 2;", `"worker_processes" directive is duplicate in t.conf:1`},
		{"affinity", "worker_cpu_affinity 01 x;", `invalid character "x" in "worker_cpu_affinity" in t.conf:1`},
		{"affinity auto", "worker_cpu_affinity auto 2;", `invalid character "2" in "worker_cpu_affinity" in t.conf:1`},
		{"rlimit", "worker_rlimit_nofile x;", `"worker_rlimit_nofile" directive invalid number in t.conf:1`},
		{"daemon", "daemon maybe;", `invalid value "maybe" in "daemon" directive, it must be "on" or "off" in t.conf:1`},
		{"pid dup", "pid a; pid b;", `"pid" directive is duplicate in t.conf:1`},
		{"error_log level", "error_log stderr loud;", `invalid log level "loud" in t.conf:1`},
		{"error_log two levels", "error_log stderr info warn;", `duplicate log level "warn" in t.conf:1`},
		{"worker_connections", "events { worker_connections x; }", `"worker_connections" directive invalid number in t.conf:1`},
		{"multi_accept", "events { multi_accept x; }", `invalid value "x" in "multi_accept" directive, it must be "on" or "off" in t.conf:1`},

		// server and listen
		// Both name the line of "server {", as nginx -t does, not the "}".
		{"no listen", "stream {\nserver {\nproxy_pass x:1;\n\n}\n}", `no "listen" is defined for server in t.conf:2`},
		{"no proxy_pass", "stream {\nserver {\nlisten 80;\n\n}\n}", `no handler for server in t.conf:2`},
		{"no proxy_pass second server", "stream {\nserver { listen 80; proxy_pass x:1; }\n\nserver\n{\nlisten 81;\n}\n}",
			`no handler for server in t.conf:5`},
		{"listen port", srv("listen 99999;"), `invalid port in "99999" of the "listen" directive in t.conf:1`},
		{"listen no port", srv("listen 127.0.0.1;"), `no port in "127.0.0.1" of the "listen" directive in t.conf:1`},
		{"listen param", srv("listen 81 foo;"), `the invalid "foo" parameter in t.conf:1`},
		{"listen backlog", srv("listen 81 backlog=x;"), `invalid backlog "backlog=x" in t.conf:1`},
		{"listen backlog 0", srv("listen 81 backlog=0;"), `invalid backlog "backlog=0" in t.conf:1`},
		{"listen keepalive", srv("listen 81 so_keepalive=x;"), `invalid so_keepalive value: "x" in t.conf:1`},
		{"listen ipv6only", srv("listen [::]:81 ipv6only=x;"), `invalid ipv6only flags "x" in t.conf:1`},
		{"listen dup", srv("listen 80;"), `duplicate "0.0.0.0:80" address and port pair in t.conf:1`},
		{"listen dup servers", "stream { server { listen 80; proxy_pass x:1; } server { listen *:80; proxy_pass x:1; } }",
			`duplicate "0.0.0.0:80" address and port pair in t.conf:1`},
		{"listen range", srv("listen 81-82;"), `port ranges are not supported in "81-82" of the "listen" directive in t.conf:1`},
		{"proxy_pass dup", srv("proxy_pass 127.0.0.1:81;"), `"proxy_pass" directive is duplicate in t.conf:1`},
		{"proxy_pass no port", "stream { server { listen 80; proxy_pass backend; } }", `no port in upstream "backend" in t.conf:1`},
		{"proxy_pass bad port", "stream { server { listen 80; proxy_pass b:0; } }", `invalid port in upstream "b:0" in t.conf:1`},
		{"proxy_pass unix", "stream { server { listen 80; proxy_pass unix:; } }",
			`no path in the unix domain socket in upstream "unix:" in t.conf:1`},
		{"proxy_pass port on upstream", "stream { upstream b { server 127.0.0.1:1; } server { listen 80; proxy_pass b:80; } }",
			`upstream "b" may not have port 80 in t.conf:1`},

		// upstream
		{"upstream no port", "stream { upstream b { server 127.0.0.1; } }", `no port in upstream "127.0.0.1" in t.conf:1`},
		{"upstream bad port", "stream { upstream b { server 127.0.0.1:99999; } }", `invalid port in upstream "127.0.0.1:99999" in t.conf:1`},
		{"upstream no host", "stream { upstream b { server :80; } }", `no host in upstream ":80" in t.conf:1`},
		{"upstream bad v6", "stream { upstream b { server [::1; } }", `invalid host in upstream "[::1" in t.conf:1`},
		{"upstream empty", "stream { upstream b {\n} }", `no servers are inside upstream in t.conf:2`},
		{"upstream dup", "stream { upstream b { server a:1; } upstream B { server a:1; } }", `duplicate upstream "B" in t.conf:1`},
		{"weight 0", "stream { upstream b { server a:1 weight=0; } }", `invalid parameter "weight=0" in t.conf:1`},
		{"max_fails", "stream { upstream b { server a:1 max_fails=x; } }", `invalid parameter "max_fails=x" in t.conf:1`},
		{"max_conns", "stream { upstream b { server a:1 max_conns=-1; } }", `invalid parameter "max_conns=-1" in t.conf:1`},
		{"fail_timeout ms", "stream { upstream b { server a:1 fail_timeout=10ms; } }", `invalid parameter "fail_timeout=10ms" in t.conf:1`},
		{"server param", "stream { upstream b { server a:1 foo; } }", `invalid parameter "foo" in t.conf:1`},
		{"slow_start", "stream { upstream b { server a:1 slow_start=10s; } }", `"server ... slow_start" is not supported in t.conf:1`},
		{"backup with hash", "stream { upstream b { hash $remote_addr; server a:1 backup; } }",
			`balancing method does not support parameter "backup" in t.conf:1`},
		{"only backup then hash", "stream { upstream b { server a:2 backup; hash $remote_addr; } }",
			`no servers in upstream "b" in t.conf:1`},
		{"only backup then hash, lines", "stream {\nupstream b {\nserver a:2 backup;\nhash $remote_addr;\n}\n}",
			`no servers in upstream "b" in t.conf:2`},
		{"hash args", "stream { upstream b { server a:1; hash; } }", `invalid number of arguments in "hash" directive in t.conf:1`},
		{"hash param", "stream { upstream b { server a:1; hash $x foo; } }", `invalid parameter "foo" in t.conf:1`},
		{"random param", "stream { upstream b { server a:1; random foo; } }", `invalid parameter "foo" in t.conf:1`},
		{"random two param", "stream { upstream b { server a:1; random two foo; } }", `invalid parameter "foo" in t.conf:1`},
		{"least_conn args", "stream { upstream b { server a:1; least_conn x; } }", `invalid number of arguments in "least_conn" directive in t.conf:1`},
		{"least_time", "stream { upstream b { server a:1; least_time x; } }", `invalid parameter "x" in t.conf:1`},
		{"zone size", "stream { upstream b { server a:1; zone z 1x; } }", `invalid zone size "1x" in t.conf:1`},
		{"zone zero", "stream { upstream b { server a:1; zone z; } }", `zero size shared memory zone "z" in t.conf:1`},
		{"zone small", "stream { upstream b { server a:1; zone z 1k; } }", `zone "1k" is too small in t.conf:1`},
		{"resolve no zone", "stream { resolver 127.0.0.1; upstream b { server a:1 resolve; } }",
			`resolving names at run time requires upstream "b" to be in shared memory in t.conf:1`},
		{"resolve no resolver", "stream { upstream b { zone z 64k; server a:1 resolve; } }",
			`no resolver defined to resolve names at run time in upstream "b" in t.conf:1`},
		{"service needs resolve", "stream { upstream b { server a service=http; } }",
			`service upstream "a" requires "resolve" parameter in t.conf:1`},

		// proxy
		{"flag", srv("proxy_ssl maybe;"), `invalid value "maybe" in "proxy_ssl" directive, it must be "on" or "off" in t.conf:1`},
		{"time", srv("proxy_timeout 1x;"), `"proxy_timeout" directive invalid value in t.conf:1`},
		{"connect time", srv("proxy_connect_timeout 1y;"), `"proxy_connect_timeout" directive invalid value in t.conf:1`},
		{"time dup", srv("proxy_timeout 1s; proxy_timeout 2s;"), `"proxy_timeout" directive is duplicate in t.conf:1`},
		{"size", srv("proxy_buffer_size 1x;"), `"proxy_buffer_size" directive invalid value in t.conf:1`},
		{"number", srv("proxy_next_upstream_tries x;"), `"proxy_next_upstream_tries" directive invalid number in t.conf:1`},
		{"depth", srv("proxy_ssl_verify_depth -1;"), `"proxy_ssl_verify_depth" directive invalid number in t.conf:1`},
		{"rate", srv("proxy_upload_rate 1q;"), `"proxy_upload_rate" directive invalid value in t.conf:1`},
		{"rate variable", srv("proxy_download_rate $r;"), `variables in "proxy_download_rate" are not supported in t.conf:1`},
		{"proxy_protocol", srv("proxy_protocol v3;"), `invalid value "v3" in "proxy_protocol" directive, it must be "on", "off" or "v2" in t.conf:1`},
		{"protocols", srv("proxy_ssl_protocols TLSv1 TLSv9;"), `invalid value "TLSv9" in t.conf:1`},
		{"conf_command args", srv("proxy_ssl_conf_command a;"), `invalid number of arguments in "proxy_ssl_conf_command" directive in t.conf:1`},
		{"bind param", srv("proxy_bind 1.2.3.4 foo;"), `invalid parameter "foo" in t.conf:1`},
		{"bind dup", srv("proxy_bind off; proxy_bind off;"), `"proxy_bind" directive is duplicate in t.conf:1`},
		{"cert cache", srv("proxy_ssl_certificate_cache max=0;"), `invalid parameter "max=0" in t.conf:1`},
		{"cert cache max", srv("proxy_ssl_certificate_cache inactive=1s;"), `"proxy_ssl_certificate_cache" must have "max" parameter in t.conf:1`},
		{"alpn", srv(`proxy_ssl_alpn "";`), `invalid value "" in "proxy_ssl_alpn" directive in t.conf:1`},
		{"verify without trusted", "stream { server { listen 80; proxy_pass a:1; proxy_ssl on;\nproxy_ssl_verify on; } }",
			`no proxy_ssl_trusted_certificate for proxy_ssl_verify in t.conf:2`},
		{"verify inherited without trusted", "stream { proxy_ssl_verify on;\nserver { listen 80; proxy_pass a:1; proxy_ssl on; } }",
			`no proxy_ssl_trusted_certificate for proxy_ssl_verify in t.conf:1`},
		{"cert without key", srv("proxy_ssl on; proxy_ssl_certificate /x.crt;"),
			`no "proxy_ssl_certificate_key" is defined for certificate "/x.crt" in t.conf:1`},
		{"cert missing", srv("proxy_ssl on; proxy_ssl_certificate /nonexistent/x.crt; proxy_ssl_certificate_key /x.key;"),
			`cannot load certificate "/nonexistent/x.crt": no such file or directory in t.conf:1`},
		{"trusted missing", srv("proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate /nonexistent/ca;"),
			`cannot load trusted certificate "/nonexistent/ca": no such file or directory in t.conf:1`},
		{"files not read without proxy_ssl", srv("proxy_ssl_certificate /nonexistent/x.crt; proxy_ssl_verify on;"), ""},
		{"trusted not read without verify", srv("proxy_ssl on; proxy_ssl_trusted_certificate /nonexistent/ca;"), ""},

		// variables
		{"unknown variable", "stream { server { listen 80; proxy_pass $backend; } }", `unknown "backend" variable in t.conf:1`},
		{"unknown variable in format", "stream { log_format f '$remote_addr $http_host'; }", `unknown "http_host" variable in t.conf:1`},
		{"unclosed bracket", srv("proxy_ssl_name ${server_addr;"), `the closing bracket in "server_addr" variable is missing in t.conf:1`},
		{"empty variable name", srv("proxy_ssl_name a$;"), `invalid variable name in "a$" in t.conf:1`},
		{"unknown variable in if", "stream { log_format f x; access_log /tmp/x f if=$loggable; }", `unknown "loggable" variable in t.conf:1`},
		{"known variables", "stream { log_format f '$remote_addr ${status}x $upstream_addr $proxy_protocol_tlv_0x01'; " +
			"server { listen 80; proxy_pass $remote_addr:$server_port; proxy_bind $server_addr; } }", ""},

		// core and logs
		{"tcp_nodelay", srv("tcp_nodelay x;"), `invalid value "x" in "tcp_nodelay" directive, it must be "on" or "off" in t.conf:1`},
		{"resolver valid", "stream { resolver 127.0.0.1 valid=x; }", `invalid parameter: valid=x in t.conf:1`},
		{"resolver ipv6", "stream { resolver 127.0.0.1 ipv6=x; }", `invalid parameter: ipv6=x in t.conf:1`},
		{"resolver both off", "stream { resolver 127.0.0.1 ipv4=off ipv6=off; }", `"ipv4" and "ipv6" cannot both be "off" in t.conf:1`},
		{"resolver dup", "stream { resolver 127.0.0.1; resolver 127.0.0.2; }", `"resolver" directive is duplicate in t.conf:1`},
		{"resolver_timeout", "stream { resolver_timeout x; }", `"resolver_timeout" directive invalid value in t.conf:1`},
		{"preread", srv("preread_timeout x;"), `"preread_timeout" directive invalid value in t.conf:1`},
		{"variables hash server", srv("variables_hash_max_size 10;"), `"variables_hash_max_size" directive is not allowed here in t.conf:1`},
		{"access_log no format", srv("access_log /tmp/x;"), `log format is not specified in t.conf:1`},
		{"access_log unknown format", srv("access_log /tmp/x nosuch;"), `unknown log format "nosuch" in t.conf:1`},
		{"access_log later format", "stream { access_log /tmp/x f; log_format f x; }", `unknown log format "f" in t.conf:1`},
		{"access_log buffer", "stream { log_format f x; access_log /tmp/a f buffer=x; }", `invalid buffer size "x" in t.conf:1`},
		{"access_log gzip", "stream { log_format f x; access_log /tmp/a f gzip=10; }", `invalid compression level "10" in t.conf:1`},
		{"access_log flush", "stream { log_format f x; access_log /tmp/a f flush=1s; }", `no buffer is defined for access_log "/tmp/a" in t.conf:1`},
		{"access_log param", "stream { log_format f x; access_log /tmp/a f foo; }", `invalid parameter "foo" in t.conf:1`},
		{"access_log off param", "stream { access_log off foo; }", `invalid parameter "foo" in t.conf:1`},
		{"log_format dup", "stream { log_format f x; log_format f y; }", `duplicate "log_format" name "f" in t.conf:1`},
		{"api without metrics_listen", "api;", `"api" needs "metrics_listen": the API is served on its address in t.conf:1`},
		{"api bad param", "metrics_listen 127.0.0.1:9100; api write=yes;", `invalid parameter "write=yes" of the "api" directive (write=on|off, allow=ADDRESS/PREFIX,...) in t.conf:1`},
		{"api bad allow", "metrics_listen 127.0.0.1:9100; api allow=10.0.0.0/33;", `invalid address "10.0.0.0/33" in the allow list of the "api" directive in t.conf:1`},
		{"api", "metrics_listen 127.0.0.1:9100; api write=on allow=127.0.0.1,::1;", ""},
		{"log_format builtin", "stream { log_format tlsrelay x; }", `duplicate "log_format" name "tlsrelay": it is tlsrelay's built-in format in t.conf:1`},
		{"access_log builtin", srv("access_log /tmp/x tlsrelay buffer=4k;"), ""},
		{"log_format escape", "stream { log_format f escape=foo x; }", `unknown log format escaping "foo" in t.conf:1`},
		{"log_format args", "stream { log_format f; }", `invalid number of arguments in "log_format" directive in t.conf:1`},

		// -g
		{"global", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, msg := parseIn(t, tt.src, LoadOptions{})
			if tt.want == "" {
				if msg != "" {
					t.Fatalf("Parse(%q) error = %s, want none", tt.src, msg)
				}
				return
			}
			if want := "[emerg] " + tt.want; msg != want {
				t.Errorf("Parse(%q)\n error = %s\n want    %s", tt.src, msg, want)
			}
		})
	}
}

func TestGlobalDirectives(t *testing.T) {
	cfg, _, msg := parseIn(t, "worker_processes 2;", LoadOptions{Directives: "pid /run/x.pid; daemon off;"})
	if msg != "" {
		t.Fatal(msg)
	}
	if cfg.Main.PID != "/run/x.pid" || cfg.Main.Daemon || cfg.Main.WorkerProcesses != 2 {
		t.Errorf("Main = %+v", cfg.Main)
	}
	for _, tt := range []struct{ g, want string }{
		{"pid x", `[emerg] unexpected end of parameter, expecting ";" in command line`},
		{"events {}", `[emerg] block directives are not supported in -g option in command line`},
		{"worker_processes 3;", `[emerg] "worker_processes" directive is duplicate in command line`},
		{"proxy_ssl on;", `[emerg] "proxy_ssl" directive is not allowed here in command line`},
	} {
		_, _, msg := parseIn(t, "worker_processes 2;", LoadOptions{Directives: tt.g})
		if msg != tt.want {
			t.Errorf("-g %q: error = %s, want %s", tt.g, msg, tt.want)
		}
	}
}

func TestWarnings(t *testing.T) {
	src := "user nobody;\nload_module x.so;\nhttp { include nonexistent/*.conf; server { listen 80; } }\n" +
		"daemon on;\nevents { use epoll; }\nstream { upstream b { server a:1; random; least_conn; }\n" +
		"server { listen 80; proxy_pass b; proxy_downstream_buffer 1k; proxy_ssl_protocols TLSv1.2 TLSv1.2; } }\n"
	_, warns, msg := parseIn(t, src, LoadOptions{})
	if msg != "" {
		t.Fatal(msg)
	}
	var got []string
	for _, w := range warns {
		got = append(got, strings.TrimPrefix(w.String(), "[warn] "))
	}
	want := []string{
		`"user" directive is ignored: tlsrelay is a stream proxy only`,
		`"load_module" directive is ignored: tlsrelay is a stream proxy only`,
		`"http" directive is ignored: tlsrelay is a stream proxy only`,
		`"daemon on" is ignored: tlsrelay always runs in the foreground`,
		`"use" directive is ignored`,
		`load balancing method redefined`,
		`the "proxy_downstream_buffer" directive is deprecated, use the "proxy_buffer_size" directive instead`,
		`duplicate value "TLSv1.2"`,
	}
	if len(got) != len(want) {
		t.Fatalf("warnings = %q, want %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]+" in ") {
			t.Errorf("warning %d = %q, want %q in ...", i, got[i], want[i])
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg, _, msg := parseIn(t, "stream { server { listen 12345; proxy_pass 127.0.0.1:9443; } }", LoadOptions{})
	if msg != "" {
		t.Fatal(msg)
	}
	// worker_processes auto and worker_connections derived from the
	// descriptor limit (ConnectionsPerLoop): tlsrelay's defaults, not
	// NGINX's 1 and 512 (docs/configuration.md).
	if m := cfg.Main; m.WorkerProcesses != 0 || m.WorkerConnections != 0 || !m.Daemon || m.PID != "" {
		t.Errorf("Main defaults = %+v", m)
	}
	s := cfg.Stream.Servers[0]
	if got := s.Listen[0]; got.Addr != "0.0.0.0:12345" || got.Backlog != 511 || !got.IPv6Only || got.Network != "tcp" {
		t.Errorf("Listen = %+v", got)
	}
	p := s.Proxy
	want := Proxy{
		ConnectTimeout: 60 * time.Second, Timeout: 10 * time.Minute, BufferSize: 16384, NextUpstream: true,
		Responses: -1, Pos: map[string]Pos{},
		SSL: SSL{Protocols: []string{"TLSv1.2", "TLSv1.3"}, Ciphers: DefaultProxySSLCiphers, VerifyDepth: 1, SessionReuse: true,
			CertificateCache: CertificateCache{Inactive: 10 * time.Second, Valid: 60 * time.Second},
			Prewarm:          Prewarm{MaxIdle: DefaultPrewarmMaxIdle}, Pos: map[string]Pos{}},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Proxy defaults =\n%+v\nwant\n%+v", p, want)
	}
	c := s.Core
	if !c.TCPNoDelay || c.ResolverTimeout != 30*time.Second || c.PrereadBufferSize != 16384 ||
		c.PrereadTimeout != 30*time.Second || c.ProxyProtocolTimeout != 30*time.Second || c.Resolver != nil {
		t.Errorf("Core defaults = %+v", c)
	}
	u := s.Upstream
	if u == nil || !u.Implicit || len(u.Servers) != 1 || u.Servers[0].Host != "127.0.0.1" || u.Servers[0].Port != 9443 ||
		u.Servers[0].Weight != 1 || u.Servers[0].MaxFails != 1 || u.Servers[0].FailTimeout != 10*time.Second {
		t.Errorf("implicit upstream = %+v", u)
	}
	if len(s.AccessLogs) != 0 {
		t.Errorf("AccessLogs = %v, want none (off by default)", s.AccessLogs)
	}
}

func TestValues(t *testing.T) {
	src := `worker_processes auto;
worker_cpu_affinity 0001 0010;
worker_rlimit_nofile 65536;
error_log logs/error.log warn;
pid run/tlsrelay.pid;
events { worker_connections 4096; }
stream {
    log_format basic escape=json '$remote_addr [$time_local] '
                     '$status';
    access_log logs/stream.log basic buffer=32k flush=5s;
    resolver 127.0.0.53:53 [::1] valid=30s ipv6=off;
    proxy_connect_timeout 5s;
    proxy_ssl on;
    proxy_ssl_protocols TLSv1.3;
    proxy_ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    proxy_ssl_server_name on;
    upstream backend {
        hash $remote_addr consistent;
        zone backend 64k;
        server 127.0.0.1:9443 weight=5 max_fails=3 fail_timeout=30s max_conns=100;
        server [::1]:9444 down;
        server unix:/run/be.sock;
    }
    server {
        listen 127.0.0.1:12345 backlog=128 reuseport so_keepalive=30m:10s:3 proxy_protocol;
        listen [::]:12345 ipv6only=off;
        listen unix:/run/tlsrelay.sock;
        proxy_pass backend;
        proxy_timeout 1m30s;
        proxy_buffer_size 32k;
        proxy_protocol v2;
        proxy_bind 127.0.0.2 transparent;
        proxy_ssl_name backend.example.com;
        proxy_ssl_conf_command Groups X25519;
        proxy_ssl_conf_command Options -SessionTicket;
        access_log off;
        tcp_nodelay off;
    }
    server {
        listen 12346;
        proxy_pass backend;
        proxy_ssl off;
        proxy_next_upstream_tries 3;
        proxy_ssl_protocols TLSv1.2;
        proxy_ssl_protocols TLSv1.3;
    }
}
`
	cfg, warns, msg := parseIn(t, src, LoadOptions{Prefix: "/srv"})
	if msg != "" {
		t.Fatal(msg)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	m := cfg.Main
	if m.WorkerProcesses != 0 || !reflect.DeepEqual(m.CPUAffinity.Masks, []uint64{1, 2}) || m.RlimitNofile != 65536 ||
		m.PID != "/srv/run/tlsrelay.pid" || m.WorkerConnections != 4096 ||
		!reflect.DeepEqual(m.ErrorLog, []ErrorLog{{Path: "/srv/logs/error.log", Level: "warn", Pos: m.ErrorLog[0].Pos}}) {
		t.Errorf("Main = %+v", m)
	}
	st := cfg.Stream
	if f := st.LogFormats["basic"]; f == nil || f.Escape != "json" || f.Format != "$remote_addr [$time_local] $status" {
		t.Errorf("log_format = %+v", f)
	}
	u := st.Upstream("backend")
	if u == nil || u.Method != "hash" || u.HashKey != "$remote_addr" || !u.Consistent || u.Zone != "backend" || u.ZoneSize != 65536 {
		t.Fatalf("upstream = %+v", u)
	}
	wantServers := []UpstreamServer{
		{Addr: "127.0.0.1:9443", Host: "127.0.0.1", Port: 9443, Weight: 5, MaxFails: 3, FailTimeout: 30 * time.Second, MaxConns: 100},
		{Addr: "[::1]:9444", Host: "::1", Port: 9444, Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second, Down: true},
		{Addr: "unix:/run/be.sock", Host: "/run/be.sock", Unix: true, Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second},
	}
	for i := range u.Servers {
		u.Servers[i].Pos = Pos{}
	}
	if !reflect.DeepEqual(u.Servers, wantServers) {
		t.Errorf("servers =\n%+v\nwant\n%+v", u.Servers, wantServers)
	}
	s1, s2 := st.Servers[0], st.Servers[1]
	if s1.Upstream != u || s2.Upstream != u {
		t.Errorf("proxy_pass backend does not point at the upstream block")
	}
	l := s1.Listen
	if l[0].Addr != "127.0.0.1:12345" || l[0].Backlog != 128 || !l[0].ReusePort || !l[0].ProxyProtocol ||
		l[0].KeepAlive != (KeepAlive{Mode: 2, Idle: 30 * time.Minute, Intvl: 10 * time.Second, Cnt: 3}) {
		t.Errorf("listen 0 = %+v", l[0])
	}
	if l[1].Addr != "[::]:12345" || l[1].IPv6Only || l[2].Addr != "unix:/run/tlsrelay.sock" || l[2].Network != "unix" {
		t.Errorf("listen 1, 2 = %+v %+v", l[1], l[2])
	}
	p1 := s1.Proxy
	if p1.ConnectTimeout != 5*time.Second || p1.Timeout != 90*time.Second || p1.BufferSize != 32768 ||
		p1.ProxyProtocol != 2 || p1.Bind == nil || *p1.Bind != (Bind{Addr: "127.0.0.2", Transparent: true}) {
		t.Errorf("server 1 proxy = %+v", p1)
	}
	if !p1.SSL.Enabled || !p1.SSL.ServerName || p1.SSL.Name != "backend.example.com" ||
		!reflect.DeepEqual(p1.SSL.Protocols, []string{"TLSv1.3"}) || len(p1.SSL.ConfCommands) != 2 ||
		p1.SSL.ConfCommands[0].Name != "Groups" || p1.SSL.ConfCommands[1].Value != "-SessionTicket" {
		t.Errorf("server 1 ssl = %+v", p1.SSL)
	}
	if p1.SSL.Pos["proxy_ssl"].Line != 13 || p1.SSL.Pos["proxy_ssl_name"].Line != 33 || p1.Pos["proxy_timeout"].Line != 29 {
		t.Errorf("positions = %v %v", p1.SSL.Pos, p1.Pos)
	}
	if len(s1.AccessLogs) != 0 || s1.Core.TCPNoDelay {
		t.Errorf("server 1 logs/core = %+v %+v", s1.AccessLogs, s1.Core)
	}
	p2 := s2.Proxy
	if p2.SSL.Enabled || p2.NextUpstreamTries != 3 || p2.ConnectTimeout != 5*time.Second ||
		!reflect.DeepEqual(p2.SSL.Protocols, []string{"TLSv1.2", "TLSv1.3"}) ||
		len(p2.SSL.ConfCommands) != 1 || p2.SSL.ConfCommands[0].Name != "Ciphersuites" || !p2.SSL.ServerName {
		t.Errorf("server 2 proxy (inherited) = %+v", p2)
	}
	if len(s2.AccessLogs) != 1 || s2.AccessLogs[0].Path != "/srv/logs/stream.log" || s2.AccessLogs[0].Buffer != 32768 ||
		s2.AccessLogs[0].Flush != 5*time.Second || s2.AccessLogs[0].Format != "basic" {
		t.Errorf("server 2 access logs = %+v", s2.AccessLogs)
	}
	r := s2.Core.Resolver
	if r == nil || !reflect.DeepEqual(r.Addrs, []string{"127.0.0.53:53", "[::1]"}) || r.Valid != 30*time.Second || !r.IPv4 || r.IPv6 {
		t.Errorf("resolver = %+v", r)
	}
	if len(s2.ErrorLogs) != 1 || s2.ErrorLogs[0].Level != "warn" {
		t.Errorf("server 2 error logs (from main) = %+v", s2.ErrorLogs)
	}
	if st.Proxy.SSL.Enabled != true || st.Proxy.Pos["proxy_connect_timeout"].Line != 12 {
		t.Errorf("stream level proxy = %+v", st.Proxy)
	}
}

func TestInclude(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("tlsrelay.conf", "worker_processes 2;\nstream {\n    include conf.d/*.conf;\n    include none.d/*.conf;\n}\n")
	write("conf.d/a.conf", "upstream b { server 127.0.0.1:1; }\n")
	write("conf.d/b.conf", "server { listen 80; proxy_pass b; include snippets/ssl; }\n")
	write("snippets/ssl", "proxy_ssl on;\n\nproxy_ssl_verify on;\n")
	_, _, err := Load(filepath.Join(dir, "tlsrelay.conf"), LoadOptions{})
	want := "[emerg] no proxy_ssl_trusted_certificate for proxy_ssl_verify in " + filepath.Join(dir, "snippets/ssl") + ":3"
	if err == nil || err.Error() != want {
		t.Fatalf("Load error = %v, want %s", err, want)
	}
	write("snippets/ssl", "proxy_ssl on;\n")
	cfg, _, err := Load(filepath.Join(dir, "tlsrelay.conf"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Stream.Servers[0]; !s.Proxy.SSL.Enabled || s.Upstream == nil || s.Upstream.Name != "b" {
		t.Errorf("server = %+v", s)
	}
	write("loop.conf", "include loop.conf;\n")
	if _, _, err := Load(filepath.Join(dir, "loop.conf"), LoadOptions{}); err == nil || !strings.Contains(err.Error(), "too many nested includes") {
		t.Errorf("include loop: %v", err)
	}
	if _, _, err := Load(filepath.Join(dir, "missing.conf"), LoadOptions{}); err == nil ||
		err.Error() != `[emerg] open() "`+filepath.Join(dir, "missing.conf")+`" failed (2: No such file or directory)` {
		t.Errorf("missing main file: %v", err)
	}
}

func TestInsecure(t *testing.T) {
	cfg, _, msg := parseIn(t, "stream { proxy_ssl on; proxy_ssl_protocols TLSv1 TLSv1.1 TLSv1.2;\n"+
		"server { listen 80; proxy_pass a:1; }\nserver { listen 81; proxy_pass a:1; }\n"+
		"server { listen 82; proxy_pass a:1; proxy_ssl off; } }", LoadOptions{})
	if msg != "" {
		t.Fatal(msg)
	}
	ws := cfg.Insecure()
	if len(ws) != 2 {
		t.Fatalf("Insecure() = %v, want 2 warnings (deduplicated)", ws)
	}
	if !strings.HasPrefix(ws[0].Msg, `"proxy_ssl_verify" is off`) || ws[0].Pos.Line != 1 {
		t.Errorf("warning 0 = %v", ws[0])
	}
	if ws[1].Msg != `"proxy_ssl_protocols" enables TLSv1 TLSv1.1, which are insecure` || ws[1].Pos.Line != 1 {
		t.Errorf("warning 1 = %v", ws[1])
	}
}

func TestFormatRoundTrip(t *testing.T) {
	src := `stream {
    log_format f "$remote_addr $status";
    upstream b { least_conn; server 127.0.0.1:1 weight=2 backup; server 127.0.0.1:2; }
    server { listen 80 so_keepalive=on; proxy_pass b; proxy_ssl on; proxy_ssl_name "a b";
             access_log /tmp/x f gzip; proxy_ssl_conf_command Groups X25519; }
}`
	cfg, _, msg := parseIn(t, src, LoadOptions{})
	if msg != "" {
		t.Fatal(msg)
	}
	out := cfg.Format()
	cfg2, _, msg := parseIn(t, out, LoadOptions{})
	if msg != "" {
		t.Fatalf("re-parsing -T output: %s\n%s", msg, out)
	}
	if out2 := cfg2.Format(); out2 != out {
		t.Errorf("Format is not stable:\n%s\n---\n%s", out, out2)
	}
}
