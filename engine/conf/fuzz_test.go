package conf

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary text to the parser: it must not panic, every
// error must be an *Error with a position, and an accepted configuration
// must survive a round trip through Format.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"worker_processes auto; events { worker_connections 1024; }",
		srv("proxy_ssl on; proxy_ssl_protocols TLSv1.2 TLSv1.3; proxy_ssl_conf_command Groups X25519;"),
		"stream { upstream b { hash $remote_addr consistent; server 127.0.0.1:1 weight=2 max_fails=0; } " +
			"server { listen [::]:80 ipv6only=off so_keepalive=1m::3; proxy_pass b; } }",
		"stream { log_format f escape=json '$remote_addr \"x\"'; access_log /tmp/x f buffer=8k flush=1s; }",
		"http { server { listen 80; } } mail {} user nobody;",
		"stream { server { listen 80; proxy_pass $remote_addr:1; proxy_ssl_name ${server_addr}x; } }",
		"a \"b\\\"c\" 'd\\'e' f\\ g;",
		"stream { resolver 1.1.1.1 [::1]:53 valid=10s ipv6=off; resolver_timeout 5s; }",
		"# comment\nstream {\n}\n}",
		"worker_shutdown_timeout 30s; metrics_listen 127.0.0.1:9100;",
		"metrics_listen [::1]:9100; stream { proxy_ssl_watch 5s; proxy_ssl_key_log /tmp/keys; " +
			"server { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on; proxy_ssl_watch off; } }",
		"stream { proxy_ssl_prewarm 2 max_idle=10s; server { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on; } " +
			"server { listen 81; proxy_pass 127.0.0.1:1; proxy_ssl_prewarm off; } }",
		"stream { server { listen 80; proxy_pass 127.0.0.1:1; proxy_bind $b; } " +
			"split_clients \"${remote_addr}AAA\" $b { 0.5% 127.0.0.2; 12.25% 127.0.0.3; * \"\"; } }",
		"stream { map $remote_addr $m { hostnames; default x; a.b 1; *.c.d 2; .e.f 3; g.h.* 4; ~^(1)0 $1; ~*X y; } " +
			"server { listen 80; proxy_pass 127.0.0.1:1; proxy_bind $m; } }",
	} {
		f.Add([]byte(seed))
	}
	if data, err := os.ReadFile("../../docs/examples/secure-upstream.conf"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		const name = "/nonexistent-fuzz/t.conf"
		cfg, _, err := Parse(name, src, LoadOptions{})
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.Pos.File == "" {
				t.Fatalf("error without position: %v", err)
			}
			return
		}
		out := cfg.Format()
		cfg2, _, err := Parse(name, []byte(out), LoadOptions{})
		if err != nil {
			t.Fatalf("Format output does not parse: %v\n%s", err, out)
		}
		if out2 := cfg2.Format(); out2 != out {
			t.Fatalf("Format is not stable:\n%s\n---\n%s", out, out2)
		}
	})
}

// FuzzParseUpstreamAddr: proxy_pass values come from variables a client
// may influence ($proxy_protocol_addr, maps of them): whatever the text,
// ParseUpstreamAddr returns an address it can stand behind or an error.
func FuzzParseUpstreamAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1:80", "[::1]:443", "backend", "db.example.com:5432", "unix:/tmp/s",
		"unix:", ":80", "x:0", "x:65536", "[::1", "[1.2.3.4]:1", "a:b:c", "8081", "[fe80::1%eth0]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		a, errText := ParseUpstreamAddr(v)
		if errText != "" {
			if a != (UpstreamAddr{}) {
				t.Fatalf("%q: error %q with an address %+v", v, errText, a)
			}
			return
		}
		if a.Host == "" || a.Port < 0 || a.Port > 65535 {
			t.Fatalf("%q: %+v", v, a)
		}
		if a.Unix && (a.Port != 0 || a.IP.IsValid() || len(a.Host) >= MaxUnixPath) {
			t.Fatalf("%q: unix %+v", v, a)
		}
		if a.IP.IsValid() && a.IP.Unmap().String() != a.IP.String() {
			t.Fatalf("%q: IP %v not unmapped", v, a.IP)
		}
	})
}

// TestParseUpstreamAddr: proxy_pass values read as ngx_parse_url reads
// them (no_resolve), with NGINX's error texts.
func TestParseUpstreamAddr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want UpstreamAddr
		err  string
	}{
		{in: "127.0.0.1:80", want: UpstreamAddr{Host: "127.0.0.1", Port: 80, IP: netip.MustParseAddr("127.0.0.1")}},
		{in: "[::1]:443", want: UpstreamAddr{Host: "::1", Port: 443, IP: netip.MustParseAddr("::1")}},
		{in: "[::ffff:10.0.0.1]:1", want: UpstreamAddr{Host: "::ffff:10.0.0.1", Port: 1, IP: netip.MustParseAddr("10.0.0.1")}},
		{in: "db.example.com:5432", want: UpstreamAddr{Host: "db.example.com", Port: 5432}},
		{in: "8081", want: UpstreamAddr{Host: "8081"}},
		{in: "backend", want: UpstreamAddr{Host: "backend"}},
		{in: "unix:/run/s.sock", want: UpstreamAddr{Host: "/run/s.sock", Unix: true}},
		{in: "unix:", err: "no path in the unix domain socket"},
		{in: "unix:/" + strings.Repeat("x", MaxUnixPath), err: "too long path in the unix domain socket"},
		{in: "", err: "no host"},
		{in: ":80", err: "no host"},
		{in: "x:0", err: "invalid port"},
		{in: "x:65536", err: "invalid port"},
		{in: "x:y", err: "invalid port"},
		{in: "[::1", err: "invalid host"},
		{in: "a:b:1", err: "invalid host"},
	} {
		got, err := ParseUpstreamAddr(tc.in)
		if got != tc.want || err != tc.err {
			t.Errorf("ParseUpstreamAddr(%q) = %+v, %q; want %+v, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}
