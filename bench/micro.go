package bench

import (
	"crypto/tls"
	"fmt"
	"io"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// HandshakeKind is one kind of upstream handshake the harness measures.
type HandshakeKind struct {
	Version uint16      `json:"version"`
	Key     pki.KeyType `json:"key"`
	Resumed bool        `json:"resumed"`
	// Plain: no TLS upstream at all (no proxy_ssl), plaintext backends:
	// the proxy's own cost per connection, apart from TLS.
	Plain bool `json:"plain,omitempty"`
}

// PlainKind is the row of plain proxying: a connection through the proxy
// to a plaintext upstream.
var PlainKind = HandshakeKind{Key: pki.ECDSAP256, Plain: true}

// AllKinds returns the rows a default run measures: HandshakeKinds and
// PlainKind.
func AllKinds() []HandshakeKind { return append(HandshakeKinds(), PlainKind) }

// VersionName returns "TLS1.2" or "TLS1.3".
func VersionName(v uint16) string {
	if v == tls.VersionTLS12 {
		return "TLS1.2"
	}
	return "TLS1.3"
}

// String returns e.g. "TLS1.3 ecdsa-p256 resumed".
func (k HandshakeKind) String() string {
	if k.Plain {
		return "plain TCP (no proxy_ssl)"
	}
	r := "full"
	if k.Resumed {
		r = "resumed"
	}
	return fmt.Sprintf("%s %s %s", VersionName(k.Version), k.Key, r)
}

// HandshakeKinds returns the matrix of handshake rows: TLS 1.2 and 1.3,
// ECDSA P-256 and RSA-2048, full and resumed.
func HandshakeKinds() []HandshakeKind {
	var out []HandshakeKind
	for _, key := range []pki.KeyType{pki.ECDSAP256, pki.RSA2048} {
		for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
			for _, r := range []bool{false, true} {
				out = append(out, HandshakeKind{Version: v, Key: key, Resumed: r})
			}
		}
	}
	return out
}

// HandshakeBenchmark returns a benchmark of one mutually authenticated
// handshake of the given version between a Go client and a Go server over
// net.Pipe (no sockets), resumed or full, with X25519 as the key exchange.
// Each iteration also moves one byte from server to client, which is when a
// TLS 1.3 client stores its ticket. Both sides run in the benchmark's
// process, so ns/op is client plus server.
func HandshakeBenchmark(set *pki.Set, version uint16, resumed bool) func(*testing.B) {
	return func(b *testing.B) {
		srvCfg := set.ServerConfig()
		srvCfg.MinVersion, srvCfg.MaxVersion = version, version
		srvCfg.CurvePreferences = []tls.CurveID{tls.X25519}
		cliCfg := &tls.Config{
			RootCAs:          pki.Pool(set.Root),
			ServerName:       "localhost",
			Certificates:     []tls.Certificate{set.Client.TLSCertificate()},
			MinVersion:       version,
			MaxVersion:       version,
			CurvePreferences: []tls.CurveID{tls.X25519},
		}
		if resumed {
			cliCfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
			// Prime the cache outside the timed loop.
			if _, err := pipeHandshake(cliCfg, srvCfg); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			did, err := pipeHandshake(cliCfg, srvCfg)
			if err != nil {
				b.Fatal(err)
			}
			if did != resumed {
				b.Fatalf("handshake %d: resumed %v, want %v", i, did, resumed)
			}
		}
	}
}

// pipeHandshake runs one handshake over an in-memory pipe; the server then writes a
// byte that the client reads. It reports whether the handshake resumed.
func pipeHandshake(cliCfg, srvCfg *tls.Config) (bool, error) {
	c, s := memPipe()
	defer c.Close()
	defer s.Close()
	errc := make(chan error, 1)
	go func() {
		ts := tls.Server(s, srvCfg)
		if err := ts.Handshake(); err != nil {
			errc <- fmt.Errorf("server handshake: %w", err)
			return
		}
		_, err := ts.Write([]byte{1})
		errc <- err
	}()
	tc := tls.Client(c, cliCfg)
	if err := tc.Handshake(); err != nil {
		s.Close()
		<-errc
		return false, fmt.Errorf("client handshake: %w", err)
	}
	var one [1]byte
	if _, err := io.ReadFull(tc, one[:]); err != nil {
		s.Close()
		<-errc
		return false, fmt.Errorf("client read: %w", err)
	}
	return tc.ConnectionState().DidResume, <-errc
}
