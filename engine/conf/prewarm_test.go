package conf

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPrewarmDirective covers proxy_ssl_prewarm: values, bounds, the
// conflicts with what a pre-warmed connection cannot know (the client), and
// inheritance.
func TestPrewarmDirective(t *testing.T) {
	dir, _ := writePKI(t)
	on := "proxy_ssl on; "
	tests := []struct {
		name, src string
		// want is the error without "[emerg] ", with DIR for the
		// directory; "" means accepted, and then each server's Prewarm
		// must be in prewarm (in order).
		want    string
		prewarm []Prewarm
	}{
		{name: "default", src: srv(on), prewarm: []Prewarm{{0, 30 * time.Second}}},
		{name: "size", src: srv(on + "proxy_ssl_prewarm 2;"), prewarm: []Prewarm{{2, 30 * time.Second}}},
		{name: "max_idle", src: srv(on + "proxy_ssl_prewarm 4 max_idle=90s;"), prewarm: []Prewarm{{4, 90 * time.Second}}},
		{name: "max_idle minutes", src: srv(on + "proxy_ssl_prewarm 1 max_idle=1m30s;"), prewarm: []Prewarm{{1, 90 * time.Second}}},
		{name: "zero is off", src: srv(on + "proxy_ssl_prewarm 0;"), prewarm: []Prewarm{{0, 30 * time.Second}}},
		{name: "off", src: srv(on + "proxy_ssl_prewarm off;"), prewarm: []Prewarm{{0, 30 * time.Second}}},
		{name: "off without proxy_ssl", src: srv("proxy_ssl_prewarm off;"), prewarm: []Prewarm{{0, 30 * time.Second}}},
		{name: "maximum", src: srv(on + "proxy_ssl_prewarm 64;"), prewarm: []Prewarm{{64, 30 * time.Second}}},
		{name: "max_idle bounds", src: srv(on + "proxy_ssl_prewarm 1 max_idle=1s;"), prewarm: []Prewarm{{1, time.Second}}},
		{name: "max_idle hour", src: srv(on + "proxy_ssl_prewarm 1 max_idle=1h;"), prewarm: []Prewarm{{1, time.Hour}}},
		{name: "plain proxy_protocol off", src: srv(on + "proxy_protocol off; proxy_ssl_prewarm 1;"), prewarm: []Prewarm{{1, 30 * time.Second}}},
		{name: "name without variables", src: srv(on + "proxy_ssl_name backend.example; proxy_ssl_server_name on; proxy_ssl_prewarm 1;"),
			prewarm: []Prewarm{{1, 30 * time.Second}}},
		{name: "inherited where ssl is on", src: "stream {\nproxy_ssl_prewarm 3 max_idle=10s;\n" +
			"server { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on; }\n" +
			"server { listen 81; proxy_pass 127.0.0.1:1; }\n" +
			"server { listen 82; proxy_pass 127.0.0.1:1; proxy_ssl on; proxy_ssl_prewarm off; } }",
			prewarm: []Prewarm{{3, 10 * time.Second}, {0, 30 * time.Second}, {0, 30 * time.Second}}},

		{name: "too many", src: srv(on + "proxy_ssl_prewarm 65;"), want: `"proxy_ssl_prewarm" value 65 is above the maximum of 64 in DIR/t.conf:1`},
		{name: "negative", src: srv(on + "proxy_ssl_prewarm -1;"),
			want: `invalid value "-1" in "proxy_ssl_prewarm" directive, it must be "off" or a number of connections in DIR/t.conf:1`},
		{name: "not a number", src: srv(on + "proxy_ssl_prewarm some;"),
			want: `invalid value "some" in "proxy_ssl_prewarm" directive, it must be "off" or a number of connections in DIR/t.conf:1`},
		{name: "bad parameter", src: srv(on + "proxy_ssl_prewarm 2 idle=5s;"), want: `invalid parameter "idle=5s" in "proxy_ssl_prewarm" directive in DIR/t.conf:1`},
		{name: "off with parameter", src: srv(on + "proxy_ssl_prewarm off max_idle=5s;"),
			want: `invalid parameter "max_idle=5s" in "proxy_ssl_prewarm" directive in DIR/t.conf:1`},
		{name: "bad max_idle", src: srv(on + "proxy_ssl_prewarm 2 max_idle=soon;"), want: `invalid max_idle value "soon" in "proxy_ssl_prewarm" directive in DIR/t.conf:1`},
		{name: "max_idle too short", src: srv(on + "proxy_ssl_prewarm 2 max_idle=500ms;"),
			want: `"proxy_ssl_prewarm" max_idle "500ms" is out of range (1s to 1h) in DIR/t.conf:1`},
		{name: "max_idle too long", src: srv(on + "proxy_ssl_prewarm 2 max_idle=2h;"),
			want: `"proxy_ssl_prewarm" max_idle "2h" is out of range (1s to 1h) in DIR/t.conf:1`},
		{name: "args", src: srv(on + "proxy_ssl_prewarm 1 max_idle=5s x;"), want: `invalid number of arguments in "proxy_ssl_prewarm" directive in DIR/t.conf:1`},
		{name: "no args", src: srv(on + "proxy_ssl_prewarm;"), want: `invalid number of arguments in "proxy_ssl_prewarm" directive in DIR/t.conf:1`},
		{name: "dup", src: srv(on + "proxy_ssl_prewarm 1; proxy_ssl_prewarm 2;"), want: `"proxy_ssl_prewarm" directive is duplicate in DIR/t.conf:1`},
		{name: "main", src: "proxy_ssl_prewarm 1;", want: `"proxy_ssl_prewarm" directive is not allowed here in DIR/t.conf:1`},
		{name: "upstream", src: "stream { upstream u { server 127.0.0.1:1; proxy_ssl_prewarm 1; } }",
			want: `"proxy_ssl_prewarm" directive is not allowed here in DIR/t.conf:1`},

		{name: "ssl off", src: "stream { server { listen 80; proxy_pass 127.0.0.1:1;\nproxy_ssl_prewarm 2; } }",
			want: `"proxy_ssl_prewarm" requires "proxy_ssl on" in DIR/t.conf:2`},
		{name: "inherited, ssl off everywhere", src: "stream {\nproxy_ssl_prewarm 2;\nserver { listen 80; proxy_pass 127.0.0.1:1; } }",
			want: `"proxy_ssl_prewarm" requires "proxy_ssl on" in DIR/t.conf:2`},
		{name: "proxy_protocol", src: "stream { server { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on; proxy_protocol on;\nproxy_ssl_prewarm 2; } }",
			want: `"proxy_ssl_prewarm" cannot be used with "proxy_protocol on": the PROXY header names the client, which a pre-warmed connection does not have yet in DIR/t.conf:2`},
		{name: "proxy_protocol v2", src: srv(on + "proxy_protocol v2; proxy_ssl_prewarm 2;"),
			want: `"proxy_ssl_prewarm" cannot be used with "proxy_protocol on": the PROXY header names the client, which a pre-warmed connection does not have yet in DIR/t.conf:1`},
		{name: "proxy_protocol, inherited", src: "stream { proxy_ssl on;\nproxy_ssl_prewarm 2;\n" +
			"server { listen 80; proxy_pass 127.0.0.1:1; }\nserver { listen 81; proxy_pass 127.0.0.1:1; proxy_protocol on; } }",
			want: `"proxy_ssl_prewarm" cannot be used with "proxy_protocol on": the PROXY header names the client, which a pre-warmed connection does not have yet (inherited by the server at DIR/t.conf:4) in DIR/t.conf:2`},
		{name: "resolve", src: "stream { resolver 127.0.0.1; upstream u { zone z 64k; server localhost:1 resolve; }\n" +
			"server { listen 80; proxy_pass u; proxy_ssl on;\nproxy_ssl_prewarm 2; } }",
			want: `"proxy_ssl_prewarm" cannot be used with an upstream that has "resolve" servers: its addresses change at run time in DIR/t.conf:3`},
		{name: "name with variables", src: srv(on + "proxy_ssl_name $remote_addr.example; proxy_ssl_prewarm 2;"),
			want: `"proxy_ssl_prewarm" cannot be used with variables in "proxy_ssl_name": the handshake would depend on the session in DIR/t.conf:1`},
		{name: "name with variables, inherited", src: "stream {\nproxy_ssl_prewarm 1; proxy_ssl_name ${server_port}.example;\n" +
			"server { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on; proxy_ssl_server_name on; } }",
			want: `"proxy_ssl_prewarm" cannot be used with variables in "proxy_ssl_name": the handshake would depend on the session (inherited by the server at DIR/t.conf:3) in DIR/t.conf:2`},
		{name: "certificate with variables", src: srv(on + "proxy_ssl_certificate /c/$server_port.pem; " +
			"proxy_ssl_certificate_key /c/$server_port.key; proxy_ssl_prewarm 2;"),
			want: `"proxy_ssl_prewarm" cannot be used with variables in "proxy_ssl_certificate": the handshake would depend on the session in DIR/t.conf:1`},
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
			if len(cfg.Stream.Servers) != len(tt.prewarm) {
				t.Fatalf("%d servers, want %d", len(cfg.Stream.Servers), len(tt.prewarm))
			}
			for i, s := range cfg.Stream.Servers {
				if got := s.Proxy.SSL.Prewarm; got != tt.prewarm[i] {
					t.Errorf("server %d Prewarm = %+v, want %+v", i+1, got, tt.prewarm[i])
				}
				if _, ok := s.Proxy.SSL.Pos["proxy_ssl_prewarm"]; s.Proxy.SSL.Prewarm.Size > 0 && !ok {
					t.Errorf("server %d: no position for proxy_ssl_prewarm", i+1)
				}
			}
		})
	}
}

// TestPrewarmFormat: -T prints proxy_ssl_prewarm (max_idle only when not
// the default) and re-reads it.
func TestPrewarmFormat(t *testing.T) {
	dir, _ := writePKI(t)
	src := "stream {\nproxy_ssl_prewarm 2 max_idle=45s;\n" +
		"server { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on; }\n" +
		"server { listen 81; proxy_pass 127.0.0.1:1; proxy_ssl on; proxy_ssl_prewarm 3; }\n" +
		"server { listen 82; proxy_pass 127.0.0.1:1; }\n}\n"
	cfg2 := formatRoundTrip(t, filepath.Join(dir, "t.conf"), src,
		"        proxy_ssl_prewarm 2 max_idle=45s;\n", "        proxy_ssl_prewarm 3;\n", "        proxy_ssl_prewarm off;\n")
	want := []Prewarm{{2, 45 * time.Second}, {3, 30 * time.Second}, {0, 30 * time.Second}}
	for i, s := range cfg2.Stream.Servers {
		if s.Proxy.SSL.Prewarm != want[i] {
			t.Errorf("re-read server %d Prewarm = %+v, want %+v", i+1, s.Proxy.SSL.Prewarm, want[i])
		}
	}
}
