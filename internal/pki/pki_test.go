package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
)

func TestChainsVerify(t *testing.T) {
	for _, k := range []KeyType{ECDSAP256, RSA2048, Ed25519} {
		for n := 0; n <= 3; n++ {
			s, err := NewSet(k, n)
			if err != nil {
				t.Fatal(err)
			}
			inter := x509.NewCertPool()
			for _, ic := range s.Server.Intermediates {
				inter.AddCert(ic.Cert)
			}
			chains, err := s.Server.Leaf.Cert.Verify(x509.VerifyOptions{
				Roots: Pool(s.Root), Intermediates: inter, DNSName: "localhost",
			})
			if err != nil {
				t.Fatalf("%s n=%d: %v", k, n, err)
			}
			if got := len(chains[0]); got != n+2 {
				t.Fatalf("%s n=%d: chain length %d", k, n, got)
			}
		}
	}
}

func TestMutualTLSHandshake(t *testing.T) {
	s, err := NewSet(ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", s.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- c.(*tls.Conn).Handshake()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		RootCAs: Pool(s.Root), ServerName: "localhost",
		Certificates: []tls.Certificate{s.Client.TLSCertificate()},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !s.Server.Leaf.Cert.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatal("server leaf lacks 127.0.0.1")
	}
}
