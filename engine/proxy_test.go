package engine

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestGuideExampleEcho runs NGINX's guide configuration against three
// local upstreams that require the client certificate and checks that
// payloads from 1 byte to 100 MiB (16 MiB with -short) come back
// byte-exact.
func TestGuideExampleEcho(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 3, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))

	sizes := []int{1, 2, 100, 16 << 10, 16<<10 + 1, 1 << 20, 16 << 20}
	if !testing.Short() {
		sizes = append(sizes, 100<<20)
	}
	for _, n := range sizes {
		payload := make([]byte, n)
		rand.Read(payload)
		got, err := echoOnce(tb.addr, payload, 120*time.Second)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("%d bytes: echo differs", n)
		}
	}
	var subjects int64
	for _, u := range ups {
		subjects += u.Subjects()["tlsrelay client"]
	}
	if subjects != int64(len(sizes)) {
		t.Fatalf("upstreams saw the client certificate %d times, want %d", subjects, len(sizes))
	}
}

// TestConcurrentClients runs many clients at once through the proxy.
func TestConcurrentClients(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 3, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	for _, n := range []int{1, 10, 1000} {
		if n == 1000 && testing.Short() {
			continue
		}
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				payload := []byte(strings.Repeat(fmt.Sprintf("client %d ", i), 100))
				got, err := echoOnce(tb.addr, payload, 60*time.Second)
				if err == nil && !bytes.Equal(got, payload) {
					err = fmt.Errorf("client %d: echo differs", i)
				}
				if err != nil {
					errs <- err
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%d clients: %v", n, err)
		}
	}
}

// TestSessionReuse checks that after the first connection to each
// upstream every new connection resumes, for TLS 1.2 and 1.3, with three
// upstreams holding different ticket keys; and that `off` never resumes.
func TestSessionReuse(t *testing.T) {
	for _, tc := range []struct {
		proto string
		reuse string
	}{
		{"TLSv1.2", "on"}, {"TLSv1.3", "on"}, {"TLSv1.2", "off"}, {"TLSv1.3", "off"},
	} {
		t.Run(tc.proto+"/"+tc.reuse, func(t *testing.T) {
			set, _, dir := newPKI(t, pki.ECDSAP256, 1)
			// Each upstream gets its own, distinct ticket key (Go's
			// default is a random key per config).
			ups := startUpstreams(t, set, 3, backend.Echo, nil)
			text := strings.Replace(guideConf(ups, ""), "proxy_ssl_protocols           TLSv1.2 TLSv1.3;",
				"proxy_ssl_protocols "+tc.proto+";", 1)
			text = strings.Replace(text, "proxy_ssl_session_reuse on;", "proxy_ssl_session_reuse "+tc.reuse+";", 1)
			tb := startEngine(t, dir, text)
			const conns = 30
			for i := 0; i < conns; i++ {
				// One byte and close: even so the ticket must be stored.
				if _, err := echoOnce(tb.addr, []byte{'x'}, 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			var hs, resumed int64
			for _, u := range ups {
				st := u.Stats()
				hs += st.Handshakes
				resumed += st.Resumed
				if st.Handshakes == 0 {
					t.Fatalf("upstream %s got no connection", u.Addr())
				}
			}
			want := int64(conns - len(ups))
			if tc.reuse == "off" {
				want = 0
			}
			if hs != conns || resumed != want {
				t.Fatalf("handshakes %d resumed %d, want %d and %d", hs, resumed, conns, want)
			}
		})
	}
}

// TestWeightedRoundRobinAndFailover checks NGINX's smooth weighted round
// robin and that a refusing server is skipped.
func TestWeightedRoundRobinAndFailover(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 2, backend.Echo, nil)
	// A third server that refuses connections: a port held and never listening.
	dead := backend.RefusingAddr(t)
	text := "worker_processes 1;\nstream {\nupstream backend {\n" +
		"    server " + ups[0].Addr() + " weight=3;\n" +
		"    server " + ups[1].Addr() + ";\n" +
		"    server " + dead + ";\n}\n" + fmt.Sprintf(guideServer, "") + "}\n"
	tb := startEngine(t, dir, text)
	for i := 0; i < 20; i++ {
		if _, err := echoOnce(tb.addr, []byte("hi"), 10*time.Second); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	a, b := ups[0].Stats().Handshakes, ups[1].Stats().Handshakes
	if a+b != 20 || a < 13 || a > 16 {
		t.Fatalf("weight 3 server got %d, weight 1 got %d of 20", a, b)
	}
	if !strings.Contains(tb.logText(), "Connection refused") {
		t.Fatalf("refused server not logged:\n%s", tb.logText())
	}
}

// TestAllUpstreamsDown closes the client and logs why.
func TestAllUpstreamsDown(t *testing.T) {
	_, _, dir := newPKI(t, pki.ECDSAP256, 1)
	dead := backend.RefusingAddr(t)
	text := "stream {\nupstream backend { server " + dead + "; }\n" + fmt.Sprintf(guideServer, "") + "}\n"
	tb := startEngine(t, dir, text)
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello"))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		t.Fatalf("read %d, %v; want the connection closed", n, err)
	}
	testutil.WaitFor(t, "the failure in the log", 5*time.Second, func() bool {
		return strings.Contains(tb.logText(), "while connecting to upstream")
	})
}

// TestHandshakeFailureSkipsServer: a server whose certificate does not
// verify counts as a failed attempt and the next one is used.
func TestHandshakeFailureSkipsServer(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	other, err := pki.NewSet(pki.ECDSAP256, 1) // a CA the proxy does not trust
	if err != nil {
		t.Fatal(err)
	}
	good := startUpstreams(t, set, 1, backend.Echo, nil)[0]
	bad := startUpstreams(t, other, 1, backend.Echo, nil)[0]
	text := "worker_processes 1;\nstream {\nupstream backend {\n    server " + bad.Addr() + ";\n    server " + good.Addr() + ";\n}\n" +
		fmt.Sprintf(guideServer, "") + "}\n"
	tb := startEngine(t, dir, text)
	for i := 0; i < 4; i++ {
		if _, err := echoOnce(tb.addr, []byte("x"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if got := good.Stats().Handshakes; got != 4 {
		t.Fatalf("good upstream handshakes = %d, want 4", got)
	}
	if int64(tb.eng.Metrics().Snapshot().FailedAttempts) == 0 {
		t.Fatal("no handshake failure counted")
	}
}

// TestConnectTimeout: a peer that never answers the SYN is given up on
// after proxy_connect_timeout; a peer that never answers the ClientHello
// after a fresh proxy_connect_timeout, logged as a handshake timeout.
func TestHandshakeTimeout(t *testing.T) {
	_, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ln := testutil.Listen(t, "tcp", "127.0.0.1:0")
	testutil.Serve(t, ln, testutil.Discard)
	text := "stream {\nupstream backend { server " + ln.Addr().String() + "; }\n" +
		fmt.Sprintf(guideServer, "proxy_connect_timeout 300ms;") + "}\n"
	tb := startEngine(t, dir, text)
	start := time.Now()
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d, %v; want close", n, err)
	}
	if el := time.Since(start); el < 250*time.Millisecond || el > 5*time.Second {
		t.Fatalf("closed after %v, want about 300ms", el)
	}
	testutil.WaitFor(t, "the timeout in the log", 5*time.Second, func() bool {
		return strings.Contains(tb.logText(), "TLS handshake timed out")
	})
}

// TestIdleTimeout: proxy_timeout closes a session without traffic.
func TestIdleTimeout(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, "proxy_timeout 300ms;"))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// Traffic keeps the session alive past the timeout.
	var start time.Time
	for i := 0; i < 4; i++ {
		if i > 0 {
			time.Sleep(150 * time.Millisecond)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
		start = time.Now()
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d, %v; want close", n, err)
	}
	if el := time.Since(start); el < 200*time.Millisecond || el > 3*time.Second {
		t.Fatalf("idle close after %v, want about 300ms", el)
	}
	if int64(tb.eng.Metrics().Snapshot().IdleTimeouts) != 1 {
		t.Fatal("idle timeout not counted")
	}
}

// TestClientSendsAndCloses: everything a client sends before closing
// reaches the upstream, even if it closes before the handshake is done.
func TestClientSendsAndCloses(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Sink, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	const size = 3<<20 + 7
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", tb.addr)
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, size)
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	testutil.WaitFor(t, "all bytes at the upstream", 20*time.Second, func() bool {
		return ups[0].Stats().BytesIn == 3*size
	})
}

// TestUpstreamSendsAndCloses: everything an upstream sends before its
// close_notify reaches the client, then the client is closed.
func TestUpstreamSendsAndCloses(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	const size = 5<<20 + 3
	srv, err := backend.Start(backend.Config{TLS: set.ServerConfig(), Mode: backend.Source, SourceBytes: size})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tb := startEngine(t, dir, guideConf([]*backend.Server{srv}, ""))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != size {
		t.Fatalf("got %d bytes, want %d", len(got), size)
	}
	for i, b := range got {
		if b != backend.Pattern(int64(i)) {
			t.Fatalf("byte %d differs", i)
		}
	}
}

// TestBackpressureUpload: a client uploading faster than the upstream
// reads does not make the proxy buffer the difference.
func TestBackpressure(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 2×32 MiB at a limited rate")
	}
	// The slow end is far slower than the fast one even on a loaded
	// machine, and the payload is well above the bound (kernel socket
	// buffers absorb a few MiB without the proxy's heap).
	const size = 32 << 20
	const rate = 6 << 20 // bytes per second at the slow end
	const bound = 12 << 20
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)

	t.Run("upload", func(t *testing.T) {
		srv, err := backend.Start(backend.Config{TLS: set.ServerConfig(), Mode: backend.Sink, ReadRate: rate})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		tb := startEngine(t, dir, guideConf([]*backend.Server{srv}, ""))
		peak := heapWatch(t)
		c, err := net.Dial("tcp", tb.addr)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
		testutil.WaitFor(t, "the upload at the upstream", 60*time.Second, func() bool { return srv.Stats().BytesIn == size })
		if grow := peak(); grow > bound {
			t.Fatalf("heap grew by %d MiB while relaying %d MiB", grow>>20, size>>20)
		}
		if int64(tb.eng.Metrics().Snapshot().Stalls) == 0 {
			t.Fatal("backpressure never engaged")
		}
	})
	t.Run("download", func(t *testing.T) {
		srv, err := backend.Start(backend.Config{TLS: set.ServerConfig(), Mode: backend.Source, SourceBytes: size})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		tb := startEngine(t, dir, guideConf([]*backend.Server{srv}, ""))
		peak := heapWatch(t)
		c, err := net.Dial("tcp", tb.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(64 << 10)
		r := &slowReader{r: c, rate: rate, start: time.Now()}
		n, err := io.Copy(io.Discard, r)
		if err != nil || n != size {
			t.Fatalf("read %d, %v; want %d", n, err, size)
		}
		if grow := peak(); grow > bound {
			t.Fatalf("heap grew by %d MiB while relaying %d MiB", grow>>20, size>>20)
		}
		if int64(tb.eng.Metrics().Snapshot().Stalls) == 0 {
			t.Fatal("backpressure never engaged")
		}
	})
}

// heapWatch samples the live heap (after a collection, so garbage does
// not count) until the returned function is called, which returns the
// peak growth in bytes.
func heapWatch(t *testing.T) func() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	stop := make(chan struct{})
	peakc := make(chan uint64, 1)
	go func() {
		var peak uint64
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > peak {
				peak = ms.HeapAlloc - base
			}
			select {
			case <-stop:
				peakc <- peak
				return
			case <-tk.C:
			}
		}
	}()
	return func() uint64 {
		close(stop)
		return <-peakc
	}
}

type slowReader struct {
	r     io.Reader
	rate  int64
	start time.Time
	n     int64
}

func (s *slowReader) Read(p []byte) (int, error) {
	if int64(len(p)) > s.rate/20 {
		p = p[:s.rate/20]
	}
	due := s.start.Add(time.Duration(float64(s.n) / float64(s.rate) * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		time.Sleep(d)
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	return n, err
}

// TestNoLeaks: 10,000 sessions leave no goroutines or descriptors behind.
func TestNoLeaks(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 3, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	run := func(n int) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for i := 0; i < n; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if _, err := echoOnce(tb.addr, []byte("leak?"), 30*time.Second); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	run(200) // warm up pools and workers
	testutil.WaitFor(t, "sessions to end", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 0 })
	g0, f0 := runtime.NumGoroutine(), countFDs(t)
	n := 10000
	if testing.Short() {
		n = 2000
	}
	run(n)
	testutil.WaitFor(t, "sessions to end", 10*time.Second, func() bool { return tb.eng.Metrics().Active() == 0 })
	var g1, f1 int
	testutil.WaitFor(t, "goroutines and descriptors to settle", 10*time.Second, func() bool {
		g1, f1 = runtime.NumGoroutine(), countFDs(t)
		return g1 <= g0+5 && f1 <= f0+5
	})
	st := tb.eng.Metrics().Snapshot()
	if st.Full+st.Resumed != uint64(n+200) {
		t.Fatalf("handshakes %d+%d, want %d", st.Full, st.Resumed, n+200)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// TestGracefulQuit: Quit stops accepting, lets open sessions finish, then
// Serve returns.
func TestGracefulQuit(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	close(tb.quit)
	testutil.WaitFor(t, "quitting", 5*time.Second, func() bool { return tb.eng.quitting.Load() })
	// The open session still works.
	if _, err := c.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-tb.done:
		t.Fatalf("Serve returned with a session open: %v", err)
	default:
	}
	c.Close()
	select {
	case <-tb.done:
		tb.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the last session ended")
	}
}

// TestRefusedResumptionRetriesFull: a TLS 1.2 upstream that aborts every
// resumed handshake (as servers with broken resumption do: "digest check
// failed") still serves every client: the proxy drops the ticket and
// retries once with a full handshake, without counting the peer as failed.
// (In TLS 1.3 a server's objection comes after the client's Finished, as a
// read error; servers refuse a PSK by ignoring it, see the next test.)
func TestRefusedResumptionRetriesFull(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	for _, proto := range []string{"TLSv1.2"} {
		t.Run(proto, func(t *testing.T) {
			ups := startUpstreams(t, set, 1, backend.Echo, func(_ int, c *tls.Config) {
				c.VerifyConnection = func(cs tls.ConnectionState) error {
					if cs.DidResume {
						return errors.New("resumption refused")
					}
					return nil
				}
			})
			text := strings.Replace(guideConf(ups, ""), "proxy_ssl_protocols           TLSv1.2 TLSv1.3;",
				"proxy_ssl_protocols "+proto+";", 1)
			tb := startEngine(t, dir, text)
			for i := 0; i < 5; i++ {
				if _, err := echoOnce(tb.addr, []byte("x"), 10*time.Second); err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
			}
			st := ups[0].Stats()
			if st.HandshakeErrors == 0 {
				t.Fatal("the proxy never offered a ticket")
			}
			if got := ups[0].Stats().Resumed; got != 0 {
				t.Fatalf("%d resumed handshakes completed", got)
			}
			if int64(tb.eng.Metrics().Snapshot().Full) != 5 {
				t.Fatalf("full handshakes %d, want 5", int64(tb.eng.Metrics().Snapshot().Full))
			}
		})
	}
}

// TestRefusedTicketFallsBackToFull: an upstream that cannot decrypt the
// tickets it is offered (its keys rotate) answers with full handshakes;
// every client is served, for TLS 1.2 and 1.3.
func TestRefusedTicketFallsBackToFull(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	for _, proto := range []string{"TLSv1.2", "TLSv1.3"} {
		t.Run(proto, func(t *testing.T) {
			ups := startUpstreams(t, set, 1, backend.Echo, func(_ int, c *tls.Config) {
				base := c.Clone()
				c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
					cc := base.Clone()
					var k [32]byte
					rand.Read(k[:])
					cc.SetSessionTicketKeys([][32]byte{k})
					return cc, nil
				}
			})
			text := strings.Replace(guideConf(ups, ""), "proxy_ssl_protocols           TLSv1.2 TLSv1.3;",
				"proxy_ssl_protocols "+proto+";", 1)
			tb := startEngine(t, dir, text)
			for i := 0; i < 5; i++ {
				if _, err := echoOnce(tb.addr, []byte("x"), 10*time.Second); err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
			}
			if st := ups[0].Stats(); st.Handshakes != 5 || st.Resumed != 0 || st.HandshakeErrors != 0 {
				t.Fatalf("upstream %+v, want 5 full handshakes", st)
			}
			if got := int64(tb.eng.Metrics().Snapshot().Full); got != 5 {
				t.Fatalf("proxy counted %d full handshakes, want 5", got)
			}
		})
	}
}

// TestClientCertRefusedTLS13: a TLS 1.3 upstream that does not accept the
// proxy's client certificate rejects it after the handshake; the first
// read fails and the log says why.
func TestClientCertRefusedTLS13(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	other, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	ups := startUpstreams(t, set, 1, backend.Echo, func(_ int, c *tls.Config) {
		c.ClientCAs = pki.Pool(other.Root) // not the proxy's CA
	})
	tb := startEngine(t, dir, guideConf(ups, ""))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("x"))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d, %v; want the session closed", n, err)
	}
	testutil.WaitFor(t, "the refusal in the log", 5*time.Second, func() bool {
		return strings.Contains(tb.logText(), "reading from upstream failed (client_cert_refused)")
	})
}

// TestFailureReasonsLogged: each kind of upstream failure has its own text
// in the error log, naming the upstream, and counts as a failed attempt.
func TestFailureReasonsLogged(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 2) // two intermediates
	other, err := pki.NewSet(pki.ECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		mod   func(c *tls.Config)
		extra string
		want  string
	}{
		{"depth", nil, "proxy_ssl_verify_depth 1;",
			"upstream certificate chain has 2 intermediate certificates, proxy_ssl_verify_depth is 1"},
		{"name", nil, "proxy_ssl_name other.example;", `upstream certificate does not match "other.example"`},
		{"unknown CA", func(c *tls.Config) { c.Certificates = []tls.Certificate{other.Server.TLSCertificate()} }, "",
			"unable to get local issuer certificate"},
		{"protocol", func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }, "proxy_ssl_protocols TLSv1.3;", "protocol"},
		{"client certificate refused", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.ClientCAs = pki.Pool(other.Root)
		}, "proxy_ssl_protocols TLSv1.2;", "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ups := startUpstreams(t, set, 1, backend.Echo, func(_ int, c *tls.Config) {
				if tc.mod != nil {
					tc.mod(c)
				}
			})
			text := guideConf(ups, tc.extra)
			if strings.Contains(tc.extra, "proxy_ssl_verify_depth") {
				text = strings.Replace(text, "proxy_ssl_verify_depth  2;", "", 1)
			}
			if strings.Contains(tc.extra, "proxy_ssl_protocols") {
				text = strings.Replace(text, "proxy_ssl_protocols           TLSv1.2 TLSv1.3;", "", 1)
			}
			tb := startEngine(t, dir, text)
			c, err := net.Dial("tcp", tb.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Fatalf("read %d, %v; want the session closed", n, err)
			}
			testutil.WaitFor(t, "the failure in the log", 5*time.Second, func() bool {
				log := tb.logText()
				return strings.Contains(log, tc.want) && strings.Contains(log, `upstream: "`+ups[0].Addr()+`"`)
			})
			if int64(tb.eng.Metrics().Snapshot().FailedAttempts) != 1 {
				t.Fatalf("%d failed attempts counted, want 1", int64(tb.eng.Metrics().Snapshot().FailedAttempts))
			}
		})
	}
}

// TestConnectTimeout: an upstream that never answers the SYN (its accept
// queue is full) is given up on after proxy_connect_timeout, and the next
// server is tried.
func TestConnectTimeout(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	good := startUpstreams(t, set, 1, backend.Echo, nil)[0]
	// A listening socket with a backlog of 0 that never accepts: once its
	// queue holds a connection, further SYNs are dropped.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	full := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	var fillers []net.Conn
	defer func() {
		for _, c := range fillers {
			c.Close()
		}
	}()
	for i := 0; i < 4; i++ {
		c, err := net.DialTimeout("tcp", full, 200*time.Millisecond)
		if err != nil {
			break // the queue is full: SYNs go unanswered now
		}
		fillers = append(fillers, c)
	}
	text := "worker_processes 1;\nstream {\nupstream backend {\n    server " + full + ";\n    server " + good.Addr() + ";\n}\n" +
		fmt.Sprintf(guideServer, "proxy_connect_timeout 300ms;") + "}\n"
	tb := startEngine(t, dir, text)
	start := time.Now()
	if _, err := echoOnce(tb.addr, []byte("hi"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("served after %v: the unanswering server was not tried first", el)
	}
	testutil.WaitFor(t, "the timeout in the log", 5*time.Second, func() bool {
		return strings.Contains(tb.logText(), "upstream timed out (110: Connection timed out) while connecting to upstream")
	})
}
