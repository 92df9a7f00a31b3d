package bench

import (
	"crypto/tls"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

func benchHandshake(b *testing.B, version uint16, resumed bool) {
	set, err := pki.NewSet(pki.ECDSAP256, Intermediates)
	if err != nil {
		b.Fatal(err)
	}
	HandshakeBenchmark(set, version, resumed)(b)
}

// One mutually authenticated ECDSA P-256 handshake over an in-memory pipe, client and
// server in this process, X25519 key exchange.
func BenchmarkHandshakeTLS12Full(b *testing.B)    { benchHandshake(b, tls.VersionTLS12, false) }
func BenchmarkHandshakeTLS12Resumed(b *testing.B) { benchHandshake(b, tls.VersionTLS12, true) }
func BenchmarkHandshakeTLS13Full(b *testing.B)    { benchHandshake(b, tls.VersionTLS13, false) }
func BenchmarkHandshakeTLS13Resumed(b *testing.B) { benchHandshake(b, tls.VersionTLS13, true) }
