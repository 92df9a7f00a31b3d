package conf

import (
	"errors"
	"os"
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
