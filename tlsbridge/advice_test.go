package tlsbridge

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestMaterialWarnings: files that load but can never work draw a
// warning naming the directive and the fix; good ones draw none.
func TestMaterialWarnings(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 1)
	f := pkiFiles(t, set)
	serverOnly, err := pki.NewLeaf("client", set.Root, pki.Options{Key: pki.ECDSAP256, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatal(err)
	}
	noEKU, err := pki.NewLeaf("client", set.Root, pki.Options{Key: pki.ECDSAP256, Usage: []x509.ExtKeyUsage{}})
	if err != nil {
		t.Fatal(err)
	}
	intermediateOnly := writeFile(t, "intermediate.pem", set.Server.Intermediates[0].CertPEM())
	for _, tc := range []struct {
		name       string
		cert, key  string
		trusted    string
		wantPrefix string // "" for no warning
	}{
		{"good", f.ClientCert, f.ClientKey, f.CA, ""},
		{"root and intermediate", f.ClientCert, f.ClientKey,
			writeFile(t, "both.pem", append(set.Root.CertPEM(), set.Server.Intermediates[0].CertPEM()...)), ""},
		{"intermediate only", f.ClientCert, f.ClientKey, intermediateOnly, "proxy_ssl_trusted_certificate"},
		{"leaf only", f.ClientCert, f.ClientKey, writeFile(t, "leaf.pem", set.Server.Leaf.CertPEM()), "proxy_ssl_trusted_certificate"},
		{"serverAuth only", writeFile(t, "s.pem", serverOnly.CertPEM()), writeFile(t, "s.key", serverOnly.KeyPEM()), f.CA, "proxy_ssl_certificate"},
		{"no extended key usage", writeFile(t, "n.pem", noEKU.CertPEM()), writeFile(t, "n.key", noEKU.KeyPEM()), f.CA, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPolicy(t, PolicyConfig{Certificate: tc.cert, CertificateKey: tc.key, Verify: true, VerifyDepth: 2,
				TrustedCertificate: tc.trusted}, NewSessionStore(SessionStoreOptions{}))
			var got []string
			for _, w := range p.Warnings() {
				if strings.HasPrefix(w, "proxy_ssl_trusted_certificate") || strings.HasPrefix(w, "proxy_ssl_certificate ") {
					got = append(got, w)
				}
			}
			switch {
			case tc.wantPrefix == "" && len(got) > 0:
				t.Errorf("warnings %q, want none", got)
			case tc.wantPrefix != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tc.wantPrefix+" ")):
				t.Errorf("warnings %q, want one about %s", got, tc.wantPrefix)
			case tc.wantPrefix == "proxy_ssl_trusted_certificate" && !strings.Contains(got[0], "unknown_ca"):
				t.Errorf("warning %q does not say what fails", got[0])
			case tc.wantPrefix == "proxy_ssl_certificate" && !strings.Contains(got[0], "clientAuth"):
				t.Errorf("warning %q does not name clientAuth", got[0])
			}
		})
	}
}

// TestSummarizeSuites: a long list of suites is counted by family, most
// first.
func TestSummarizeSuites(t *testing.T) {
	got := SummarizeSuites([]string{"DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-CCM",
		"DHE-PSK-AES128-CBC-SHA", "ARIA256-GCM-SHA384", "ECDHE-ARIA128-GCM-SHA256", "CAMELLIA128-SHA", "NULL-MD5"})
	if want := "2 DHE, 2 ARIA, 1 CCM, 1 PSK, 1 Camellia, 1 other"; got != want {
		t.Errorf("SummarizeSuites = %q, want %q", got, want)
	}
}
