package tlsbridge

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// waitReadable blocks until raw has bytes (or an EOF) to read, without
// reading them: the test's sync on what the server sent.
func waitReadable(t *testing.T, raw net.Conn) {
	t.Helper()
	rc, err := raw.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer raw.SetReadDeadline(time.Time{})
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
		return err != syscall.EAGAIN
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDriverPoll: Poll on an idle handshaken connection keeps what the
// server sent for the first Reads after Detach, and reports a server that
// closed the connection; it never blocks. TLS 1.2 and 1.3 (whose tickets
// arrive after the handshake and are consumed by Poll).
func TestDriverPoll(t *testing.T) {
	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			scfg := set.ServerConfig()
			scfg.MaxVersion = v
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			closeNow := make(chan struct{})
			served := make(chan error, 2)
			go func() {
				// First connection: a banner, then close on request.
				// Second: close right after the handshake.
				for i := 0; i < 2; i++ {
					c, err := ln.Accept()
					if err != nil {
						served <- err
						return
					}
					tc := tls.Server(c, scfg)
					err = tc.Handshake()
					if err == nil && i == 0 {
						_, err = tc.Write([]byte("banner"))
						<-closeNow
					}
					tc.Close()
					served <- err
				}
			}()
			cfg := &tls.Config{
				RootCAs: pki.Pool(set.Root), ServerName: "localhost",
				Certificates:       []tls.Certificate{set.Client.TLSCertificate()},
				ClientSessionCache: tls.NewLRUClientSessionCache(4),
			}
			dial := func() (*Conn, net.Conn) {
				raw, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { raw.Close() })
				c := NewConn(raw, cfg)
				if err := c.Handshake(time.Now().Add(10 * time.Second)); err != nil {
					t.Fatal(err)
				}
				return c, raw
			}

			c, raw := dial()
			// crypto/tls may have read the banner with the handshake
			// (TLS 1.2): Poll first, wait for the socket then.
			for {
				if err := c.Poll(); err != nil {
					t.Fatalf("Poll with a banner pending: %v", err)
				}
				if len(c.early) >= len("banner") {
					break
				}
				waitReadable(t, raw)
			}
			if err := c.Poll(); err != nil { // nothing pending: returns at once
				t.Fatalf("Poll with nothing pending: %v", err)
			}
			c.Detach(&memSource{}, connSink{raw})
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != "banner" {
				t.Fatalf("first Read after Detach = %q, %v; want the banner Poll kept", buf[:n], err)
			}
			if _, err := c.Read(buf); !errors.Is(err, ErrWouldBlock) {
				t.Fatalf("second Read = %v, want ErrWouldBlock", err)
			}
			if err := c.Poll(); err == nil {
				t.Fatal("Poll on a detached Conn did not fail")
			}
			close(closeNow)
			if err := <-served; err != nil {
				t.Fatal(err)
			}

			c2, raw2 := dial()
			if err := <-served; err != nil {
				t.Fatal(err)
			}
			for {
				err := c2.Poll()
				if err == nil {
					waitReadable(t, raw2) // tickets only, so far
					continue
				}
				if !errors.Is(err, ErrPeerClosed) {
					t.Fatalf("Poll after the server closed = %v, want ErrPeerClosed", err)
				}
				break
			}
		})
	}
}
