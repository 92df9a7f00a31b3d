package engine

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestMapNginxDiff: two map blocks on NGINX 1.22 and on tlsrelay, each
// choosing proxy_bind's address from the client's: one of hostnames (an
// exact key, "*.x" and ".x" wildcards, the default), one of regular
// expressions (a capture in the value, a case-insensitive one, an empty
// default, which binds nothing). Clients from nine loopback addresses
// reach the upstream from the same source through both.
func TestMapNginxDiff(t *testing.T) {
	testutil.NginxPath(t)
	lasts := []byte{11, 12, 13, 14, 15, 16, 17, 20, 21}
	run := func(proxy string) []string {
		up, sources := sourceRecorder(t)
		a, b := testutil.FreeAddr(t), testutil.FreeAddr(t)
		stream := "stream {\n" +
			"map $remote_addr $hostbind {\n    hostnames;\n    127.0.0.11 127.0.0.2;\n    *.0.0.12 127.0.0.3;\n" +
			"    .0.0.13 127.0.0.4;\n    default 127.0.0.5;\n}\n" +
			"map $remote_addr $rebind {\n    ~^127\\.0\\.0\\.1([4-6])$ 127.0.0.$1;\n    ~*^127\\.0\\.0\\.2 127.0.0.7;\n    default \"\";\n}\n" +
			"server { listen " + a + "; proxy_pass " + up + "; proxy_bind $hostbind; }\n" +
			"server { listen " + b + "; proxy_pass " + up + "; proxy_bind $rebind; }\n}\n"
		startProxy(t, proxy, t.TempDir(), stream, a, sources)
		n0 := len(sources())
		for i, last := range lasts {
			for j, listen := range []string{a, b} {
				h := dialFrom(t, last, listen)
				h.c.Close()
				n := n0 + 2*i + j + 1
				testutil.WaitFor(t, fmt.Sprintf("%s's session %d upstream", proxy, n-n0), 10*time.Second, func() bool { return len(sources()) == n })
			}
		}
		return sources()[n0:]
	}
	want, have := run("nginx"), run("tlsrelay")
	if strings.Join(have, " ") != strings.Join(want, " ") {
		t.Fatalf("sources by client:\ntlsrelay %q\nNGINX    %q", have, want)
	}
	t.Logf("sources: %q", have)
}
