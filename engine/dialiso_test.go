package engine

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/faultnet"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// Issue 18 part 2: one upstream that never answers must cost only the
// sessions that chose it, and a client that leaves must take its pending
// dial with it.

// dialClients opens n connections to addr from 8 goroutines and returns
// them.
func dialClients(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	for err := range errs {
		t.Fatal(err)
	}
	return conns
}

// countSessions counts, on each loop, the live sessions for which match
// holds. Runs match on the loops.
func countSessions(t *testing.T, tb *testbed, match func(*session) bool) int {
	t.Helper()
	var total atomic.Int64
	var wg sync.WaitGroup
	for _, lp := range tb.eng.loops {
		wg.Add(1)
		err := lp.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			defer wg.Done()
			for s := lp.live; s != nil; s = s.next {
				if match(s) {
					total.Add(1)
				}
			}
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	return int(total.Load())
}

// TestDialIsolation: 1,100 sessions (more than the 1,024 dial workers the
// dialer once shared) hang in their handshake to a silent upstream through
// one server block; a session through another server block to a healthy
// upstream completes while all of them still hang (their
// proxy_connect_timeout is the default 60 s). The figure to watch is the
// logged latency of those healthy sessions.
func TestDialIsolation(t *testing.T) {
	const n = 1100
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	good := startUpstreams(t, set, 1, backend.Echo, nil)
	silent := testutil.SilentUpstream(t)
	tb := startEngine(t, dir, faultConf([]string{silent.Addr()}, good, ""))
	goodAddr := tb.eng.Addrs()[1].String()

	dialClients(t, tb.addr, n)
	testutil.WaitFor(t, "every session's dial to reach the silent upstream", 30*time.Second, func() bool {
		return silent.Accepted() == n
	})
	testutil.WaitFor(t, "every handshake to be in flight", 10*time.Second, func() bool {
		return tb.eng.dialer.InFlight().Handshaking == n
	})
	var d []time.Duration
	for i := 0; i < 10; i++ {
		start := time.Now()
		got, err := echoOnce(goodAddr, []byte("healthy"), 30*time.Second)
		if err != nil || string(got) != "healthy" {
			t.Fatalf("session %d to the healthy server block while %d dials hang: %q, %v", i, n, got, err)
		}
		d = append(d, time.Since(start))
	}
	// Nothing was taken from the hung sessions to serve these.
	if open, f := silent.Open(), tb.eng.dialer.InFlight(); open != n || f.Handshaking != n {
		t.Fatalf("the silent upstream holds %d connections, %d handshakes in flight; want %d", open, f.Handshaking, n)
	}
	slices.Sort(d)
	t.Logf("new session through the healthy server block (connect, dial, handshake, echo) while %d dials hang: min %v p50 %v max %v",
		n, d[0], pct(d, .5), d[len(d)-1])
}

// TestDialCancelledWhenClientLeaves: a client that closes having sent
// nothing, or that resets, takes its dial with it at once: the upstream
// sees its connection closed, the dialer has nothing in flight and the
// session ends, long before proxy_connect_timeout (60 s). A client that
// sent bytes and then shut its side keeps its dial, as in NGINX.
func TestDialCancelledWhenClientLeaves(t *testing.T) {
	const n = 50
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	good := startUpstreams(t, set, 1, backend.Echo, nil)
	for _, tc := range []struct {
		name   string
		leave  func(c net.Conn) error
		reason string
	}{
		{"closed having sent nothing", func(c net.Conn) error { return c.Close() }, "client closed"},
		{"reset after sending", func(c net.Conn) error {
			if _, err := c.Write([]byte("hello")); err != nil {
				return err
			}
			faultnet.Reset(c.(*net.TCPConn))
			return nil
		}, "client aborted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(filepath.Join(dir, "faults.log")) // the previous case's
			silent := testutil.SilentUpstream(t)
			tb := startEngine(t, dir, faultConf([]string{silent.Addr()}, good, ""))
			conns := dialClients(t, tb.addr, n)
			testutil.WaitFor(t, "every handshake in flight", 30*time.Second, func() bool {
				return silent.Open() == n && tb.eng.dialer.InFlight().Handshaking == n
			})
			cancelled0 := tb.eng.dialer.InFlight().Cancelled
			start := time.Now()
			for _, c := range conns {
				if err := tc.leave(c); err != nil {
					t.Fatal(err)
				}
			}
			testutil.WaitFor(t, "the upstream to see every connection closed", 20*time.Second, func() bool {
				return silent.Open() == 0
			})
			testutil.WaitFor(t, "no dial in flight and no session left", 20*time.Second, func() bool {
				f := tb.eng.dialer.InFlight()
				return f.Connecting == 0 && f.Handshaking == 0 && tb.eng.Metrics().Active() == 0
			})
			t.Logf("%d dials cancelled %v after their clients left", n, time.Since(start))
			if got := tb.eng.dialer.InFlight().Cancelled - cancelled0; got != n {
				t.Errorf("%d dial jobs counted cancelled, want %d", got, n)
			}
			lines := tb.waitAccess(t, n)
			for _, l := range lines {
				if want := `200 "` + tc.reason + `"`; len(l) < len(want) || l[:len(want)] != want {
					t.Errorf("access log line %q, want it to start %s", l, want)
					break
				}
			}
			if got := silent.Accepted(); got != n {
				t.Errorf("the upstream saw %d connections for %d sessions", got, n)
			}
			// The silent peer was not charged: the healthy block aside,
			// a new session to it is dialed (and hangs) again.
			c, err := net.Dial("tcp", tb.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			testutil.WaitFor(t, "a new dial to the same peer", 10*time.Second, func() bool { return silent.Accepted() == n+1 })
		})
	}

	t.Run("sent bytes then shut its side", func(t *testing.T) {
		silent := testutil.SilentUpstream(t)
		tb := startEngine(t, dir, faultConf([]string{silent.Addr()}, good, ""))
		conns := dialClients(t, tb.addr, n)
		for _, c := range conns {
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
		}
		testutil.WaitFor(t, "every handshake in flight", 30*time.Second, func() bool {
			return silent.Open() == n && tb.eng.dialer.InFlight().Handshaking == n
		})
		// A reset client, mixed in, is cancelled; the others are not.
		extra, err := net.Dial("tcp", tb.addr)
		if err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, "the extra dial in flight", 10*time.Second, func() bool { return silent.Open() == n+1 })
		for _, c := range conns {
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
		}
		testutil.WaitFor(t, "the proxy to see every FIN", 20*time.Second, func() bool {
			return countSessions(t, tb, func(s *session) bool { return s.cliEOF }) == n
		})
		faultnet.Reset(extra.(*net.TCPConn))
		testutil.WaitFor(t, "the reset client's dial to be cancelled", 20*time.Second, func() bool {
			return silent.Open() == n
		})
		if f := tb.eng.dialer.InFlight(); f.Handshaking != n || tb.eng.Metrics().Active() != n {
			t.Errorf("%d handshakes in flight, %d sessions; want %d of each: the half-closed clients keep their dial",
				f.Handshaking, tb.eng.Metrics().Active(), n)
		}
	})
}
