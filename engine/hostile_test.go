package engine

// Hostile peers (issue 18): a client that writes and never reads, an
// upstream that is killed or resets mid-stream, a client that resets. Each
// must cost only its own session, with bounded memory, and the end of a
// stream must say how it ended.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/metrics"
	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// writeUntilBlocked writes chunks to c until one write does not complete
// within stuck (the kernel's buffers, and so the proxy, push back) or limit
// bytes went. It returns how much went and whether it was pushed back.
func writeUntilBlocked(c net.Conn, limit int64, stuck time.Duration) (int64, bool) {
	chunk := make([]byte, 64<<10)
	var n int64
	for n < limit {
		c.SetWriteDeadline(time.Now().Add(stuck))
		m, err := c.Write(chunk)
		n += int64(m)
		if err != nil {
			var ne net.Error
			return n, errors.As(err, &ne) && ne.Timeout()
		}
	}
	return n, false
}

// heapInUse is the heap in use after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// TestNeverReadingClient: a client that writes to an echo upstream and never
// reads. Once the echo fills the client's socket, the proxy must stop reading
// the upstream, the echo must stop reading its socket, and the proxy must stop
// reading the client: what the client can write before its writes block is
// what the kernel buffers on the way hold, not what memory holds. The
// session, stuck, ends after proxy_timeout, and the other sessions are served
// meanwhile.
func TestNeverReadingClient(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, "proxy_timeout 2s;"))

	heap0 := heapInUse()
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Small buffers on the client's own socket, so that what is buffered
	// is the proxy's and the upstream's.
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	c.(*net.TCPConn).SetWriteBuffer(64 << 10)

	const limit = 256 << 20
	n, blocked := writeUntilBlocked(c, limit, time.Second)
	t.Logf("client wrote %.1f MiB before it was pushed back", mib(n))
	if !blocked {
		t.Fatalf("the client wrote %.0f MiB and was never pushed back: the proxy buffers whatever it sends", mib(n))
	}
	// The kernel buffers on loopback (four sockets' send and receive
	// queues, autotuned to a few MiB each) and the session's own
	// watermarks hold all of it.
	if n > 96<<20 {
		t.Errorf("the client wrote %.0f MiB before it was pushed back; want what the kernel buffers hold (< 96 MiB)", mib(n))
	}
	if grew := heapInUse() - heap0; grew > 32<<20 {
		t.Errorf("heap grew by %.0f MiB with one stuck session; want it bounded by the session's watermarks", mib(grew))
	}

	// Meanwhile another session is served.
	if got, err := echoOnce(tb.addr, []byte("other tenant"), 10*time.Second); err != nil || string(got) != "other tenant" {
		t.Fatalf("a second session beside the stuck one: %q, %v", got, err)
	}

	// Stuck past proxy_timeout: the session ends.
	testutil.WaitFor(t, "the stuck session to end after proxy_timeout", 30*time.Second, func() bool {
		return tb.eng.Metrics().Snapshot().Ended[metrics.ReasonIdleTimeout] >= 1
	})
}

// TestMain lets the test binary serve as a real upstream process, one a
// test can SIGKILL (streamingUpstream).
func TestMain(m *testing.M) {
	if os.Getenv(upstreamProcessEnv) != "" {
		if err := serveStreamingUpstream(); err != nil {
			fmt.Fprintln(os.Stderr, "streaming upstream:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// upstreamProcessEnv names the PKI directory of a streaming upstream
// process (set: the test binary is that process).
const upstreamProcessEnv = "TLSRELAY_TEST_STREAMING_UPSTREAM"

// serveStreamingUpstream is the streaming upstream process: a backend that
// streams to each client until it is killed, on 127.0.0.1:0, with the PKI
// written in the directory upstreamProcessEnv names. It prints its address.
func serveStreamingUpstream() error {
	cfg, err := pki.FilesIn(os.Getenv(upstreamProcessEnv)).ServerConfig()
	if err != nil {
		return err
	}
	srv, err := backend.Start(backend.Config{TLS: cfg, Mode: backend.Source, SourceBytes: math.MaxInt64})
	if err != nil {
		return err
	}
	fmt.Println(srv.Addr())
	select {} // until killed
}

// streamingUpstream starts the streaming upstream process over the PKI in
// dir and returns its address and process.
func streamingUpstream(t *testing.T, dir string) (string, *os.Process) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), upstreamProcessEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the upstream process's address: %v", err)
	}
	return strings.TrimSpace(addr), cmd.Process
}

// TestKilledUpstreamIsAnAbort: an upstream process SIGKILLed in the middle
// of a stream ends its connection without close_notify. The client must not
// see a clean end: its connection is reset, the session ends as "upstream
// aborted" (the access log's $close_reason and the metric), with an error
// logged that says so; the status stays NGINX's 200. The process serves on.
func TestKilledUpstreamIsAnAbort(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	addr, proc := streamingUpstream(t, dir)
	good := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, faultConf([]string{addr}, good, ""))

	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 4<<20)); err != nil {
		t.Fatalf("reading the stream's first 4 MiB: %v", err)
	}
	if err := proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, c)
	t.Logf("after the kill the client read %.1f MiB more, then: %v", mib(n), err)
	if err == nil {
		t.Fatal("the client saw a clean end of a stream whose upstream was killed")
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the client's read ended with %v, want a connection reset", err)
	}
	lines := tb.waitAccess(t, 1)
	if !strings.HasPrefix(lines[0], `200 "upstream aborted"`) {
		t.Errorf("access log %q, want status 200 and close reason \"upstream aborted\"", lines[0])
	}
	if got := tb.eng.Metrics().Snapshot().Ended[metrics.ReasonUpstreamAborted]; got != 1 {
		t.Errorf("sessions ended upstream_aborted = %d, want 1", got)
	}
	if log := tb.logText(); !strings.Contains(log, "[error]") || !strings.Contains(log, "upstream aborted the stream") {
		t.Errorf("no [error] saying the upstream aborted:\n%s", log)
	}
	if got, err := echoOnce(tb.eng.Addrs()[1].String(), []byte("still serving"), 10*time.Second); err != nil || string(got) != "still serving" {
		t.Errorf("the good server block after the abort: %q, %v", got, err)
	}
}

// TestClientResetIsAnAbort: a client that resets its connection in the middle
// of a stream: the upstream must not see a clean end (close_notify): its
// connection is reset too, and the session ends as "client aborted".
func TestClientResetIsAnAbort(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", set.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	ended := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ended <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			ended <- err
			return
		}
		got <- buf
		_, err = c.Read(make([]byte, 1))
		ended <- err
	}()
	good := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, faultConf([]string{ln.Addr().String()}, good, ""))

	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != "hello" {
			t.Fatalf("upstream got %q", b)
		}
	case err := <-ended:
		t.Fatalf("upstream: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream got nothing in 10s")
	}
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // a reset
	select {
	case err := <-ended:
		t.Logf("the upstream's read ended with %v", err)
		if err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("the upstream saw a clean end (%v) of a stream whose client reset it", err)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the upstream's read ended with %v, want a connection reset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream's connection did not end within 10s of the client's reset")
	}
	lines := tb.waitAccess(t, 1)
	if !strings.HasPrefix(lines[0], `200 "client aborted"`) {
		t.Errorf("access log %q, want status 200 and close reason \"client aborted\"", lines[0])
	}
	if got := tb.eng.Metrics().Snapshot().Ended[metrics.ReasonClientAborted]; got != 1 {
		t.Errorf("sessions ended client_aborted = %d, want 1", got)
	}
}

// TestBytesCountedAsTheyMove: tlsrelay_bytes_total moves while a session
// transfers, not only when it ends.
func TestBytesCountedAsTheyMove(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, nil)
	tb := startEngine(t, dir, guideConf(ups, ""))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("counted now")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 11)); err != nil {
		t.Fatal(err)
	}
	// A pump adds its bytes when it returns, just after its write has
	// reached the client: the echo can be read a moment before.
	var s metrics.EngineSnapshot
	counted := func() bool {
		s = tb.eng.Metrics().Snapshot()
		return s.BytesFromClient == 11 && s.BytesToUp == 11 && s.BytesFromUp == 11 && s.BytesToClient == 11
	}
	testutil.WaitFor(t, "11 bytes counted in each direction", 10*time.Second, counted)
	if s.Active != 1 {
		t.Errorf("while the session is open: active %d, want 1", s.Active)
	}
}
