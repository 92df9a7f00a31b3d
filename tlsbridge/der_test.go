package tlsbridge

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestDERGivenAsPEM: a DER file (as Go writes it: x509 Raw bytes) where a
// PEM option wants PEM is refused with an error that says it is DER and
// how to convert it; the error names the directive.
func TestDERGivenAsPEM(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	dir := filepath.Dir(f.CA)
	keyDER, err := x509.MarshalPKCS8PrivateKey(set.Client.Leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	crlPEM, err := set.Root.CRL(nil, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	crlBlock, _ := pem.Decode(crlPEM)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certDER := write("client.der", set.Client.Leaf.DER)
	caDER := write("ca.der", set.Root.Cert.Raw)
	keyFile := write("client.key.der", keyDER)
	crlDER := write("crl.der", crlBlock.Bytes)
	hint := func(what, tool, path string) string {
		return "; the file looks like DER (binary; first byte 0x30) and parses as a DER " + what +
			", but this option takes PEM: convert it with `openssl " + tool + " -inform der -in " + path + " -out " + path + ".pem`"
	}
	for _, tc := range []struct {
		name      string
		pc        PolicyConfig
		directive string
		want      string
	}{
		{"certificate", PolicyConfig{Certificate: certDER, CertificateKey: f.ClientKey}, "proxy_ssl_certificate",
			`loading certificate "` + certDER + `": no PEM certificate found` + hint("certificate", "x509", certDER)},
		{"key", PolicyConfig{Certificate: f.ClientCert, CertificateKey: keyFile}, "proxy_ssl_certificate_key",
			`loading certificate key "` + keyFile + `": no PEM private key found` + hint("private key", "pkey", keyFile)},
		{"trusted certificate", PolicyConfig{Verify: true, VerifyDepth: 1, TrustedCertificate: caDER}, "proxy_ssl_trusted_certificate",
			`loading proxy_ssl_trusted_certificate "` + caDER + `": no PEM certificate found` + hint("certificate", "x509", caDER)},
		{"CRL", PolicyConfig{Verify: true, VerifyDepth: 1, TrustedCertificate: f.CA, CRL: crlDER}, "proxy_ssl_crl",
			`loading proxy_ssl_crl "` + crlDER + `": no PEM X509 CRL found` + hint("CRL", "crl", crlDER)},
		{"PEM garbage: no hint", PolicyConfig{Certificate: writeFile(t, "junk.pem", []byte("junk\n")), CertificateKey: f.ClientKey},
			"proxy_ssl_certificate", `no PEM certificate found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewPolicy(tc.pc, nil)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Directive != tc.directive {
				t.Fatalf("error %v: want a ConfigError for %s", err, tc.directive)
			}
			if tc.name == "PEM garbage: no hint" {
				if got := err.Error(); !strings.HasSuffix(got, tc.want) {
					t.Fatalf("error %q: want it to end %q (no DER hint)", got, tc.want)
				}
				return
			}
			if err.Error() != tc.want {
				t.Fatalf("error\n%s\nwant\n%s", err, tc.want)
			}
		})
	}
}
