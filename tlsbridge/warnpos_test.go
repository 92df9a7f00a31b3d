package tlsbridge_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsrelay/tlsrelay/engine"
	"github.com/tlsrelay/tlsrelay/engine/conf"
)

// TestCipherWarningPositions drives the policy warnings as `tlsrelay -t`
// gets them (conf.Load, then engine.Check): none about the cipher list
// for a server that does not set one, and the two about a written string
// at the file:line of the proxy_ssl_ciphers that set it, at the server or
// the stream level. It is an external test because engine imports
// tlsbridge. engine.Check binds nothing: the listen port is never used.
func TestCipherWarningPositions(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		line int // the line the cipher warnings must point at; 0: no warning
	}{
		{"unset", `stream {
    server {
        listen 127.0.0.1:1;
        proxy_pass 127.0.0.1:9;
        proxy_ssl on;
    }
}`, 0},
		{"server level", `stream {
    server {
        listen 127.0.0.1:1;
        proxy_pass 127.0.0.1:9;
        proxy_ssl on;
        proxy_ssl_ciphers HIGH:!aNULL:!MD5;
    }
}`, 6},
		{"stream level", `stream {
    proxy_ssl_ciphers HIGH:!aNULL:!MD5;
    server {
        listen 127.0.0.1:1;
        proxy_pass 127.0.0.1:9;
        proxy_ssl on;
    }
}`, 2},
		{"default written out", `stream {
    server {
        listen 127.0.0.1:1;
        proxy_pass 127.0.0.1:9;
        proxy_ssl on;
        proxy_ssl_ciphers ` + conf.DefaultProxySSLCiphers + `;
    }
}`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tlsrelay.conf")
			if err := os.WriteFile(path, []byte(tc.src), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, _, err := conf.Load(path, conf.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			warns, err := engine.Check(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var cipherWarns []string
			for _, w := range warns {
				if strings.Contains(w, "proxy_ssl_ciphers") || strings.Contains(w, "suites") {
					cipherWarns = append(cipherWarns, w)
				}
			}
			if tc.line == 0 {
				if len(cipherWarns) != 0 {
					t.Fatalf("warnings about a cipher list the user did not write: %q", cipherWarns)
				}
				return
			}
			want := []string{"proxy_ssl_ciphers selects ", "proxy_ssl_ciphers enables suites crypto/tls lists as insecure: "}
			if len(cipherWarns) != len(want) {
				t.Fatalf("cipher warnings %q, want %d", cipherWarns, len(want))
			}
			at := " in " + (conf.Pos{File: path, Line: tc.line}).String()
			for i, w := range cipherWarns {
				if !strings.HasPrefix(w, want[i]) || !strings.HasSuffix(w, at) {
					t.Errorf("warning %q: want it to start %q and end %q", w, want[i], at)
				}
			}
		})
	}
}
