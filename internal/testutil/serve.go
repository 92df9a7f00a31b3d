package testutil

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/faultnet"
)

// Listen returns a listener on addr ("127.0.0.1:0" for TCP; a path for
// network "unix") that is closed when the test ends.
func Listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listening on %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Serve accepts connections on ln until it is closed, and hands each to
// handle on a goroutine of its own, closing the connection when handle
// returns. When the test ends it closes ln and every connection still
// open, and waits for the handlers to return, so that none outlives its
// test.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	var (
		mu    sync.Mutex
		open  = map[net.Conn]struct{}{}
		ended bool
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if ended {
				mu.Unlock()
				c.Close()
				return
			}
			open[c] = struct{}{}
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				handle(c)
				c.Close()
				mu.Lock()
				delete(open, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		ended = true
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// Discard is a handler for Serve that reads the connection until it ends
// and drops what it read.
func Discard(c net.Conn) { io.Copy(io.Discard, c) }

// TLSServer serves TLS with cfg on a loopback port: each connection's
// handshake completes (within 10 s) before handle gets it; one whose
// handshake fails is closed. It returns the address. The server stops when
// the test ends (see Serve).
func TLSServer(t testing.TB, cfg *tls.Config, handle func(*tls.Conn)) string {
	t.Helper()
	ln := Listen(t, "tcp", "127.0.0.1:0")
	Serve(t, ln, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if tc.Handshake() != nil {
			return
		}
		c.SetDeadline(time.Time{})
		handle(tc)
	})
	return ln.Addr().String()
}

// SilentUpstream starts an upstream that accepts connections and never
// answers a TLS ClientHello (faultnet.NeverAnswers), until the test ends.
func SilentUpstream(t testing.TB) *faultnet.Upstream {
	t.Helper()
	u, err := faultnet.Start(faultnet.Config{Fault: faultnet.NeverAnswers})
	if err != nil {
		t.Fatalf("starting a silent upstream: %v", err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}
