package engine

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
	"github.com/tlsrelay/tlsrelay/pool/dial"
)

// prewarmLogFormat shows what a session paid to reach its upstream.
const prewarmLogFormat = `log_format warm 'hs=$upstream_ssl_handshake_time ct=$upstream_connect_time ` +
	`tcp=$upstream_tcp_connect_time up=$upstream_addr $status';`

// prewarmConf is the guide's configuration with a log format for the
// access log and extra directives in its server block.
func prewarmConf(ups []*backend.Server, extra string) string {
	return strings.Replace(guideConf(ups, extra), "stream {", "stream {\n"+prewarmLogFormat, 1)
}

// warmOf returns the pre-warm pool of the engine's first server.
func warmOf(tb *testbed) *dial.Warm { return tb.eng.plan.Load().servers[0].warm }

// refillers counts the pre-warm refiller goroutines running now.
func refillers() int { return goroutinesIn("dial.(*Warm).refill(") }

// goroutinesIn counts the goroutines with frame (a function's name and
// its opening parenthesis) on their stacks now.
func goroutinesIn(frame string) int {
	buf := make([]byte, 8<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), frame)
}

// TestPrewarmUsed: with proxy_ssl_prewarm 2 the upstream sees two
// handshakes before any client; a client's session takes one of those
// connections (no handshake on its path: $upstream_ssl_handshake_time is 0,
// $upstream_tcp_connect_time "-"), it is counted as used, and the pool
// refills.
func TestPrewarmUsed(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	logPath := filepath.Join(dir, "access.log")
	text := strings.Replace(prewarmConf(ups, "proxy_ssl_prewarm 2; access_log "+logPath+" warm;"),
		"worker_processes 2;", "worker_processes 2;\nmetrics_listen 127.0.0.1:60;", 1)
	tb := startEngine(t, dir, text)
	w := warmOf(tb)
	peer := peerOf(t, tb, ups[0].Addr())
	// The client's side of a TLS 1.3 handshake ends first: wait for the
	// upstream's count too.
	testutil.WaitFor(t, "two ready connections", 10*time.Second, func() bool {
		return w.Ready(peer) == 2 && ups[0].Stats().Handshakes == 2
	})
	if n := ups[0].Stats().Accepted; n != 2 {
		t.Fatalf("the upstream accepted %d connections before any client, want 2", n)
	}
	if got, err := echoOnce(tb.addr, []byte("warm hello"), 10*time.Second); err != nil || string(got) != "warm hello" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	testutil.WaitFor(t, "the access-log line", 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), "\n") == 1
	})
	b, _ := os.ReadFile(logPath)
	line := strings.TrimSpace(string(b))
	if want := fmt.Sprintf("hs=0.000 ct=0.000 tcp=- up=%s 200", ups[0].Addr()); line != want {
		t.Fatalf("access log %q, want %q (a session over a pre-warmed connection)", line, want)
	}
	if n := tb.eng.Metrics().Snapshot().Prewarmed[dial.WarmUsed]; n != 1 {
		t.Fatalf("prewarmed used = %d, want 1", n)
	}
	testutil.WaitFor(t, "the pool refilled", 10*time.Second, func() bool {
		return w.Ready(peer) == 2 && ups[0].Stats().Handshakes == 3
	})
	m := scrape(t, tb.eng.MetricsAddr())
	if v := metricValue(t, m, "tlsrelay_upstream_prewarmed_ready"); v != 2 {
		t.Errorf("tlsrelay_upstream_prewarmed_ready = %v, want 2", v)
	}
	for r, want := range map[string]float64{"used": 1, "expired": 0, "closed": 0, "failed": 0} {
		if v := metricValue(t, m, "tlsrelay_upstream_prewarmed_total", "result="+r); v != want {
			t.Errorf("tlsrelay_upstream_prewarmed_total{result=%q} = %v, want %v", r, v, want)
		}
	}
	if n := peer.Conns(); n != 0 {
		t.Fatalf("peer connections after the session = %d, want 0 (ready ones are not counted)", n)
	}
}

// TestPrewarmExpiry: connections older than max_idle are closed and
// replaced; a client is still served.
func TestPrewarmExpiry(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, prewarmConf(ups, "proxy_ssl_prewarm 2 max_idle=1s;"))
	w := warmOf(tb)
	peer := peerOf(t, tb, ups[0].Addr())
	// Two replaced: four handshakes, as the upstream counts them (its
	// side of a TLS 1.3 handshake ends after ours).
	testutil.WaitFor(t, "two expired and two ready", 15*time.Second, func() bool {
		return tb.eng.Metrics().Snapshot().Prewarmed[dial.WarmExpired] >= 2 && w.Ready(peer) == 2 &&
			ups[0].Stats().Handshakes >= 4
	})
	if _, err := echoOnce(tb.addr, []byte("after expiry"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// startClosing starts a backend.Closing requiring set's client
// certificate, closed with the test.
func startClosing(t *testing.T, set *pki.Set) *backend.Closing {
	t.Helper()
	u, err := backend.StartClosing(set.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Close)
	return u
}

// TestPrewarmUpstreamClosedIdle: the upstream closes the ready
// connections; a client that comes next is not handed one of them (its
// session is served end to end) and both are counted as closed.
func TestPrewarmUpstreamClosedIdle(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	up := startClosing(t, set)
	text := strings.Replace(prewarmConf(nil, "proxy_ssl_prewarm 2;"), "upstream backend {\n",
		"upstream backend {\n    server "+up.Addr()+";\n", 1)
	tb := startEngine(t, dir, text)
	w := warmOf(tb)
	peer := peerOf(t, tb, up.Addr())
	testutil.WaitFor(t, "two ready connections", 10*time.Second, func() bool {
		return w.Ready(peer) == 2 && up.Handshakes() == 2
	})
	if n := up.CloseAll(); n != 2 {
		t.Fatalf("the upstream closed %d connections, want 2", n)
	}
	if got, err := echoOnce(tb.addr, []byte("not stale"), 10*time.Second); err != nil || string(got) != "not stale" {
		t.Fatalf("echo after the upstream closed the ready connections = %q, %v", got, err)
	}
	testutil.WaitFor(t, "both counted as closed", 10*time.Second, func() bool {
		return tb.eng.Metrics().Snapshot().Prewarmed[dial.WarmClosed] == 2
	})
}

// TestPrewarmRefusedWithProxyProtocol: the PROXY header names the client,
// so a pre-warmed connection cannot carry one: the configuration is
// refused at the directive's line.
func TestPrewarmRefusedWithProxyProtocol(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	text := strings.ReplaceAll(prewarmConf(ups, "proxy_protocol on;\n        proxy_ssl_prewarm 2;"), "{{dir}}", dir)
	text = strings.ReplaceAll(text, "127.0.0.1:0;", "127.0.0.1:1;")
	path := filepath.Join(dir, "tlsrelay.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := conf.Load(path, conf.LoadOptions{Prefix: dir})
	line := 0
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, "proxy_ssl_prewarm") {
			line = i + 1
		}
	}
	want := fmt.Sprintf(`"proxy_ssl_prewarm" cannot be used with "proxy_protocol on": the PROXY header names the client, `+
		`which a pre-warmed connection does not have yet in %s:%d`, path, line)
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("Load = %v\nwant ...%s", err, want)
	}
}

// TestPrewarmRetire: a reload that drops proxy_ssl_prewarm stops the old
// plan's refillers and closes its ready connections (the upstream sees
// them end); one that keeps it starts the new plan's; stopping the engine
// ends them too. No refiller goroutine outlives its plan.
func TestPrewarmRetire(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, prewarmConf(ups, "proxy_ssl_prewarm 2;"))
	peer := peerOf(t, tb, ups[0].Addr())
	w := warmOf(tb)
	testutil.WaitFor(t, "two ready connections", 10*time.Second, func() bool {
		return w.Ready(peer) == 2 && ups[0].Stats().Active == 2
	})
	if n := refillers(); n != 1 {
		t.Fatalf("%d refillers, want 1 (one peer)", n)
	}
	if err := tb.reload(prewarmConf(ups, "")); err != nil {
		t.Fatal(err)
	}
	if n := refillers(); n != 0 {
		t.Fatalf("%d refillers after a reload without proxy_ssl_prewarm, want 0", n)
	}
	if w.Ready(peer) != 0 {
		t.Fatal("the retired plan kept ready connections")
	}
	testutil.WaitFor(t, "the upstream saw the ready connections end", 10*time.Second, func() bool { return ups[0].Stats().Active == 0 })
	if warmOf(tb) != nil {
		t.Fatal("a plan without proxy_ssl_prewarm has a pre-warm pool")
	}
	if _, err := echoOnce(tb.addr, []byte("no warm"), 10*time.Second); err != nil {
		t.Fatal(err)
	}

	if err := tb.reload(prewarmConf(ups, "proxy_ssl_prewarm 1;")); err != nil {
		t.Fatal(err)
	}
	w2 := warmOf(tb)
	peer = peerOf(t, tb, ups[0].Addr())
	testutil.WaitFor(t, "one ready connection", 10*time.Second, func() bool { return w2.Ready(peer) == 1 })
	if n := refillers(); n != 1 {
		t.Fatalf("%d refillers after a reload with proxy_ssl_prewarm 1, want 1", n)
	}
	tb.stop()
	select {
	case err := <-tb.done:
		tb.done <- err
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return")
	}
	if n := refillers(); n != 0 {
		t.Fatalf("%d refillers after the engine stopped, want 0", n)
	}
	if w2.Ready(peer) != 0 {
		t.Fatal("ready connections left after the engine stopped")
	}
	testutil.WaitFor(t, "the upstream saw every connection end", 10*time.Second, func() bool { return ups[0].Stats().Active == 0 })
}

// TestPrewarmHalfClose: a pre-warmed connection serves a session of a
// server with proxy_half_close on as a dialed one does: the client's FIN
// goes upstream and the echo still comes back.
func TestPrewarmHalfClose(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, prewarmConf(ups, "proxy_ssl_prewarm 1; proxy_half_close on;"))
	w := warmOf(tb)
	peer := peerOf(t, tb, ups[0].Addr())
	testutil.WaitFor(t, "one ready connection", 10*time.Second, func() bool {
		return w.Ready(peer) == 1 && ups[0].Stats().Handshakes == 1
	})
	c, err := net.DialTimeout("tcp", tb.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("half and warm")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "half and warm" {
		t.Fatalf("echo after the client's FIN = %q, %v", got, err)
	}
	if n := tb.eng.Metrics().Snapshot().Prewarmed[dial.WarmUsed]; n != 1 {
		t.Fatalf("prewarmed used = %d, want 1", n)
	}
}
