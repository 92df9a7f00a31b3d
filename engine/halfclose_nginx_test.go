package engine

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/bench"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestHalfCloseNginxDiff runs the half-close transfers of
// TestHalfCloseClientEnds (1 MiB or 100 bytes echoed, then 300 KiB the upstream writes
// after the client's end, TLS 1.3 with session reuse, so the upstream's
// ticket may still be in flight) through NGINX with proxy_half_close on
// (when installed) and through tlsrelay, and logs how many transfers each
// delivered whole, for the closing note. tlsrelay must deliver every one;
// NGINX's count is the record, not a requirement.
func TestHalfCloseNginxDiff(t *testing.T) {
	if testing.Short() {
		t.Skip("differential run")
	}
	testutil.NginxPath(t)
	const transfers = 30
	set, files, dir := newPKI(t, pki.ECDSAP256, 1)
	after := trailer(300 << 10)
	cfg := set.ServerConfig()
	cfg.MaxVersion = tls.VersionTLS13
	up := startHalfUpstream(t, cfg, echoThen(after))
	go func() { // the upstream's outcomes are not the measure here
		for range up.errs {
		}
	}()
	run := func(addr string, size int) (whole int) {
		for i := 0; i < transfers; i++ {
			payload := trailer(size)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			go func() {
				c.Write(payload)
				c.(*net.TCPConn).CloseWrite()
			}()
			got, _ := io.ReadAll(c)
			c.Close()
			if bytes.Equal(got, append(payload, after...)) {
				whole++
			}
		}
		return whole
	}

	// NGINX with the same upstream, policy and half-close.
	nd := t.TempDir()
	addr, err := bench.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "stream {\n    server {\n        listen %s;\n        proxy_pass %s;\n        proxy_half_close on;\n        proxy_ssl on;\n", addr, up.ln.Addr())
	fmt.Fprintf(&b, "        proxy_ssl_certificate %s;\n        proxy_ssl_certificate_key %s;\n        proxy_ssl_trusted_certificate %s;\n",
		files.ClientCert, files.ClientKey, files.CA)
	b.WriteString("        proxy_ssl_verify on;\n        proxy_ssl_name localhost;\n        proxy_ssl_protocols TLSv1.3;\n        proxy_ssl_session_reuse on;\n    }\n}\n")
	testutil.StartNginx(t, nd, testutil.NginxConf{Main: "worker_processes 2;\nmaster_process on;", ErrorLevel: "warn", Stream: b.String()})
	testutil.WaitFor(t, "NGINX listening", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	nginxBig, nginxSmall := run(addr, 1<<20), run(addr, 100)

	tb := startEngine(t, dir, halfCloseConf(up.ln.Addr().String(), true, "proxy_half_close on;"))
	oursBig, oursSmall := run(tb.addr, 1<<20), run(tb.addr, 100)
	t.Logf("whole half-close transfers of %d (echo, then 300 KiB after EOF, TLS 1.3): 1 MiB: tlsrelay %d, NGINX %d; 100 bytes: tlsrelay %d, NGINX %d",
		transfers, oursBig, nginxBig, oursSmall, nginxSmall)
	if oursBig != transfers || oursSmall != transfers {
		t.Errorf("tlsrelay delivered %d and %d of %d half-close transfers whole", oursBig, oursSmall, transfers)
	}
}
