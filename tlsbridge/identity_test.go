package tlsbridge

import (
	"crypto/tls"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestVerifyIdentity: an upstream whose certificate carries a SPIFFE ID
// and no name matching proxy_ssl_name is accepted by its identity, a
// prefix, its DNS SAN or its CN, and refused by another with the
// identities it carries in the error; a resumed session is checked too.
func TestVerifyIdentity(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 1)
	f := pkiFiles(t, set)
	id, _ := url.Parse("spiffe://example.org/ns/prod/sa/redis")
	leaf, err := pki.NewLeaf("redis", set.Server.Intermediates[0], pki.Options{Key: pki.ECDSAP256, URIs: []*url.URL{id},
		DNSNames: []string{"redis.internal"}})
	if err != nil {
		t.Fatal(err)
	}
	scfg := set.ServerConfig()
	scfg.Certificates = []tls.Certificate{{Certificate: [][]byte{leaf.DER, set.Server.Intermediates[0].DER}, PrivateKey: leaf.Key}}
	srv := startServer(t, scfg)
	for _, tc := range []struct {
		ids []string
		ok  bool
	}{
		{[]string{"uri:spiffe://example.org/ns/prod/sa/redis"}, true},
		{[]string{"uri:spiffe://example.org/ns/prod/*"}, true},
		{[]string{"uri:spiffe://example.org/ns/dev/sa/redis", "dns:redis.internal"}, true},
		{[]string{"cn:REDIS"}, true},
		{[]string{"uri:spiffe://example.org/ns/dev/sa/redis"}, false},
		{[]string{"uri:spiffe://example.org/ns/prod/sa/redis2"}, false},
		{[]string{"dns:other.internal", "cn:other"}, false},
	} {
		t.Run(strings.Join(tc.ids, " "), func(t *testing.T) {
			p := mustPolicy(t, PolicyConfig{Certificate: f.ClientCert, CertificateKey: f.ClientKey, Verify: true, VerifyDepth: 1,
				TrustedCertificate: f.CA, SessionReuse: true, Identities: tc.ids}, NewSessionStore(SessionStoreOptions{}))
			// "localhost" is not in the certificate: the identities decide.
			target := Target{Addr: srv.addr, Host: "localhost"}
			for round := range 2 { // full, then resumed
				_, err := dialOnce(t, p, target, Vars{}, nil)
				srv.next(t)
				if tc.ok != (err == nil) {
					t.Fatalf("round %d: %v, want ok %v", round, err, tc.ok)
				}
				if !tc.ok {
					var ve *VerifyError
					if !errors.As(err, &ve) || ve.Reason != ReasonNameMismatch ||
						!strings.Contains(ve.Detail, "uri:spiffe://example.org/ns/prod/sa/redis dns:redis.internal cn:redis") {
						t.Fatalf("error %v, want name_mismatch listing what the certificate carries", err)
					}
					return
				}
			}
		})
	}
	if _, err := NewPolicy(PolicyConfig{Identities: []string{"uri:spiffe://example.org/x"}}, nil); err == nil ||
		!strings.Contains(err.Error(), "needs proxy_ssl_verify on") {
		t.Errorf("identities without verify: %v", err)
	}
}

// TestConfCommandCertificate: proxy_ssl_conf_command Certificate and
// PrivateKey replace the client certificate, as OpenSSL applies them after
// proxy_ssl_certificate: the upstream sees the other certificate.
func TestConfCommandCertificate(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 1)
	f := pkiFiles(t, set)
	other, err := pki.NewLeaf("other client", set.Root, pki.Options{Key: pki.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	cert, key := writeFile(t, "other.pem", other.CertPEM()), writeFile(t, "other.key", other.KeyPEM())
	srv := startServer(t, set.ServerConfig())
	p := mustPolicy(t, PolicyConfig{Certificate: f.ClientCert, CertificateKey: f.ClientKey, Verify: true, VerifyDepth: 1,
		TrustedCertificate: f.CA, ConfCommands: []ConfCommand{{"Certificate", cert}, {"PrivateKey", key}}}, nil)
	if _, err := dialOnce(t, p, Target{Addr: srv.addr, Host: "localhost"}, Vars{}, nil); err != nil {
		t.Fatal(err)
	}
	if sc := srv.next(t); len(sc.state.PeerCertificates) == 0 || sc.state.PeerCertificates[0].Subject.CommonName != "other client" {
		t.Errorf("the upstream saw %v, want the Certificate command's", sc.state.PeerCertificates)
	}
	if _, err := NewPolicy(PolicyConfig{ConfCommands: []ConfCommand{{"Certificate", cert}}}, nil); err == nil {
		t.Error("Certificate without PrivateKey (and no proxy_ssl_certificate_key) accepted")
	}
}
