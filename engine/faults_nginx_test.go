package engine

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/bench"
	"github.com/tlsrelay/tlsrelay/internal/faultnet"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestFaultUpstreamNginx puts NGINX (when installed) in front of each
// misbehaving upstream of upstreamFaults, as TestFaultUpstreamAlone does
// tlsrelay, and logs what its client saw and what it logged, for the
// comparison in docs/reliability.md. It checks only that NGINX ends each
// session within 5 s, and that its access log has the session: what NGINX
// logs is the record, not a requirement.
func TestFaultUpstreamNginx(t *testing.T) {
	testutil.NginxPath(t)
	set, files, _ := newPKI(t, pki.ECDSAP256, 1)
	for _, f := range upstreamFaults() {
		t.Run(f.name, func(t *testing.T) {
			cfg := f.cfg
			cfg.TLS = set.ServerConfig()
			u, err := faultnet.Start(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			nd := t.TempDir()
			addr, err := bench.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			access := filepath.Join(nd, "access.log")
			var b strings.Builder
			fmt.Fprintf(&b, "stream {\n    log_format faults '$status \"$upstream_addr\" $bytes_sent $bytes_received';\n")
			fmt.Fprintf(&b, "    server {\n        listen %s;\n        proxy_pass %s;\n        proxy_ssl on;\n", addr, u.Addr())
			fmt.Fprintf(&b, "        proxy_ssl_certificate %s;\n        proxy_ssl_certificate_key %s;\n        proxy_ssl_trusted_certificate %s;\n",
				files.ClientCert, files.ClientKey, files.CA)
			fmt.Fprintf(&b, "        proxy_ssl_verify on;\n        proxy_ssl_name localhost;\n        proxy_connect_timeout %dms;\n        access_log %s faults;\n    }\n}\n",
				connectTimeout.Milliseconds(), access)
			errLog := testutil.StartNginx(t, nd, testutil.NginxConf{Main: "worker_processes 1;\nmaster_process on;",
				Events: "events { worker_connections 1024; }", Stream: b.String()}).ErrLog
			var c net.Conn
			deadline := time.Now().Add(10 * time.Second)
			for {
				c, err = net.DialTimeout("tcp", addr, time.Second)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					logged, _ := os.ReadFile(errLog)
					t.Fatalf("nginx is not listening: %v\n%s", err, logged)
				}
				time.Sleep(20 * time.Millisecond)
			}
			defer c.Close()
			if !f.early {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte("hello"))
			}
			got, took, err := readToEnd(c, 5*time.Second)
			if err != nil {
				t.Fatalf("NGINX did not end the session: %v after %v (read %q)", err, took, got)
			}
			var line string
			testutil.WaitFor(t, "NGINX's access-log line", 5*time.Second, func() bool {
				b, _ := os.ReadFile(access)
				line = strings.TrimSpace(string(b))
				return line != ""
			})
			t.Logf("NGINX, %s: client read %q, session ended after %v; access log: %s", f.name, got, took.Round(time.Millisecond), line)
			logged, _ := os.ReadFile(errLog)
			for _, l := range strings.Split(string(logged), "\n") {
				if i := strings.Index(l, "["); i >= 0 && !strings.Contains(l, "[notice]") && !strings.Contains(l, "client ") {
					t.Logf("  %s", l[i:])
				}
			}
		})
	}
}
