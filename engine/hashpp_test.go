package engine

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// hitRecorder is n plain echo upstreams that record, in order, which of
// them each session reached ("a", "b", ...).
func hitRecorder(t *testing.T, n int) (addrs []string, hits func() string) {
	t.Helper()
	var mu sync.Mutex
	var seen strings.Builder
	for i := range n {
		ln := testutil.Listen(t, "tcp", "127.0.0.1:0")
		name := string(rune('a' + i))
		testutil.Serve(t, ln, func(c net.Conn) {
			mu.Lock()
			seen.WriteString(name)
			mu.Unlock()
			buf := make([]byte, 64)
			for {
				k, err := c.Read(buf)
				if k > 0 {
					c.Write(buf[:k])
				}
				if err != nil {
					return
				}
			}
		})
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, func() string {
		mu.Lock()
		defer mu.Unlock()
		return seen.String()
	}
}

// TestHashEmptyKeyNginxDiff: `hash $proxy_protocol_addr` on a listener
// without proxy_protocol has an empty key for every client, and NGINX then
// balances by round robin (ngx_stream_upstream_get_hash_peer: key.len ==
// 0); tlsrelay does the same, consistent or not, where it used to refuse
// the variable (and, before that, hash its name).
func TestHashEmptyKeyNginxDiff(t *testing.T) {
	testutil.NginxPath(t)
	for _, consistent := range []string{"", " consistent"} {
		t.Run("hash"+consistent, func(t *testing.T) {
			run := func(proxy string) string {
				addrs, hits := hitRecorder(t, 3)
				listen := testutil.FreeAddr(t)
				stream := fmt.Sprintf("stream {\nupstream u {\n    hash $proxy_protocol_addr%s;\n    server %s;\n    server %s;\n    server %s;\n}\nserver { listen %s; proxy_pass u; }\n}\n",
					consistent, addrs[0], addrs[1], addrs[2], listen)
				startProxy(t, proxy, t.TempDir(), stream, listen, func() []string { return strings.Split(hits(), "") })
				n0 := len(hits())
				for i := range 6 {
					h := dialFrom(t, 30, listen)
					h.c.Close()
					testutil.WaitFor(t, fmt.Sprintf("%s's session %d", proxy, i), 10*time.Second, func() bool { return len(hits()) == n0+i+1 })
				}
				return hits()[n0:]
			}
			want, have := run("nginx"), run("tlsrelay")
			// NGINX's readiness probe took one turn of the round robin:
			// compare the spread, which is what the fallback decides.
			spread := func(s string) string {
				n := map[rune]int{}
				for _, r := range s {
					n[r]++
				}
				return fmt.Sprint(n['a'], n['b'], n['c'])
			}
			if spread(have) != "2 2 2" || spread(want) != "2 2 2" {
				t.Errorf("sessions by upstream: tlsrelay %q, NGINX %q; want round robin (2 each) from both", have, want)
			}
		})
	}
}
