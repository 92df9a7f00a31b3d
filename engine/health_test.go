package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
	"github.com/tlsrelay/tlsrelay/pool"
)

// healthConf is the guide's server over a zoned upstream of addrs, with
// extra directives in the server block and stream-level text before it.
func healthConf(addrs []string, stream, extra string) string {
	var b strings.Builder
	b.WriteString("worker_processes 1;\nstream {\n" + stream + "\nupstream backend {\n    zone backend 64k;\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "    server %s;\n", a)
	}
	b.WriteString("}\n" + fmt.Sprintf(guideServer, extra) + "}\n")
	return b.String()
}

// startHealthEngine is startEngine, and stops the health checkers of the
// plan running as soon as the test ends, before the engine's own cleanup
// (Serve's end frees the plan, which stops them too): probes must not
// outlive the test, nor dial its upstreams while they close.
func startHealthEngine(t *testing.T, dir, text string) *testbed {
	t.Helper()
	tb := startEngine(t, dir, text)
	t.Cleanup(func() {
		if stop := tb.eng.plan.Load().stopHealth; stop != nil {
			stop()
		}
	})
	return tb
}

// peerOf returns the running plan's peer at addr.
func peerOf(t *testing.T, tb *testbed, addr string) *pool.Peer {
	t.Helper()
	for _, p := range tb.eng.plan.Load().groups["backend"].Peers() {
		if p.Addr.String() == addr {
			return p
		}
	}
	t.Fatalf("no peer %s", addr)
	return nil
}

// TestHealthCheckRefused: a peer that refuses connections is out before
// any client reaches it: no session fails an attempt on it.
func TestHealthCheckRefused(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	good := startUpstreams(t, set, 1, backend.Echo, nil)[0]
	dead := backend.RefusingAddr(t)
	tb := startHealthEngine(t, dir, healthConf([]string{dead, good.Addr()}, "", "health_check interval=100ms;"))
	bad := peerOf(t, tb, dead)
	testutil.WaitFor(t, "the refusing peer out", 5*time.Second, bad.Unhealthy)
	if st := bad.State(time.Now()); st != pool.PeerUnhealthy {
		t.Fatalf("state %v", st)
	}
	// Probes resume TLS sessions: after the first, probes of the good peer
	// are abbreviated handshakes. (One may miss its ticket when the
	// machine is loaded: the probe waits for it only about as long as its
	// handshake took, and then the next probe does a full handshake.)
	testutil.WaitFor(t, "two resumed probes of the good peer", 10*time.Second, func() bool { return good.Stats().Resumed >= 2 })
	for i := range 10 {
		if _, err := echoOnce(tb.addr, []byte("hi"), 10*time.Second); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	if n := int64(tb.eng.Metrics().Snapshot().FailedAttempts); n != 0 {
		t.Fatalf("%d failed attempts: a client reached the refusing peer", n)
	}
	testutil.WaitFor(t, "the state change in the log", 5*time.Second, func() bool {
		return strings.Contains(tb.logText(), "peer "+dead+` of upstream "backend" is unhealthy`)
	})
}

// TestHealthCheckHangingHandshake: a peer that accepts TCP but never
// answers the ClientHello is out once the first probe timed out
// (health_check_timeout), long before proxy_connect_timeout.
func TestHealthCheckHangingHandshake(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	good := startUpstreams(t, set, 1, backend.Echo, nil)[0]
	ln := testutil.Listen(t, "tcp", "127.0.0.1:0")
	var accepted atomic.Int64
	testutil.Serve(t, ln, func(c net.Conn) {
		accepted.Add(1)
		testutil.Discard(c)
	})
	start := time.Now()
	tb := startHealthEngine(t, dir, healthConf([]string{ln.Addr().String(), good.Addr()}, "health_check_timeout 300ms;",
		"proxy_connect_timeout 20s; health_check interval=1m;"))
	hang := peerOf(t, tb, ln.Addr().String())
	testutil.WaitFor(t, "the hanging peer out", 5*time.Second, hang.Unhealthy)
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Fatalf("out after %v, before the probe could time out", el)
	}
	if ok, failed := hang.HealthChecks(); ok != 0 || failed != 1 {
		t.Fatalf("probes ok %d failed %d, want one failed (interval=1m)", ok, failed)
	}
	before := accepted.Load()
	for i := range 5 {
		t0 := time.Now()
		if _, err := echoOnce(tb.addr, []byte("hi"), 10*time.Second); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if el := time.Since(t0); el > 5*time.Second {
			t.Fatalf("client %d took %v", i, el)
		}
	}
	if n := accepted.Load() - before; n != 0 {
		t.Fatalf("%d client sessions reached the hanging peer", n)
	}
	testutil.WaitFor(t, "the timeout in the log", 5*time.Second, func() bool {
		return strings.Contains(tb.logText(), "is unhealthy: health check failed: TLS handshake")
	})
}

// flaky forwards connections to target while good is set, holds them
// without a word while hang is set, and closes them at once otherwise: a
// peer whose health the test switches.
type flaky struct {
	ln         net.Listener
	good, hang atomic.Bool
	target     string
}

func startFlaky(t *testing.T, target string) *flaky {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &flaky{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if f.hang.Load() {
				go func() { io.Copy(io.Discard, c); c.Close() }()
				continue
			}
			if !f.good.Load() {
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return f
}

// TestHealthCheckPasses: an out peer comes back after passes= successes,
// and is picked again.
func TestHealthCheckPasses(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 2, backend.Echo, nil)
	f := startFlaky(t, ups[1].Addr())
	tb := startHealthEngine(t, dir, healthConf([]string{ups[0].Addr(), f.ln.Addr().String()}, "",
		"health_check interval=50ms fails=2 passes=3;"))
	p := peerOf(t, tb, f.ln.Addr().String())
	testutil.WaitFor(t, "the flaky peer out", 5*time.Second, p.Unhealthy)
	if _, failed := p.HealthChecks(); failed < 2 {
		t.Fatalf("out after %d failed probes, want 2", failed)
	}
	okBefore, _ := p.HealthChecks()
	f.good.Store(true)
	testutil.WaitFor(t, "the flaky peer back", 5*time.Second, func() bool { return !p.Unhealthy() })
	if ok, _ := p.HealthChecks(); ok-okBefore < 3 {
		t.Fatalf("back after %d passed probes, want 3", ok-okBefore)
	}
	hs := ups[1].Stats().Handshakes
	for i := range 6 {
		if _, err := echoOnce(tb.addr, []byte("hi"), 10*time.Second); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	if ups[1].Stats().Handshakes-hs < 3 {
		t.Fatal("the peer that came back got no sessions")
	}
	testutil.WaitFor(t, "the recovery in the log", 5*time.Second, func() bool {
		return strings.Contains(tb.logText(), "is healthy after 3 passed health checks")
	})
}

// TestHealthCheckMatch: send/expect against an echo upstream; an answer
// that does not match takes the peer out.
func TestHealthCheckMatch(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 2, backend.Echo, nil)
	for _, tc := range []struct {
		name, match string
		healthy     bool
	}{
		{"string", `send "PING 42\r\n"; expect "PING 42";`, true},
		{"regex", `send "status: OK\r\n"; expect ~* "^STATUS: (ok|fine)";`, true},
		{"hex", `send "\x01\x02ab"; expect "\x01\x02a";`, true},
		{"mismatch", `send "PING\r\n"; expect "PONG";`, false},
		{"regex mismatch", `send "PING\r\n"; expect ~ "^PONG";`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := startHealthEngine(t, dir, healthConf([]string{ups[0].Addr(), ups[1].Addr()},
				"health_check_timeout 500ms;\nmatch m { "+tc.match+" }",
				"health_check interval=50ms match=m;"))
			p := peerOf(t, tb, ups[1].Addr())
			testutil.WaitFor(t, "probes", 5*time.Second, func() bool {
				ok, failed := p.HealthChecks()
				return ok+failed >= 2
			})
			ok, failed := p.HealthChecks()
			if tc.healthy && (failed != 0 || p.Unhealthy()) {
				t.Fatalf("ok %d failed %d unhealthy %v, want healthy", ok, failed, p.Unhealthy())
			}
			if !tc.healthy {
				if ok != 0 || !p.Unhealthy() {
					t.Fatalf("ok %d failed %d unhealthy %v, want out", ok, failed, p.Unhealthy())
				}
				testutil.WaitFor(t, "the mismatch in the log", 5*time.Second, func() bool {
					return strings.Contains(tb.logText(), "does not match")
				})
			}
		})
	}
}

// TestHealthCheckReload: a reload to a configuration without health_check
// releases the peers the old one held out, even while a session of the old
// configuration is still open; a reload that keeps it checks afresh.
func TestHealthCheckReload(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 2, backend.Echo, nil)
	f := startFlaky(t, ups[1].Addr())
	addrs := []string{ups[0].Addr(), f.ln.Addr().String()}
	text := healthConf(addrs, "", "health_check interval=1m;")
	tb := startHealthEngine(t, dir, text)
	p := peerOf(t, tb, f.ln.Addr().String())
	testutil.WaitFor(t, "the flaky peer out", 5*time.Second, p.Unhealthy)
	// A reload that keeps the check keeps the peer out while the new
	// checker's first probe is still running (it hangs for 5s).
	f.hang.Store(true)
	if err := tb.reload(healthConf(addrs, "", "health_check interval=59s;")); err != nil {
		t.Fatal(err)
	}
	if !peerOf(t, tb, f.ln.Addr().String()).Unhealthy() {
		t.Fatal("a reload let the unhealthy peer in before its first probe")
	}
	f.hang.Store(false)
	// A session of the old plan stays open across the reloads.
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	f.good.Store(true) // the old checker (interval=1m) does not notice
	if err := tb.reload(healthConf(addrs, "", "")); err != nil {
		t.Fatal(err)
	}
	if p := peerOf(t, tb, f.ln.Addr().String()); p.Unhealthy() {
		t.Fatal("the peer is still out after a reload without health_check")
	}
	f.good.Store(false)
	if err := tb.reload(text); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the new checker to take the peer out", 5*time.Second, peerOf(t, tb, f.ln.Addr().String()).Unhealthy)
}

// BenchmarkHealthProbe measures one probe (connect, resumed TLS handshake,
// ticket read) of a loopback echo upstream, for the cost note of the docs.
func BenchmarkHealthProbe(b *testing.B) {
	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if _, err := set.WriteFiles(dir); err != nil {
		b.Fatal(err)
	}
	up, err := backend.Start(backend.Config{TLS: set.ServerConfig(), Mode: backend.Echo})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	for _, proto := range []string{"TLSv1.2", "TLSv1.3"} {
		b.Run(proto, func(b *testing.B) {
			text := strings.ReplaceAll(healthConf([]string{up.Addr()}, "", "health_check;"), "{{dir}}", dir)
			text = strings.Replace(text, "127.0.0.1:0;", "127.0.0.1:1;", 1)
			text = strings.Replace(text, "proxy_ssl_protocols           TLSv1.2 TLSv1.3;", "proxy_ssl_protocols "+proto+";", 1)
			path := dir + "/bench.conf"
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				b.Fatal(err)
			}
			cfg, _, err := conf.Load(path, conf.LoadOptions{Prefix: dir})
			if err != nil {
				b.Fatal(err)
			}
			p, err := build(cfg, false, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.free()
			s := p.servers[0]
			peer := s.group.Peers()[0]
			h0, r0 := up.Stats().Handshakes, up.Stats().Resumed
			cpu0 := cpuTime(b)
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := s.probe(ctx, peer, 0, nil)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
			}
			// Wall time includes TLS 1.3's wait for tickets; CPU time is
			// the process's, both ends of the probe.
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
			st := up.Stats()
			b.ReportMetric(float64(st.Resumed-r0)/float64(st.Handshakes-h0), "resumed/op")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
