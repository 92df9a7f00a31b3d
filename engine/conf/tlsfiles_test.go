package conf

import (
	"crypto/ecdsa"
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
	keyDER, err := x509.MarshalPKCS8PrivateKey(set.Client.Leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(set.Client.Leaf.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"crl.pem":       pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl}),
		"garbage.pem":   []byte("not a certificate\n"),
		"badder.pem":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}),
		"encrypted.key": key,
		"password":      []byte("secret\n"),
		// DER files as Go writes them (x509 Raw bytes), given where PEM
		// is wanted.
		"client.der":    set.Client.Leaf.DER,
		"ca cert.der":   set.Root.Cert.Raw,
		"client.pk8":    keyDER,
		"client-ec.der": ecDER,
		"crl.der":       crl,
		"seq.bin":       {0x30, 0x03, 0x02, 0x01, 0x05},
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
		{"cert DER", "proxy_ssl_certificate client.der; proxy_ssl_certificate_key client.key;",
			`cannot load certificate "DIR/client.der": no PEM data found (want "CERTIFICATE" blocks); the file looks like DER ` +
				"(binary; first byte 0x30) and parses as a DER certificate, but this option takes PEM: convert it with " +
				"`openssl x509 -inform der -in DIR/client.der -out DIR/client.der.pem`"},
		{"key DER PKCS#8", "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key client.pk8;",
			`cannot load certificate key "DIR/client.pk8": no PEM data found (want a PRIVATE KEY block); the file looks like DER ` +
				"(binary; first byte 0x30) and parses as a DER private key, but this option takes PEM: convert it with " +
				"`openssl pkey -inform der -in DIR/client.pk8 -out DIR/client.pk8.pem`"},
		{"key DER SEC1", "proxy_ssl_certificate client.pem; proxy_ssl_certificate_key client-ec.der;",
			`cannot load certificate key "DIR/client-ec.der": no PEM data found (want a PRIVATE KEY block); the file looks like DER ` +
				"(binary; first byte 0x30) and parses as a DER private key, but this option takes PEM: convert it with " +
				"`openssl pkey -inform der -in DIR/client-ec.der -out DIR/client-ec.der.pem`"},
		{"trusted DER, quoted path", `proxy_ssl_verify on; proxy_ssl_trusted_certificate "ca cert.der";`,
			`cannot load trusted certificate "DIR/ca cert.der": no PEM data found (want "CERTIFICATE" blocks); the file looks like DER ` +
				"(binary; first byte 0x30) and parses as a DER certificate, but this option takes PEM: convert it with " +
				"`openssl x509 -inform der -in 'DIR/ca cert.der' -out 'DIR/ca cert.der.pem'`"},
		{"crl DER", "proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.pem; proxy_ssl_crl crl.der;",
			`cannot load CRL "DIR/crl.der": no PEM data found (want "X509 CRL" blocks); the file looks like DER ` +
				"(binary; first byte 0x30) and parses as a DER CRL, but this option takes PEM: convert it with " +
				"`openssl crl -inform der -in DIR/crl.der -out DIR/crl.der.pem`"},
		{"crl looks like DER only", "proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.pem; proxy_ssl_crl seq.bin;",
			`cannot load CRL "DIR/seq.bin": no PEM data found (want "X509 CRL" blocks); the file looks like DER ` +
				"(binary; first byte 0x30), but this option takes PEM: convert it with " +
				"`openssl crl -inform der -in DIR/seq.bin -out DIR/seq.bin.pem`"},
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
