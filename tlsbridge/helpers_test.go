package tlsbridge

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// serverConn is what a test server saw of one connection.
type serverConn struct {
	state tls.ConnectionState
	err   error
}

// testServer is a crypto/tls server on 127.0.0.1:0 that handshakes, writes
// one byte and waits for the client to close.
type testServer struct {
	addr  string
	conns chan serverConn
}

func startServer(t *testing.T, cfg *tls.Config) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: ln.Addr().String(), conns: make(chan serverConn, 64)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				err := tc.Handshake()
				s.conns <- serverConn{state: tc.ConnectionState(), err: err}
				if err != nil {
					return
				}
				tc.Write([]byte{'x'})
				io.Copy(io.Discard, tc)
			}()
		}
	}()
	return s
}

// next returns what the server saw of its next connection.
func (s *testServer) next(t *testing.T) serverConn {
	t.Helper()
	select {
	case sc := <-s.conns:
		return sc
	case <-time.After(10 * time.Second):
		t.Fatal("server saw no connection")
		return serverConn{}
	}
}

// dialOnce makes one connection to target with the policy's config, reads
// the server's byte (which also takes in TLS 1.3 tickets), reports to
// Observe and closes. It returns the client's state and error.
func dialOnce(t *testing.T, p *Policy, target Target, v Vars, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	if cfg == nil {
		var err error
		if cfg, err = p.ClientConfig(target, v); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := net.Dial("tcp", target.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := tls.Client(raw, cfg)
	err = c.HandshakeContext(ctx)
	if err == nil {
		var b [1]byte
		_, err = io.ReadFull(c, b[:])
	}
	cs := c.ConnectionState()
	p.Observe(target, v, cs, err)
	return cs, err
}

// pkiFiles writes a set's files into a temp dir.
func pkiFiles(t *testing.T, s *pki.Set) pki.Files {
	t.Helper()
	f, err := s.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustSet(t *testing.T, k pki.KeyType, n int) *pki.Set {
	t.Helper()
	s, err := pki.NewSet(k, n)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustPolicy(t *testing.T, pc PolicyConfig, store *SessionStore) *Policy {
	t.Helper()
	p, err := NewPolicy(pc, store)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
