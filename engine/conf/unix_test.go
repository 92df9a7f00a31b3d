package conf

import (
	"strings"
	"testing"
)

// TestUnixPathLength: a unix domain socket path must fit sun_path (107
// bytes and the NUL) in listen, proxy_pass and server; the error names
// the file and line, in NGINX's words.
func TestUnixPathLength(t *testing.T) {
	fits := "/" + strings.Repeat("a", MaxUnixPath-2) // 107 bytes
	long := fits + "b"                               // 108 bytes
	tests := []struct{ name, src, want string }{
		{"listen fits", "stream { server {\nlisten unix:" + fits + "; proxy_pass 127.0.0.1:1; } }", ""},
		{"listen long", "stream { server {\nlisten unix:" + long + "; proxy_pass 127.0.0.1:1; } }",
			`[emerg] too long path in the unix domain socket in "unix:` + long + `" of the "listen" directive in t.conf:2`},
		{"proxy_pass fits", "stream { server { listen 80;\nproxy_pass unix:" + fits + "; } }", ""},
		{"proxy_pass long", "stream { server { listen 80;\nproxy_pass unix:" + long + "; } }",
			`[emerg] too long path in the unix domain socket in upstream "unix:` + long + `" in t.conf:2`},
		{"server fits", "stream { upstream b {\nserver unix:" + fits + "; } server { listen 80; proxy_pass b; } }", ""},
		{"server long", "stream { upstream b {\nserver unix:" + long + "; } server { listen 80; proxy_pass b; } }",
			`[emerg] too long path in the unix domain socket in upstream "unix:` + long + `" in t.conf:2`},
		{"health port", "stream { upstream b { zone b 64k; server unix:/run/b.sock; }\nserver { listen 80; proxy_pass b;\nhealth_check port=8080; } }",
			`[emerg] "health_check port=" cannot be used with the unix domain socket server "unix:/run/b.sock" in upstream "b" in t.conf:3`},
		{"health no port", "stream { upstream b { zone b 64k; server unix:/run/b.sock; }\nserver { listen 80; proxy_pass b;\nhealth_check; } }", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, msg := parseIn(t, tt.src, LoadOptions{})
			if msg != tt.want {
				t.Errorf("got %q\nwant %q", msg, tt.want)
			}
		})
	}
}
