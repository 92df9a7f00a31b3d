package engine

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestWorkerShutdownTimeout: after a reload, sessions of the replaced
// configuration are closed once its worker_shutdown_timeout passes (as
// NGINX's old workers), logged as the proxy's own shutdown; sessions of
// the new configuration are not touched.
func TestWorkerShutdownTimeout(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	logPath := filepath.Join(dir, "access.log")
	text := strings.Replace(guideConf(ups, "access_log "+logPath+" why;"), "stream {",
		"worker_shutdown_timeout 1s;\nstream {\nlog_format why '$close_reason';", 1)
	tb := startEngine(t, dir, text)
	old := holdSession(t, tb.addr)
	if err := tb.reload(text); err != nil {
		t.Fatal(err)
	}
	fresh := holdSession(t, tb.addr)
	start := time.Now()
	old.c.SetDeadline(time.Now().Add(20 * time.Second))
	if n, err := io.Copy(io.Discard, old.c); err != nil || n != 0 {
		t.Fatalf("old session: read %d bytes, %v; want EOF", n, err)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("old session closed after %v, before worker_shutdown_timeout", d)
	}
	if err := fresh.echo(1024); err != nil {
		t.Errorf("session of the new configuration: %v", err)
	}
	if !strings.Contains(tb.logText(), "closing the session (worker_shutdown_timeout after a reload)") {
		t.Errorf("the error log does not say why:\n%s", tb.logText())
	}
	testutil.WaitFor(t, "the access log line", 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "shutdown")
	})
}

// TestStopClosesAsShutdown: on a stop (SIGTERM) held sessions are logged
// as closed by the proxy's shutdown, not as "upstream closed".
func TestStopClosesAsShutdown(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	logPath := filepath.Join(dir, "access.log")
	text := strings.Replace(guideConf(ups, "access_log "+logPath+" why;"), "stream {",
		"stream {\nlog_format why '$status $close_reason';", 1)
	tb := startEngine(t, dir, text)
	for i := 0; i < 3; i++ {
		holdSession(t, tb.addr)
	}
	tb.stop()
	select {
	case err := <-tb.done:
		tb.done <- err
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return")
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Count(string(b), "200 shutdown\n"), 3; got != want {
		t.Errorf("access log has %d lines '200 shutdown', want %d:\n%s", got, want, b)
	}
	if n := tb.eng.Metrics().Snapshot().Ended[metrics.ReasonShutdown]; n != 3 {
		t.Errorf("sessions ended by shutdown: %d, want 3", n)
	}
}

// TestQuitWorkerShutdownTimeout: a graceful quit waits for held sessions
// at most worker_shutdown_timeout, then closes them and Serve returns.
func TestQuitWorkerShutdownTimeout(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	text := strings.Replace(guideConf(ups, ""), "stream {", "worker_shutdown_timeout 1s;\nstream {", 1)
	tb := startEngine(t, dir, text)
	h := holdSession(t, tb.addr)
	close(tb.quit)
	select {
	case err := <-tb.done:
		tb.done <- err
	case <-time.After(20 * time.Second):
		t.Fatalf("Serve did not return after worker_shutdown_timeout:\n%s", tb.logText())
	}
	h.c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.Copy(io.Discard, h.c); err != nil || n != 0 {
		t.Errorf("held session: read %d, %v; want EOF", n, err)
	}
}

// TestStopCancelsPendingDials: a stop (SIGTERM) with 300 handshakes
// pending to a silent upstream returns at once: every dial is cancelled
// (the upstream sees its connections closed) instead of running out its
// proxy_connect_timeout (60 s), and the sessions end as the shutdown.
func TestStopCancelsPendingDials(t *testing.T) {
	const n = 300
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	good := startUpstreams(t, set, 1, backend.Echo, nil)
	silent := testutil.SilentUpstream(t)
	tb := startEngine(t, dir, faultConf([]string{silent.Addr()}, good, ""))
	dialClients(t, tb.addr, n)
	testutil.WaitFor(t, "every handshake in flight", 30*time.Second, func() bool {
		return silent.Open() == n && tb.eng.dialer.InFlight().Handshaking == n
	})
	start := time.Now()
	tb.stop()
	select {
	case err := <-tb.done:
		tb.done <- err
	case <-time.After(20 * time.Second):
		t.Fatalf("Serve did not return 20s after a stop with %d handshakes pending", n)
	}
	t.Logf("stop with %d handshakes pending: Serve returned after %v", n, time.Since(start))
	testutil.WaitFor(t, "the upstream to see every connection closed", 10*time.Second, func() bool { return silent.Open() == 0 })
	if f := tb.eng.dialer.InFlight(); f.Handshaking != 0 || f.Connecting != 0 {
		t.Errorf("dials in flight after the stop: %+v", f)
	}
	if got := tb.eng.Metrics().Snapshot().Ended[metrics.ReasonShutdown]; got != n {
		t.Errorf("sessions ended by the shutdown: %d, want %d", got, n)
	}
}
