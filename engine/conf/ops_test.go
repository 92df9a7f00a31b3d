package conf

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOpsDirectives covers the operations directives: worker_shutdown_timeout
// (NGINX's), metrics_listen and proxy_ssl_watch (tlsrelay's own) and
// proxy_ssl_key_log (NGINX Plus's). Paths in src may use DIR for a
// directory holding a test PKI (client.pem, client.key, ca.pem, crl.pem).
func TestOpsDirectives(t *testing.T) {
	dir, _ := writePKI(t)
	cert := "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key client.key;"
	trust := "proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.pem;"
	tests := []struct {
		name, src string
		// want is the error without "[emerg] " and with the directory as
		// DIR; "" means the configuration is accepted and check runs.
		want  string
		check func(t *testing.T, c *Config)
	}{
		// worker_shutdown_timeout
		{name: "shutdown default", src: "", check: func(t *testing.T, c *Config) {
			if c.Main.WorkerShutdownTimeout != 0 {
				t.Errorf("WorkerShutdownTimeout = %v, want 0 (no limit)", c.Main.WorkerShutdownTimeout)
			}
		}},
		{name: "shutdown set", src: "\nworker_shutdown_timeout 1m30s;", check: func(t *testing.T, c *Config) {
			if c.Main.WorkerShutdownTimeout != 90*time.Second || c.Main.Pos["worker_shutdown_timeout"].Line != 2 {
				t.Errorf("WorkerShutdownTimeout = %v at %v", c.Main.WorkerShutdownTimeout, c.Main.Pos["worker_shutdown_timeout"])
			}
		}},
		{name: "shutdown ms", src: "worker_shutdown_timeout 1500ms;", check: func(t *testing.T, c *Config) {
			if c.Main.WorkerShutdownTimeout != 1500*time.Millisecond {
				t.Errorf("WorkerShutdownTimeout = %v", c.Main.WorkerShutdownTimeout)
			}
		}},
		{name: "shutdown bad", src: "worker_shutdown_timeout soon;", want: `"worker_shutdown_timeout" directive invalid value in DIR/t.conf:1`},
		{name: "shutdown dup", src: "worker_shutdown_timeout 1s;\nworker_shutdown_timeout 1s;",
			want: `"worker_shutdown_timeout" directive is duplicate in DIR/t.conf:2`},
		{name: "shutdown in stream", src: "stream { worker_shutdown_timeout 1s; }",
			want: `"worker_shutdown_timeout" directive is not allowed here in DIR/t.conf:1`},

		// metrics_listen
		{name: "metrics ipv4", src: "\nmetrics_listen 127.0.0.1:9100;", check: func(t *testing.T, c *Config) {
			if c.Main.MetricsListen != "127.0.0.1:9100" || c.Main.MetricsListenPos.Line != 2 || c.Main.Pos["metrics_listen"].Line != 2 {
				t.Errorf("MetricsListen = %q at %v", c.Main.MetricsListen, c.Main.MetricsListenPos)
			}
		}},
		{name: "metrics ipv6", src: "metrics_listen [::1]:9100;", check: func(t *testing.T, c *Config) {
			if c.Main.MetricsListen != "[::1]:9100" {
				t.Errorf("MetricsListen = %q", c.Main.MetricsListen)
			}
		}},
		{name: "metrics star", src: "metrics_listen *:9100;", check: func(t *testing.T, c *Config) {
			if c.Main.MetricsListen != "0.0.0.0:9100" {
				t.Errorf("MetricsListen = %q", c.Main.MetricsListen)
			}
		}},
		{name: "metrics name", src: "metrics_listen localhost:9100;", check: func(t *testing.T, c *Config) {
			if c.Main.MetricsListen != "localhost:9100" {
				t.Errorf("MetricsListen = %q", c.Main.MetricsListen)
			}
		}},
		{name: "metrics default", src: "", check: func(t *testing.T, c *Config) {
			if c.Main.MetricsListen != "" || !c.Main.MetricsListenPos.IsZero() {
				t.Errorf("MetricsListen = %q", c.Main.MetricsListen)
			}
		}},
		{name: "metrics no port", src: "metrics_listen 127.0.0.1;",
			want: `no port in "127.0.0.1" of the "metrics_listen" directive (ADDRESS:PORT expected, e.g. 127.0.0.1:9100) in DIR/t.conf:1`},
		{name: "metrics bare port", src: "metrics_listen 9100;",
			want: `no address in "9100" of the "metrics_listen" directive (ADDRESS:PORT expected, e.g. 127.0.0.1:9100) in DIR/t.conf:1`},
		{name: "metrics bad port", src: "metrics_listen 127.0.0.1:99999;",
			want: `invalid port in "127.0.0.1:99999" of the "metrics_listen" directive (ADDRESS:PORT expected, e.g. 127.0.0.1:9100) in DIR/t.conf:1`},
		{name: "metrics no host", src: "metrics_listen :9100;",
			want: `no host in ":9100" of the "metrics_listen" directive (ADDRESS:PORT expected, e.g. 127.0.0.1:9100) in DIR/t.conf:1`},
		{name: "metrics unix", src: "metrics_listen unix:/run/m.sock;",
			want: `unix domain sockets are not supported in "unix:/run/m.sock" of the "metrics_listen" directive (ADDRESS:PORT expected, e.g. 127.0.0.1:9100) in DIR/t.conf:1`},
		{name: "metrics dup", src: "metrics_listen 127.0.0.1:9100;\nmetrics_listen 127.0.0.1:9101;",
			want: `"metrics_listen" directive is duplicate in DIR/t.conf:2`},
		{name: "metrics args", src: "metrics_listen 127.0.0.1:1 127.0.0.1:2;",
			want: `invalid number of arguments in "metrics_listen" directive in DIR/t.conf:1`},
		{name: "metrics in stream", src: "stream { metrics_listen 127.0.0.1:9100; }",
			want: `"metrics_listen" directive is not allowed here in DIR/t.conf:1`},
		{name: "metrics same as listen", src: "metrics_listen 127.0.0.1:9100;\nstream { server { listen 127.0.0.1:9100; proxy_pass 127.0.0.1:1; } }",
			want: `duplicate "127.0.0.1:9100" address and port pair: a stream "listen" uses it too in DIR/t.conf:1`},

		// proxy_ssl_key_log
		{name: "key log server", src: "stream { server { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on;\nproxy_ssl_key_log keys.log; } }",
			check: func(t *testing.T, c *Config) {
				s := c.Stream.Servers[0].Proxy.SSL
				if s.KeyLog != filepath.Join(c.Prefix, "keys.log") || s.Pos["proxy_ssl_key_log"].Line != 2 {
					t.Errorf("KeyLog = %q at %v", s.KeyLog, s.Pos["proxy_ssl_key_log"])
				}
			}},
		{name: "key log inherited", src: "stream { proxy_ssl_key_log /var/log/keys; server { listen 80; proxy_pass 127.0.0.1:1; } " +
			"server { listen 81; proxy_pass 127.0.0.1:1; proxy_ssl_key_log /tmp/other; } }",
			check: func(t *testing.T, c *Config) {
				if got := c.Stream.Servers[0].Proxy.SSL.KeyLog; got != "/var/log/keys" {
					t.Errorf("server 1 KeyLog = %q", got)
				}
				if got := c.Stream.Servers[1].Proxy.SSL.KeyLog; got != "/tmp/other" {
					t.Errorf("server 2 KeyLog = %q", got)
				}
			}},
		{name: "key log default", src: srv(""), check: func(t *testing.T, c *Config) {
			if got := c.Stream.Servers[0].Proxy.SSL.KeyLog; got != "" {
				t.Errorf("KeyLog = %q", got)
			}
		}},
		{name: "key log variables", src: srv("proxy_ssl_key_log /tmp/$server_port;"),
			want: `variables in "proxy_ssl_key_log" are not supported in DIR/t.conf:1`},
		{name: "key log dup", src: srv("proxy_ssl_key_log /a; proxy_ssl_key_log /b;"),
			want: `"proxy_ssl_key_log" directive is duplicate in DIR/t.conf:1`},
		{name: "key log main", src: "proxy_ssl_key_log /a;", want: `"proxy_ssl_key_log" directive is not allowed here in DIR/t.conf:1`},
		{name: "key log args", src: srv("proxy_ssl_key_log;"), want: `invalid number of arguments in "proxy_ssl_key_log" directive in DIR/t.conf:1`},

		// proxy_ssl_watch
		{name: "watch default", src: srv("proxy_ssl on; " + cert), check: func(t *testing.T, c *Config) {
			if got := c.Stream.Servers[0].Proxy.SSL.Watch; got != 0 {
				t.Errorf("Watch = %v, want 0 (off)", got)
			}
		}},
		{name: "watch certificate", src: srv("proxy_ssl on; " + cert + "\nproxy_ssl_watch 5s;"), check: func(t *testing.T, c *Config) {
			s := c.Stream.Servers[0].Proxy.SSL
			if s.Watch != 5*time.Second || s.Pos["proxy_ssl_watch"].Line != 2 {
				t.Errorf("Watch = %v at %v", s.Watch, s.Pos["proxy_ssl_watch"])
			}
		}},
		{name: "watch trusted only", src: srv("proxy_ssl on; " + trust + " proxy_ssl_crl crl.pem; proxy_ssl_watch 1m;"),
			check: func(t *testing.T, c *Config) {
				if got := c.Stream.Servers[0].Proxy.SSL.Watch; got != time.Minute {
					t.Errorf("Watch = %v", got)
				}
			}},
		{name: "watch trusted, certificate with variables", src: srv("proxy_ssl on; proxy_ssl_certificate /c/$server_port.pem; " +
			"proxy_ssl_certificate_key /c/$server_port.key; " + trust + " proxy_ssl_watch 1s;"), check: func(t *testing.T, c *Config) {
			if got := c.Stream.Servers[0].Proxy.SSL.Watch; got != time.Second {
				t.Errorf("Watch = %v", got)
			}
		}},
		{name: "watch off", src: srv("proxy_ssl on; " + cert + " proxy_ssl_watch off;"), check: func(t *testing.T, c *Config) {
			if got := c.Stream.Servers[0].Proxy.SSL.Watch; got != 0 {
				t.Errorf("Watch = %v", got)
			}
		}},
		{name: "watch inherited where usable", src: "stream {\nproxy_ssl_watch 10s;\n" +
			"server { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on; " + cert + " }\n" +
			"server { listen 81; proxy_pass 127.0.0.1:1; }\n" +
			"server { listen 82; proxy_pass 127.0.0.1:1; proxy_ssl on; } }",
			check: func(t *testing.T, c *Config) {
				ss := c.Stream.Servers
				if ss[0].Proxy.SSL.Watch != 10*time.Second || ss[0].Proxy.SSL.Pos["proxy_ssl_watch"].Line != 2 {
					t.Errorf("server 1 Watch = %v at %v", ss[0].Proxy.SSL.Watch, ss[0].Proxy.SSL.Pos["proxy_ssl_watch"])
				}
				for i, s := range ss[1:] {
					if _, ok := s.Proxy.SSL.Pos["proxy_ssl_watch"]; s.Proxy.SSL.Watch != 0 || ok {
						t.Errorf("server %d Watch = %v (it has nothing to watch: want 0)", i+2, s.Proxy.SSL.Watch)
					}
				}
			}},
		{name: "watch overridden everywhere", src: "stream { proxy_ssl_watch 10s; server { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl_watch off; } }"},
		{name: "watch ssl off", src: "stream { server { listen 80; proxy_pass 127.0.0.1:1;\nproxy_ssl_watch 5s; } }",
			want: `"proxy_ssl_watch" requires "proxy_ssl on" in DIR/t.conf:2`},
		{name: "watch ssl off explicitly", src: srv(cert + " proxy_ssl off; proxy_ssl_watch 5s;"),
			want: `"proxy_ssl_watch" requires "proxy_ssl on" in DIR/t.conf:1`},
		{name: "watch inherited, ssl off everywhere", src: "stream {\nproxy_ssl_watch 5s;\nserver { listen 80; proxy_pass 127.0.0.1:1; } }",
			want: `"proxy_ssl_watch" requires "proxy_ssl on" in DIR/t.conf:2`},
		{name: "watch nothing", src: srv("proxy_ssl on;\nproxy_ssl_watch 5s;"),
			want: `"proxy_ssl_watch" has nothing to watch: no "proxy_ssl_certificate" (without variables), and no "proxy_ssl_trusted_certificate" with "proxy_ssl_verify on" in DIR/t.conf:2`},
		{name: "watch trusted without verify", src: srv("proxy_ssl on; proxy_ssl_trusted_certificate ca.pem; proxy_ssl_watch 5s;"),
			want: `"proxy_ssl_watch" has nothing to watch: no "proxy_ssl_certificate" (without variables), and no "proxy_ssl_trusted_certificate" with "proxy_ssl_verify on" in DIR/t.conf:1`},
		{name: "watch certificate with variables", src: srv("proxy_ssl on; proxy_ssl_certificate /c/$server_port.pem; " +
			"proxy_ssl_certificate_key /c/$server_port.key; proxy_ssl_watch 5s;"),
			want: `"proxy_ssl_watch" has nothing to watch: no "proxy_ssl_certificate" (without variables), and no "proxy_ssl_trusted_certificate" with "proxy_ssl_verify on" in DIR/t.conf:1`},
		{name: "watch inherited, nothing anywhere", src: "stream { proxy_ssl on;\nproxy_ssl_watch 5s;\nserver { listen 80; proxy_pass 127.0.0.1:1; } }",
			want: `"proxy_ssl_watch" has nothing to watch: no "proxy_ssl_certificate" (without variables), and no "proxy_ssl_trusted_certificate" with "proxy_ssl_verify on" in DIR/t.conf:2`},
		{name: "watch too short", src: srv("proxy_ssl on; " + cert + " proxy_ssl_watch 500ms;"),
			want: `"proxy_ssl_watch" interval "500ms" is below the minimum of 1s (use "off" to disable it) in DIR/t.conf:1`},
		{name: "watch zero", src: srv("proxy_ssl on; " + cert + " proxy_ssl_watch 0;"),
			want: `"proxy_ssl_watch" interval "0" is below the minimum of 1s (use "off" to disable it) in DIR/t.conf:1`},
		{name: "watch bad", src: srv("proxy_ssl on; " + cert + " proxy_ssl_watch often;"),
			want: `invalid value "often" in "proxy_ssl_watch" directive, it must be "off" or a time such as 5s in DIR/t.conf:1`},
		{name: "watch dup", src: srv("proxy_ssl_watch 5s; proxy_ssl_watch 6s;"),
			want: `"proxy_ssl_watch" directive is duplicate in DIR/t.conf:1`},
		{name: "watch main", src: "proxy_ssl_watch 5s;", want: `"proxy_ssl_watch" directive is not allowed here in DIR/t.conf:1`},
		{name: "watch args", src: srv("proxy_ssl_watch 5s 6s;"), want: `invalid number of arguments in "proxy_ssl_watch" directive in DIR/t.conf:1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := Parse(filepath.Join(dir, "t.conf"), []byte(tt.src), LoadOptions{})
			if tt.want != "" {
				want := "[emerg] " + strings.ReplaceAll(tt.want, "DIR", dir)
				if err == nil || err.Error() != want {
					t.Fatalf("error = %v\nwant    %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tt.check != nil {
				tt.check(t, cfg)
			}
		})
	}
}

// TestKeyLogWarning: proxy_ssl_key_log warns once per directive, at its
// file:line, naming the file; servers with proxy_ssl off do not warn.
func TestKeyLogWarning(t *testing.T) {
	cfg, _, msg := parseIn(t, "stream { proxy_ssl on;\nproxy_ssl_key_log /var/log/tlsrelay-keys.log;\n"+
		"server { listen 80; proxy_pass a:1; proxy_ssl_verify on; proxy_ssl_trusted_certificate /nonexistent/ca; proxy_ssl off; }\n"+
		"server { listen 81; proxy_pass a:1; }\nserver { listen 82; proxy_pass a:1; }\n"+
		"server { listen 83; proxy_pass a:1;\nproxy_ssl_key_log /tmp/k; proxy_ssl off; } }", LoadOptions{})
	if msg != "" {
		t.Fatal(msg)
	}
	var got []string
	for _, w := range cfg.Insecure() {
		if strings.Contains(w.Msg, "proxy_ssl_key_log") {
			got = append(got, w.Msg+" @"+w.Pos.String())
		}
	}
	want := `"proxy_ssl_key_log" is for debugging: it writes the TLS secrets of every upstream connection to /var/log/tlsrelay-keys.log @` +
		cfg.File + ":2"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("key log warnings = %q\nwant [%q]", got, want)
	}
}

// formatRoundTrip parses src as file name, checks that -T's output has
// each of lines, re-reads that output, checks that formatting it again
// gives the same text, and returns the re-read configuration.
func formatRoundTrip(t *testing.T, name, src string, lines ...string) *Config {
	t.Helper()
	cfg, _, err := Parse(name, []byte(src), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.Format()
	for _, line := range lines {
		if !strings.Contains(out, line) {
			t.Errorf("-T output lacks %q:\n%s", line, out)
		}
	}
	cfg2, _, err := Parse(name, []byte(out), LoadOptions{})
	if err != nil {
		t.Fatalf("re-reading -T output: %v\n%s", err, out)
	}
	if out2 := cfg2.Format(); out2 != out {
		t.Errorf("Format is not stable:\n%s\n---\n%s", out, out2)
	}
	return cfg2
}

// TestOpsFormat: -T prints the new directives and re-reads them.
func TestOpsFormat(t *testing.T) {
	dir, _ := writePKI(t)
	src := "worker_shutdown_timeout 90s;\nmetrics_listen [::1]:9100;\nstream {\n" +
		"proxy_ssl_watch 10s; proxy_ssl_key_log keys.log;\n" +
		"server { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on; proxy_ssl_certificate client.pem; proxy_ssl_certificate_key client.key; }\n" +
		"server { listen 81; proxy_pass 127.0.0.1:1; }\n}\n"
	cfg2 := formatRoundTrip(t, filepath.Join(dir, "t.conf"), src,
		"worker_shutdown_timeout 1m30s;\n", "metrics_listen [::1]:9100;\n",
		"        proxy_ssl_watch 10s;\n", "        proxy_ssl_watch off;\n",
		"        proxy_ssl_key_log "+filepath.Join(dir, "keys.log")+";\n")
	if cfg2.Main.WorkerShutdownTimeout != 90*time.Second || cfg2.Main.MetricsListen != "[::1]:9100" ||
		cfg2.Stream.Servers[0].Proxy.SSL.Watch != 10*time.Second || cfg2.Stream.Servers[1].Proxy.SSL.Watch != 0 {
		t.Errorf("re-read values differ: %+v", cfg2.Main)
	}
}
