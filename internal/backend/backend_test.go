package backend

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

func TestEchoCountsResumption(t *testing.T) {
	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		srvCfg := set.ServerConfig()
		srvCfg.MaxVersion = v
		s, err := Start(Config{TLS: srvCfg})
		if err != nil {
			t.Fatal(err)
		}
		cli := &tls.Config{
			RootCAs: pki.Pool(set.Root), ServerName: "localhost",
			Certificates:       []tls.Certificate{set.Client.TLSCertificate()},
			ClientSessionCache: tls.NewLRUClientSessionCache(4),
		}
		for i := 0; i < 3; i++ {
			c, err := tls.Dial("tcp", s.Addr(), cli)
			if err != nil {
				t.Fatal(err)
			}
			msg := []byte("hello")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo %q", got)
			}
			c.Close()
		}
		s.Close()
		st := s.Stats()
		if st.Handshakes != 3 || st.Resumed != 2 {
			t.Fatalf("version %x: %+v", v, st)
		}
		if s.Subjects()["tlsrelay client"] != 3 {
			t.Fatalf("subjects %v", s.Subjects())
		}
	}
}

func TestSourcePattern(t *testing.T) {
	const size = 100000
	s, err := Start(Config{Mode: Source, SourceBytes: size})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != size {
		t.Fatalf("read %d bytes, want %d", len(got), size)
	}
	for i, b := range got {
		if b != Pattern(int64(i)) {
			t.Fatalf("byte %d = %d, want %d", i, b, Pattern(int64(i)))
		}
	}
}

// TestRefusingAddr: a connection to the address is refused, and nobody
// can listen on it while the test holds it.
func TestRefusingAddr(t *testing.T) {
	addr := RefusingAddr(t)
	if c, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("connecting to %s: %v, want connection refused", addr, err)
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("listening on the held %s succeeded", addr)
	}
}
