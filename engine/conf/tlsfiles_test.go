package conf

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// writePKI writes a test PKI plus a CRL, a broken file, an encrypted key
// and a password file into a temporary directory.
func writePKI(t *testing.T) (string, pki.Files) {
	t.Helper()
	dir := t.TempDir()
	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	files, err := set.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour),
	}, set.Root.Cert, set.Root.Key)
	if err != nil {
		t.Fatal(err)
	}
	key := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("opaque")})
	for name, data := range map[string][]byte{
		"crl.pem":       pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl}),
		"garbage.pem":   []byte("not a certificate\n"),
		"badder.pem":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}),
		"encrypted.key": key,
		"password":      []byte("secret\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, files
}

func TestTLSFiles(t *testing.T) {
	dir, _ := writePKI(t)
	ok := "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key client.key; " +
		"proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.pem; proxy_ssl_crl crl.pem;"
	tests := []struct{ name, body, want string }{
		{"all good", ok, ""},
		{"relative to conf dir", strings.ReplaceAll(ok, "client.pem", "./client.pem"), ""},
		{"cert garbage", "proxy_ssl_certificate garbage.pem; proxy_ssl_certificate_key client.key;",
			`cannot load certificate "DIR/garbage.pem": no PEM data found (want "CERTIFICATE" blocks)`},
		{"cert unparsable", "proxy_ssl_certificate badder.pem; proxy_ssl_certificate_key client.key;",
			`cannot load certificate "DIR/badder.pem": certificate 1: x509: malformed certificate`},
		{"key garbage", "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key garbage.pem;",
			`cannot load certificate key "DIR/garbage.pem": no PEM data found (want a PRIVATE KEY block)`},
		{"key mismatch", "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key server.key;",
			`cannot load certificate key "DIR/server.key": tls: private key does not match public key`},
		{"key missing", "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key nope.key;",
			`cannot load certificate key "DIR/nope.key": no such file or directory`},
		{"key encrypted", "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key encrypted.key;",
			`cannot load certificate key "DIR/encrypted.key": the key is encrypted and no proxy_ssl_password_file is set`},
		{"key encrypted with password", "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key encrypted.key; " +
			"proxy_ssl_password_file password;", ""},
		{"password file missing", "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key encrypted.key; " +
			"proxy_ssl_password_file nope;",
			`cannot load certificate key "DIR/encrypted.key": reading proxy_ssl_password_file: no such file or directory`},
		{"variables skip files", "proxy_ssl_certificate /c/$server_port.pem; proxy_ssl_certificate_key /c/${server_port}.key;", ""},
		{"trusted garbage", "proxy_ssl_verify on; proxy_ssl_trusted_certificate garbage.pem;",
			`cannot load trusted certificate "DIR/garbage.pem": no PEM data found (want "CERTIFICATE" blocks)`},
		{"crl garbage", "proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.pem; proxy_ssl_crl ca.pem;",
			`cannot load CRL "DIR/ca.pem": no PEM data found (want "X509 CRL" blocks)`},
		{"crl not read without verify", "proxy_ssl_crl garbage.pem;", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "stream {\nserver { listen 80; proxy_pass 127.0.0.1:1; proxy_ssl on;\n" + tt.body + "\n} }\n"
			_, _, err := Parse(filepath.Join(dir, "t.conf"), []byte(src), LoadOptions{})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			want := "[emerg] " + strings.ReplaceAll(tt.want, "DIR", dir) + " in " + filepath.Join(dir, "t.conf") + ":3"
			if err == nil || err.Error() != want {
				t.Errorf("error = %v\nwant    %s", err, want)
			}
		})
	}
}
