package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
	"github.com/tlsrelay/tlsrelay/pool"
)

// TestProbeRetriesFullHandshake: a probe whose session ticket the upstream
// refuses retries with a full handshake, as a session's attempt does, and
// leaves the peer's connect and handshake counters alone.
func TestProbeRetriesFullHandshake(t *testing.T) {
	set, err := pki.NewSet(pki.ECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	scfg := &tls.Config{Certificates: []tls.Certificate{set.Server.TLSCertificate()}, MaxVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.DidResume {
				refused.Add(1)
				return errors.New("resumption refused")
			}
			return nil
		}}
	up, err := backend.Start(backend.Config{TLS: scfg, Mode: backend.Echo})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	p := testGroup(t, up.Addr()).Peers()[0]
	cache := tls.NewLRUClientSessionCache(4)
	var retries atomic.Int64
	j := &Job{
		TLS: func(*pool.Peer, net.Addr) (*tls.Config, error) {
			return &tls.Config{ServerName: "localhost", RootCAs: pki.Pool(set.Root), ClientSessionCache: cache}, nil
		},
		FullTLS: func(*pool.Peer, net.Addr) (*tls.Config, error) {
			return &tls.Config{ServerName: "localhost", RootCAs: pki.Pool(set.Root)}, nil
		},
		// A refused ticket is the only failure here: ask for the retry.
		Observe: func(_ *pool.Peer, _ net.Addr, _ tls.ConnectionState, err error) bool {
			if err != nil {
				retries.Add(1)
				return true
			}
			return false
		},
		ConnectTimeout: 5 * time.Second,
	}
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, a := Probe(ctx, j, p, 0)
		cancel()
		if a.Err != nil {
			t.Fatalf("probe %d: %v", i, a.Err)
		}
		if res.State.DidResume {
			t.Fatalf("probe %d resumed", i)
		}
		res.TLS.Close()
	}
	if refused.Load() == 0 || retries.Load() != refused.Load() {
		t.Fatalf("%d tickets refused, %d retries; want a retry for each refusal", refused.Load(), retries.Load())
	}
	if full, resumed, failed := p.Handshakes(); full+resumed+failed != 0 || p.ConnectTime().Count != 0 {
		t.Fatalf("probes counted on the peer: full %d resumed %d failed %d, %d connects", full, resumed, failed, p.ConnectTime().Count)
	}
}

// TestProbeDeadline: the context's deadline (health_check_timeout) ends a
// hung handshake as a timeout long before ConnectTimeout; cancelling the
// context ends it as cancelled.
func TestProbeDeadline(t *testing.T) {
	silent := testutil.SilentUpstream(t)
	p := testGroup(t, silent.Addr()).Peers()[0]
	j := &Job{TLS: insecureTLS, ConnectTimeout: time.Minute}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, a := Probe(ctx, j, p, 0)
	cancel()
	// The message gives the time the handshake had: the deadline's rest,
	// not ConnectTimeout.
	if !errors.Is(a.Err, ErrHandshakeTimeout) || !a.Handshaking || strings.Contains(a.Err.Error(), "1m0s") {
		t.Fatalf("probe past its deadline: %+v", a)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("the probe took %v", el)
	}
	if _, _, failed := p.Handshakes(); failed != 0 {
		t.Fatalf("a probe's failure counted on the peer (%d)", failed)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Attempt, 1)
	go func() {
		_, a := Probe(ctx, j, p, 0)
		done <- a
	}()
	testutil.WaitFor(t, "the probe's connection at the peer", 10*time.Second, func() bool { return silent.Open() == 1 })
	cancel()
	select {
	case a := <-done:
		if !errors.Is(a.Err, context.Canceled) {
			t.Fatalf("cancelled probe: %+v", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled probe was not done after 10s")
	}
}

// TestProbePort: a probe with a port connects to that port of the peer's
// address (health_check port=), with the job's socket options.
func TestProbePort(t *testing.T) {
	live := listenTCP(t).Addr().(*net.TCPAddr)
	p := testGroup(t, backend.RefusingAddr(t)).Peers()[0]
	j := &Job{ConnectTimeout: 5 * time.Second, Socket: SocketOptions{Bind: netip.MustParseAddr("127.0.0.2")}}
	res, a := Probe(context.Background(), j, p, live.Port)
	if a.Err != nil {
		t.Fatalf("probe of port %d: %v", live.Port, a.Err)
	}
	defer res.Raw.Close()
	if got := res.Raw.RemoteAddr().(*net.TCPAddr).Port; got != live.Port {
		t.Fatalf("probe connected to port %d, want %d", got, live.Port)
	}
	if got := res.Raw.LocalAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Fatalf("probe's source %s, want 127.0.0.2 (Bind)", got)
	}
	if _, a := Probe(context.Background(), j, p, 0); a.Err == nil || !strings.Contains(a.Err.Error(), "connect() failed") {
		t.Fatalf("probe of the peer's own (refusing) port: %+v", a)
	}
}

// TestBindAddressNoPort: proxy_bind binds the address only, leaving the
// port to connect (IP_BIND_ADDRESS_NO_PORT, as NGINX and HAProxy set it):
// a port held by an upstream connection, or by its TIME_WAIT, is then not
// refused to other sockets of the host that connect elsewhere.
func TestBindAddressNoPort(t *testing.T) {
	live := listenTCP(t).Addr().String()
	p := testGroup(t, live).Peers()[0]
	for _, bind := range []string{"", "127.0.0.2"} {
		j := &Job{ConnectTimeout: 5 * time.Second}
		if bind != "" {
			j.Socket.Bind = netip.MustParseAddr(bind)
		}
		res, a := Probe(context.Background(), j, p, 0)
		if a.Err != nil {
			t.Fatalf("bind %q: %v", bind, a.Err)
		}
		rc, err := res.Raw.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var serr error
		rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT) })
		res.Raw.Close()
		if serr != nil {
			t.Fatalf("getsockopt: %v", serr)
		}
		if want := map[string]int{"": 0, "127.0.0.2": 1}[bind]; v != want {
			t.Errorf("bind %q: IP_BIND_ADDRESS_NO_PORT = %d, want %d", bind, v, want)
		}
	}
}
