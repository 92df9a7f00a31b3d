package dial

import (
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/pool"
)

// BenchmarkDialerDispatch measures a dial job end to end (hand-off to a
// goroutine, TCP connect, resumed TLS 1.3 handshake, Done) against a local
// upstream, 64 jobs in flight, with goroutines reused between jobs (the
// default) and with a new goroutine for every job (IdleTimeout of 1 ns:
// each goroutine exits as soon as its job is done). It is how the dialer's
// reuse of idle goroutines was chosen; compare the two in one run.
func BenchmarkDialerDispatch(b *testing.B) {
	set, err := pki.NewSet(pki.ECDSAP256, 0)
	if err != nil {
		b.Fatal(err)
	}
	addr := benchTLSServer(b, set)
	cache := tls.NewLRUClientSessionCache(64)
	tlsFor := func(*pool.Peer, net.Addr) (*tls.Config, error) {
		return &tls.Config{ServerName: "localhost", RootCAs: pki.Pool(set.Root), ClientSessionCache: cache}, nil
	}
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"reuse", Config{}},
		{"per-job", Config{IdleTimeout: time.Nanosecond}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g := testGroupB(b, addr)
			d := NewDialer(bc.cfg)
			defer d.Close()
			sem := make(chan struct{}, 64)
			var wg sync.WaitGroup
			b.ReportAllocs()
			for b.Loop() {
				sem <- struct{}{}
				wg.Add(1)
				j := &Job{Sel: g.NewSelection("", 0, time.Now()), TLS: tlsFor, ConnectTimeout: 10 * time.Second}
				j.Done = func(r Result) {
					if r.Err != nil {
						b.Error(r.Err)
					} else {
						r.TLS.Close()
						j.Sel.Release(r.Peer)
					}
					<-sem
					wg.Done()
				}
				if err := d.Submit(j); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
		})
	}
}

func testGroupB(tb testing.TB, addr string) *pool.Group {
	sc := pool.NewServerConfig(addr)
	sc.MaxFails = 0
	g, err := pool.NewGroup(pool.GroupConfig{Name: "g", Servers: []pool.ServerConfig{sc}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// benchTLSServer is a TLS upstream that handshakes (no client
// certificate) and then reads until the client closes.
func benchTLSServer(tb testing.TB, set *pki.Set) string {
	srv, err := backend.Start(backend.Config{Mode: backend.Sink,
		TLS: &tls.Config{Certificates: []tls.Certificate{set.Server.TLSCertificate()}}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Close() })
	return srv.Addr()
}
