package tlsbridge

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// memSource is a Source fed by the test, a few bytes at a time, as an
// event loop would feed it from OnTraffic.
type memSource struct{ buf []byte }

func (m *memSource) Read(p []byte) (int, error) {
	n := copy(p, m.buf)
	m.buf = m.buf[n:]
	return n, nil
}

type connSink struct{ c net.Conn }

func (s connSink) Write(p []byte) (int, error) { return s.c.Write(p) }

// TestDriverDetachedEcho handshakes on the socket, then drives the
// connection through a Source fed in small slices, as the event loop does,
// and checks every byte of a large echo, for TLS 1.2 and 1.3.
func TestDriverDetachedEcho(t *testing.T) {
	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			scfg := set.ServerConfig()
			scfg.MaxVersion = v
			srv, err := backend.Start(backend.Config{TLS: scfg})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			cache := tls.NewLRUClientSessionCache(4)
			cfg := &tls.Config{
				RootCAs: pki.Pool(set.Root), ServerName: "localhost",
				Certificates:       []tls.Certificate{set.Client.TLSCertificate()},
				ClientSessionCache: cache,
			}
			for round := 0; round < 2; round++ {
				raw, err := net.Dial("tcp", srv.Addr())
				if err != nil {
					t.Fatal(err)
				}
				c := NewConn(raw, cfg)
				if err := c.Handshake(time.Now().Add(10 * time.Second)); err != nil {
					t.Fatal(err)
				}
				if got := c.ConnectionState().DidResume; got != (round == 1) {
					t.Fatalf("round %d: DidResume = %v", round, got)
				}
				src := &memSource{}
				c.Detach(src, connSink{raw})

				payload := make([]byte, 200<<10)
				rand.Read(payload)
				if _, err := c.Write(payload); err != nil {
					t.Fatal(err)
				}
				var got []byte
				chunk := make([]byte, 7) // odd-sized reads from the socket
				plain := make([]byte, 16<<10)
				raw.SetReadDeadline(time.Now().Add(10 * time.Second))
				for len(got) < len(payload) {
					n, err := raw.Read(chunk)
					if err != nil {
						t.Fatalf("reading socket after %d bytes: %v", len(got), err)
					}
					src.buf = append(src.buf, chunk[:n]...)
					for {
						m, err := c.Read(plain)
						got = append(got, plain[:m]...)
						if errors.Is(err, ErrWouldBlock) {
							break
						}
						if err != nil {
							t.Fatalf("Read: %v", err)
						}
					}
				}
				if !bytes.Equal(got, payload) {
					t.Fatal("echo differs")
				}
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				// The server answers close_notify with its own, then EOF.
				rest, _ := io.ReadAll(raw)
				src.buf = append(src.buf, rest...)
				if _, err := c.Read(plain); err != io.EOF {
					t.Fatalf("after close_notify: %v, want io.EOF", err)
				}
				raw.Close()
			}
			if st := srv.Stats(); st.Resumed != 1 {
				t.Fatalf("server stats %+v, want 1 resumed", st)
			}
		})
	}
}

func TestDriverHandshakeDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c) // never answers the ClientHello
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(raw, &tls.Config{InsecureSkipVerify: true})
	defer c.Close()
	err = c.Handshake(time.Now().Add(100 * time.Millisecond))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Handshake = %v, want a timeout", err)
	}
}
