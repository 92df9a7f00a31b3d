package engine

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestLimitConnStatusNginxDiff: $limit_conn_status as NGINX 1.22 logs it
// (stream_limit_conn_dry_run.t): a session under the limit PASSED, one
// over it REJECTED (closed) or, with limit_conn_dry_run on,
// REJECTED_DRY_RUN (proxied), and "-" in a server without limit_conn.
func TestLimitConnStatusNginxDiff(t *testing.T) {
	testutil.NginxPath(t)
	for _, dry := range []string{"off", "on"} {
		t.Run("dry_run "+dry, func(t *testing.T) {
			run := func(proxy string) []string {
				up, sources := sourceRecorder(t)
				listen, other := testutil.FreeAddr(t), testutil.FreeAddr(t)
				dir := t.TempDir()
				logPath := dir + "/lc.log"
				stream := "stream {\nlimit_conn_zone $binary_remote_addr zone=z:1m;\nlog_format lc '$server_port $limit_conn_status';\n" +
					"server { listen " + listen + "; proxy_pass " + up + "; limit_conn z 1; limit_conn_dry_run " + dry + "; access_log " + logPath + " lc; }\n" +
					"server { listen " + other + "; proxy_pass " + up + "; access_log " + logPath + " lc; }\n}\n"
				startProxy(t, proxy, dir, stream, listen, sources)
				probe := 0
				if proxy == "nginx" {
					probe = len(readLines(t, logPath, 1)) // the readiness probe's session
				}
				held := dialFrom(t, 20, listen)
				second, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 20)}}).Dial("tcp", listen)
				if err != nil {
					t.Fatal(err)
				}
				second.SetDeadline(time.Now().Add(10 * time.Second))
				if dry == "on" {
					second.Write([]byte("over the limit"))
					io.ReadFull(second, make([]byte, len("over the limit")))
				} else {
					io.ReadAll(second) // closed at once
				}
				second.Close()
				readLines(t, logPath, probe+1)
				held.c.Close()
				readLines(t, logPath, probe+2)
				c := dialFrom(t, 21, other)
				c.c.Close()
				lines := readLines(t, logPath, probe+3)[probe:]
				for i, l := range lines { // the ports differ between the runs
					_, v, _ := strings.Cut(l, " ")
					lines[i] = v
				}
				return lines
			}
			want, have := run("nginx"), run("tlsrelay")
			if strings.Join(have, " ") != strings.Join(want, " ") {
				t.Errorf("$limit_conn_status: tlsrelay %q, NGINX %q", have, want)
			}
			t.Logf("NGINX: %q", want)
		})
	}
}
