package engine

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestQuitClosesListener: a graceful quit closes the listening socket at
// once, so new connections are refused (an L4 balancer sees the instance
// go), while the sessions held go on to their end.
func TestQuitClosesListener(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	held := make([]*heldSession, 10)
	for i := range held {
		held[i] = holdSession(t, tb.addr)
	}
	close(tb.quit)
	testutil.WaitFor(t, "quitting", 5*time.Second, func() bool { return tb.eng.quitting.Load() })
	c, err := net.DialTimeout("tcp", tb.addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatal("a new connection was accepted after quit")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("new connection after quit: %v, want connection refused", err)
	}
	for i, h := range held {
		if err := h.echo(32 << 10); err != nil {
			t.Errorf("held session %d after quit: %v", i, err)
		}
	}
	for _, h := range held {
		h.c.Close()
	}
	select {
	case <-tb.done:
		tb.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the last session ended")
	}
}

// TestQuitPendingDials: a graceful quit leaves sessions that are still
// dialing alone (they may yet reach their upstream), and once
// worker_shutdown_timeout passes it ends them and their dials at once,
// instead of waiting for their proxy_connect_timeout (60 s).
func TestQuitPendingDials(t *testing.T) {
	const n = 50
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	good := startUpstreams(t, set, 1, backend.Echo, nil)
	silent := testutil.SilentUpstream(t)
	text := strings.Replace(faultConf([]string{silent.Addr()}, good, ""), "stream {", "worker_shutdown_timeout 1s;\nstream {", 1)
	tb := startEngine(t, dir, text)
	dialClients(t, tb.addr, n)
	testutil.WaitFor(t, "every handshake in flight", 30*time.Second, func() bool {
		return silent.Open() == n && tb.eng.dialer.InFlight().Handshaking == n
	})
	start := time.Now()
	close(tb.quit)
	testutil.WaitFor(t, "quitting", 5*time.Second, func() bool { return tb.eng.quitting.Load() })
	if f := tb.eng.dialer.InFlight(); f.Handshaking != n || f.Cancelled != 0 {
		t.Errorf("right after quit: %+v; want the %d dials still running", f, n)
	}
	select {
	case err := <-tb.done:
		tb.done <- err
	case <-time.After(20 * time.Second):
		t.Fatalf("Serve did not return 20s after quit (worker_shutdown_timeout 1s) with %d handshakes pending", n)
	}
	t.Logf("quit with %d handshakes pending, worker_shutdown_timeout 1s: Serve returned after %v", n, time.Since(start))
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("Serve returned %v after quit, before worker_shutdown_timeout", d)
	}
	testutil.WaitFor(t, "the upstream to see every connection closed", 10*time.Second, func() bool { return silent.Open() == 0 })
}

// TestQuitEndsBackgroundWork: a graceful quit ends at once what only new
// sessions need, not when the last held session ends (for a gateway's
// idle clients, hours later): the health probes stop, with the peer they
// held out still out for the sessions still connecting; the pre-warm
// refillers stop and their ready connections close, so the upstream sees
// the held session alone. The held session is untouched.
func TestQuitEndsBackgroundWork(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	good := startUpstreams(t, set, 1, backend.Echo, nil)[0]
	dead := backend.RefusingAddr(t)
	tb := startHealthEngine(t, dir, healthConf([]string{dead, good.Addr()}, "",
		"health_check interval=50ms; proxy_ssl_prewarm 2;"))
	bad, peer, w := peerOf(t, tb, dead), peerOf(t, tb, good.Addr()), warmOf(tb)
	testutil.WaitFor(t, "the refusing peer out, two ready connections", 10*time.Second, func() bool {
		return bad.Unhealthy() && w.Ready(peer) == 2
	})
	held := holdSession(t, tb.addr)
	probes := func() int {
		return goroutinesIn("pool.(*HealthChecker).Run(") + goroutinesIn("pool.(*HealthChecker).watch(")
	}
	if n := probes(); n != 3 {
		t.Fatalf("%d health checker goroutines before quit, want 3 (Run and two peers)", n)
	}

	close(tb.quit)
	testutil.WaitFor(t, "the probes and refillers to end, the ready connections to close", 10*time.Second, func() bool {
		return probes() == 0 && refillers() == 0 && w.Ready(peer) == 0
	})
	testutil.WaitFor(t, "the upstream to hold the held session alone", 10*time.Second, func() bool {
		return good.Stats().Active == 1
	})
	if !bad.Unhealthy() {
		t.Error("the quit released the peer the health check held out")
	}
	if err := held.echo(16 << 10); err != nil {
		t.Fatalf("held session after quit: %v", err)
	}
	checks := good.Stats().Accepted
	held.c.Close()
	select {
	case err := <-tb.done:
		tb.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the last session ended")
	}
	if n := good.Stats().Accepted; n != checks {
		t.Errorf("the upstream accepted %d connections after the quit's background work ended", n-checks)
	}
}
