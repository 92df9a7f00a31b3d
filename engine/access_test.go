package engine

import (
	"fmt"
	"io"
	"net"
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

// TestAccessRulesEngine: a client that a deny rule matches is closed
// before any upstream work, logged as NGINX does and written to the access
// log with 403; the first matching rule decides.
func TestAccessRulesEngine(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	logPath := filepath.Join(dir, "access.log")
	text := "worker_processes 2;\nstream {\nlog_format st '$status $remote_addr';\n" + upstreamBlock("backend", ups) +
		fmt.Sprintf(guideServer, "access_log "+logPath+" st; deny 127.0.0.0/8; allow all;") +
		fmt.Sprintf(guideServer, "access_log "+logPath+" st; allow 127.0.0.1; deny all;") + "}\n"
	tb := startEngine(t, dir, text)
	addrs := tb.eng.Addrs()
	denied, allowed := addrs[0].String(), addrs[1].String()
	c, err := net.DialTimeout("tcp", denied, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("x"))
	if n, _ := io.Copy(io.Discard, c); n != 0 {
		t.Errorf("a denied client got %d bytes", n)
	}
	c.Close()
	if _, err := echoOnce(allowed, []byte("welcome"), 10*time.Second); err != nil {
		t.Fatalf("allowed client: %v", err)
	}
	testutil.WaitFor(t, "two access-log lines", 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), "\n") >= 2
	})
	b, _ := os.ReadFile(logPath)
	if !strings.Contains(string(b), "403 127.0.0.1\n") || !strings.Contains(string(b), "200 127.0.0.1\n") {
		t.Errorf("access log:\n%s", b)
	}
	if !strings.Contains(tb.logText(), "access forbidden by rule, client: 127.0.0.1, server: 127.0.0.1:1") {
		t.Errorf("error log:\n%s", tb.logText())
	}
	if n := ups[0].Stats().Accepted; n != 1 {
		t.Errorf("the upstream accepted %d connections, want 1 (none for the denied client)", n)
	}
	if n := tb.eng.Metrics().Snapshot().Ended[metrics.ReasonForbidden]; n != 1 {
		t.Errorf("sessions ended as forbidden: %d", n)
	}
}

// TestLimitConnEngine: limit_conn 2 per client address: two sessions are
// held, the third is closed at once with limit_conn_status and logged;
// once one of the two ends, a new one gets through.
func TestLimitConnEngine(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	logPath := filepath.Join(dir, "access.log")
	text := strings.Replace(guideConf(ups, "access_log "+logPath+" st; limit_conn addr 2;"), "stream {",
		"stream {\nlog_format st '$status';\nlimit_conn_zone $binary_remote_addr zone=addr:1m;", 1)
	tb := startEngine(t, dir, text)
	a, b := holdSession(t, tb.addr), holdSession(t, tb.addr)
	c, err := net.DialTimeout("tcp", tb.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("x"))
	if n, _ := io.Copy(io.Discard, c); n != 0 {
		t.Errorf("the third session got %d bytes", n)
	}
	c.Close()
	if !strings.Contains(tb.logText(), `limiting connections by zone "addr", client: 127.0.0.1`) {
		t.Errorf("error log:\n%s", tb.logText())
	}
	if err := a.echo(100); err != nil {
		t.Errorf("held session: %v", err)
	}
	b.c.Close()
	testutil.WaitFor(t, "the held session to end", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 1 })
	if _, err := echoOnce(tb.addr, []byte("room again"), 10*time.Second); err != nil {
		t.Fatalf("after one left: %v", err)
	}
	testutil.WaitFor(t, "the access log", 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), "\n") >= 3
	})
	if b, _ := os.ReadFile(logPath); strings.Count(string(b), "503\n") != 1 {
		t.Errorf("access log:\n%s\nwant one 503", b)
	}
	if n := tb.eng.Metrics().Snapshot().Ended[metrics.ReasonLimited]; n != 1 {
		t.Errorf("sessions ended by limit_conn: %d, want 1", n)
	}
}
