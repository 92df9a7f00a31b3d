package tlsbridge

import (
	"crypto/tls"
	"testing"
)

// BenchmarkClientConfig is the per-connection cost of getting a config
// (no variables in proxy_ssl_name): a read-locked map lookup.
func BenchmarkClientConfig(b *testing.B) {
	p, err := NewPolicy(PolicyConfig{SessionReuse: true}, NewSessionStore(SessionStoreOptions{}))
	if err != nil {
		b.Fatal(err)
	}
	t := Target{Addr: "10.0.0.1:443", Host: "backend1.example.com"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.ClientConfig(t, Vars{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkObserve is the per-handshake cost of recording an outcome.
func BenchmarkObserve(b *testing.B) {
	p, err := NewPolicy(PolicyConfig{SessionReuse: true}, NewSessionStore(SessionStoreOptions{}))
	if err != nil {
		b.Fatal(err)
	}
	t := Target{Addr: "10.0.0.1:443", Host: "backend1.example.com"}
	cs := tls.ConnectionState{DidResume: true}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		p.Observe(t, Vars{}, cs, nil)
	}
}

func BenchmarkParseCipherString(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ParseCipherString("HIGH:!aNULL:!MD5"); err != nil {
			b.Fatal(err)
		}
	}
}
