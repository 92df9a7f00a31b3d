package engine

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// halfUpstream is a loopback upstream (TLS when cfg is set, else plain TCP)
// whose handler runs once per connection; handler errors go to errs.
type halfUpstream struct {
	ln   net.Listener
	errs chan error
}

// echoThen is an upstream handler that echoes until the client's end,
// then writes after and ends its own side.
func echoThen(after []byte) func(net.Conn) error {
	return func(c net.Conn) error {
		if _, err := io.Copy(c, c); err != nil {
			return fmt.Errorf("echo: %w", err)
		}
		if _, err := c.Write(after); err != nil {
			return fmt.Errorf("writing after EOF: %w", err)
		}
		return closeWrite(c)
	}
}

func startHalfUpstream(t *testing.T, cfg *tls.Config, handle func(c net.Conn) error) *halfUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &halfUpstream{ln: ln, errs: make(chan error, 64)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer raw.Close()
				var c net.Conn = raw
				if cfg != nil {
					tc := tls.Server(raw, cfg)
					if err := tc.Handshake(); err != nil {
						u.errs <- fmt.Errorf("handshake: %w", err)
						return
					}
					c = tc
				}
				u.errs <- handle(c)
			}()
		}
	}()
	return u
}

// closeWrite ends c's write side: close_notify and a FIN for TLS, a FIN
// for TCP or a unix stream socket.
func closeWrite(c net.Conn) error {
	if tc, ok := c.(*tls.Conn); ok {
		if err := tc.CloseWrite(); err != nil {
			return err
		}
		c = tc.NetConn()
	}
	return c.(interface{ CloseWrite() error }).CloseWrite() // TCP or unix
}

// trailer is what the upstream writes after it saw the client's end.
func trailer(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// halfCloseConf is the configuration of the half-close tests: the guide's
// TLS server block, or a plain one, over one upstream at addr.
func halfCloseConf(addr string, tlsOn bool, extra string) string {
	up := fmt.Sprintf("upstream backend {\n    server %s;\n}\n", addr)
	if tlsOn {
		return "worker_processes 2;\nstream {\n" + up + fmt.Sprintf(guideServer, extra) + "}\n"
	}
	return "worker_processes 2;\nstream {\n" + up + "server {\n listen 127.0.0.1:0;\n proxy_pass backend;\n " + extra + "\n}\n}\n"
}

// TestHalfCloseClientEnds: with proxy_half_close on, a client that writes
// 1 MiB and shuts its write side reads back the whole echo and what the
// upstream writes after it saw the client's end, over TLS 1.3 (its ticket
// may still be in flight when the client ends), TLS 1.2 and plain TCP.
func TestHalfCloseClientEnds(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	after := trailer(300 << 10)
	for _, tc := range []struct {
		name  string
		tls   bool
		max   uint16
		conns int
		size  int
	}{
		{"TLS1.3", true, tls.VersionTLS13, 12, 1 << 20},
		{"TLS1.3 small", true, tls.VersionTLS13, 40, 100},
		{"TLS1.2", true, tls.VersionTLS12, 6, 1 << 20},
		{"plain", false, 0, 6, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg *tls.Config
			if tc.tls {
				cfg = set.ServerConfig()
				cfg.MaxVersion = tc.max
			}
			up := startHalfUpstream(t, cfg, echoThen(after))
			tb := startEngine(t, dir, halfCloseConf(up.ln.Addr().String(), tc.tls, "proxy_half_close on;"))
			for i := 0; i < tc.conns; i++ {
				payload := make([]byte, tc.size)
				for j := range payload {
					payload[j] = byte(i + j*7)
				}
				c, err := net.Dial("tcp", tb.addr)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(30 * time.Second))
				werr := make(chan error, 1)
				go func() {
					if _, err := c.Write(payload); err != nil {
						werr <- err
						return
					}
					werr <- c.(*net.TCPConn).CloseWrite()
				}()
				got, err := io.ReadAll(c)
				c.Close()
				if err != nil {
					t.Fatalf("conn %d: reading: %v (read %d bytes)", i, err, len(got))
				}
				if err := <-werr; err != nil {
					t.Fatalf("conn %d: writing: %v", i, err)
				}
				want := append(append([]byte(nil), payload...), after...)
				if !bytes.Equal(got, want) {
					t.Fatalf("conn %d: got %d bytes, want %d (echo then %d after EOF)", i, len(got), len(want), len(after))
				}
				if err := <-up.errs; err != nil {
					t.Fatalf("conn %d: upstream: %v", i, err)
				}
			}
			testutil.WaitFor(t, "sessions to end", 10*time.Second, func() bool { return tb.eng.Metrics().Snapshot().Active == 0 })
		})
	}
}

// TestHalfCloseUpstreamEnds: the other way round, the upstream writes a
// banner and ends its write side; the client reads the banner and EOF,
// then still sends 1 MiB, all of which reaches the upstream.
func TestHalfCloseUpstreamEnds(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	banner := trailer(200 << 10)
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"TLS1.3", true}, {"plain", false}} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg *tls.Config
			if tc.tls {
				cfg = set.ServerConfig()
			}
			got := make(chan [32]byte, 1)
			up := startHalfUpstream(t, cfg, func(c net.Conn) error {
				if _, err := c.Write(banner); err != nil {
					return err
				}
				if err := closeWrite(c); err != nil {
					return err
				}
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					return fmt.Errorf("reading after our end: %w", err)
				}
				got <- [32]byte(h.Sum(nil))
				return nil
			})
			tb := startEngine(t, dir, halfCloseConf(up.ln.Addr().String(), tc.tls, "proxy_half_close on;"))
			c, err := net.Dial("tcp", tb.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(b, banner) {
				t.Fatalf("banner: %d bytes, %v; want %d bytes then EOF", len(b), err, len(banner))
			}
			payload := trailer(1<<20 + 13)
			if _, err := c.Write(payload); err != nil {
				t.Fatalf("writing after the upstream ended: %v", err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-up.errs:
				if err != nil {
					t.Fatalf("upstream: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("upstream did not receive the client's end within 20s")
			}
			if h := <-got; h != sha256.Sum256(payload) {
				t.Fatal("the upstream received something else than the client sent after the upstream's end")
			}
			testutil.WaitFor(t, "the session to end", 10*time.Second, func() bool { return tb.eng.Metrics().Snapshot().Active == 0 })
		})
	}
}

// TestHalfCloseThenReset: a client that half-closes and then resets ends
// its session (the upstream streaming to it is closed), and nothing is
// left behind.
func TestHalfCloseThenReset(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	up := startHalfUpstream(t, set.ServerConfig(), func(c net.Conn) error {
		if _, err := io.Copy(io.Discard, c); err != nil {
			return err
		}
		// Stream to the client until the proxy gives up on it; bounded,
		// so that a proxy that never notices fails the test.
		chunk := trailer(64 << 10)
		for i := 0; i < 256; i++ {
			if _, err := c.Write(chunk); err != nil {
				return nil
			}
		}
		return errors.New("wrote 16 MiB to a client that had reset")
	})
	tb := startEngine(t, dir, halfCloseConf(up.ln.Addr().String(), true, "proxy_half_close on;"))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	// Wait for the first bytes of the stream, then reset.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1024)); err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
	select {
	case err := <-up.errs:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream's stream was not ended within 20s")
	}
	testutil.WaitFor(t, "the session to end", 10*time.Second, func() bool { return tb.eng.Metrics().Snapshot().Active == 0 })
}

// TestHalfCloseOff: without proxy_half_close (NGINX's default) a client's
// end ends the session once the upstream has what it sent: what the
// upstream writes after it saw the end does not reach the client.
func TestHalfCloseOff(t *testing.T) {
	set, _, dir := newPKI(t, pki.ECDSAP256, 1)
	after := trailer(64 << 10)
	sawEOF := make(chan struct{}, 1)
	up := startHalfUpstream(t, set.ServerConfig(), func(c net.Conn) error {
		if _, err := io.Copy(c, c); err != nil {
			return err
		}
		sawEOF <- struct{}{}
		c.Write(after) // may fail: the proxy closes
		return nil
	})
	tb := startEngine(t, dir, halfCloseConf(up.ln.Addr().String(), true, ""))
	c, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	payload := []byte("ping")
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, len(payload))
	if _, err := io.ReadFull(c, echo); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	rest, _ := io.ReadAll(c) // EOF or a reset, as NGINX
	if len(rest) != 0 {
		t.Fatalf("with proxy_half_close off the client got %d bytes after its end", len(rest))
	}
	select {
	case <-sawEOF:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream did not see the client's end")
	}
}
