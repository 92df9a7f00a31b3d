package engine

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// TestHealthProbeRetriesFullHandshake: a TLS 1.2 upstream that aborts
// every resumed handshake (as in TestRefusedResumptionRetriesFull) stays
// healthy under health_check fails=1: a probe whose ticket is refused
// drops it and retries once with a full handshake, as a session's dial
// does. Probes are not counted in the peer's handshake series.
func TestHealthProbeRetriesFullHandshake(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ups := startUpstreams(t, set, 1, backend.Echo, func(_ int, c *tls.Config) {
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if cs.DidResume {
				return errors.New("resumption refused")
			}
			return nil
		}
	})
	text := strings.Replace(healthConf([]string{ups[0].Addr()}, "", "health_check interval=50ms fails=1;"),
		"proxy_ssl_protocols           TLSv1.2 TLSv1.3;", "proxy_ssl_protocols TLSv1.2;", 1)
	tb := startHealthEngine(t, dir, text)
	p := peerOf(t, tb, ups[0].Addr())
	testutil.WaitFor(t, "four probes", 10*time.Second, func() bool { ok, failed := p.HealthChecks(); return ok+failed >= 4 })
	if ok, failed := p.HealthChecks(); failed != 0 || p.Unhealthy() {
		t.Fatalf("probes ok %d failed %d, unhealthy %v; want every probe to pass", ok, failed, p.Unhealthy())
	}
	st := ups[0].Stats()
	if st.HandshakeErrors == 0 {
		t.Fatal("no probe offered a ticket: the refusal was never exercised")
	}
	if st.Resumed != 0 {
		t.Fatalf("%d resumed handshakes completed", st.Resumed)
	}
	if full, resumed, failed := p.Handshakes(); full+resumed+failed != 0 {
		t.Fatalf("probes counted in the peer's handshakes: full %d resumed %d failed %d", full, resumed, failed)
	}
}

// TestHealthProbeSocketOptions: a probe's socket has the server's upstream
// socket options, as a session's: the proxy_bind source address the
// upstream sees, proxy_socket_keepalive with the system's timers, and
// proxy_socket_rcvbuf and sndbuf. The upstream holds the probe's
// connection without answering while the test reads the options of the
// probe's end (a socket of this process).
func TestHealthProbeSocketOptions(t *testing.T) {
	_, _, dir := newPKI(t, pki.ECDSAP256, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan net.Conn, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case conns <- c:
			default:
				c.Close()
			}
		}
	}()
	startHealthEngine(t, dir, healthConf([]string{ln.Addr().String()}, "health_check_timeout 10s;",
		"proxy_bind 127.0.0.2; proxy_socket_keepalive on; proxy_socket_rcvbuf 48k; proxy_socket_sndbuf 24k; health_check interval=1m;"))
	var c net.Conn
	select {
	case c = <-conns:
	case <-time.After(10 * time.Second):
		t.Fatal("no probe connected")
	}
	defer c.Close()
	from := c.RemoteAddr().(*net.TCPAddr)
	if !from.IP.Equal(net.IPv4(127, 0, 0, 2)) {
		t.Fatalf("the upstream saw the probe from %v, want 127.0.0.2 (proxy_bind)", from.IP)
	}
	fd := socketOf(t, from, c.LocalAddr().(*net.TCPAddr))
	opt := func(level, name int) int {
		v, err := unix.GetsockoptInt(fd, level, name)
		if err != nil {
			t.Fatalf("getsockopt(%d, %d): %v", level, name, err)
		}
		return v
	}
	if v := opt(unix.SOL_SOCKET, unix.SO_KEEPALIVE); v != 1 {
		t.Errorf("SO_KEEPALIVE %d, want 1 (proxy_socket_keepalive on)", v)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_keepalive_time"); err == nil {
		want, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if v := opt(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); v != want {
			t.Errorf("TCP_KEEPIDLE %ds, want the system's %ds (NGINX's proxy_socket_keepalive)", v, want)
		}
	}
	// Linux reports twice the size that was set.
	if v := opt(unix.SOL_SOCKET, unix.SO_RCVBUF); v != 2*48<<10 {
		t.Errorf("SO_RCVBUF %d, want %d (proxy_socket_rcvbuf 48k)", v, 2*48<<10)
	}
	if v := opt(unix.SOL_SOCKET, unix.SO_SNDBUF); v != 2*24<<10 {
		t.Errorf("SO_SNDBUF %d, want %d (proxy_socket_sndbuf 24k)", v, 2*24<<10)
	}
}

// socketOf returns the descriptor of this process's TCP socket from local
// to remote. The engine runs in the test's process, so the probe's end of
// a connection the test's upstream accepted is one of its descriptors.
func socketOf(t *testing.T, local, remote *net.TCPAddr) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("listing descriptors: %v", err)
	}
	same := func(sa unix.Sockaddr, a *net.TCPAddr) bool {
		in, ok := sa.(*unix.SockaddrInet4)
		return ok && in.Port == a.Port && net.IP(in.Addr[:]).Equal(a.IP)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		la, err := unix.Getsockname(fd)
		if err != nil || !same(la, local) {
			continue
		}
		if ra, err := unix.Getpeername(fd); err == nil && same(ra, remote) {
			return fd
		}
	}
	t.Fatalf("no socket from %v to %v in this process", local, remote)
	return -1
}
