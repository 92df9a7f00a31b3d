package tlsbridge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/safefile"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

const testPassword = "s3cret pass"

// passwordFile holds a wrong password first, then the right one: NGINX
// tries each line in turn.
func passwordFile(t *testing.T) string {
	return writeFile(t, "passwords", []byte("wrong\r\n\n"+testPassword+"\n"))
}

func TestLoadKeysGoGenerated(t *testing.T) {
	for _, k := range []pki.KeyType{pki.RSA2048, pki.ECDSAP256, pki.ECDSAP384, pki.Ed25519} {
		root, _ := pki.NewRoot("root", pki.Options{Key: k})
		ch, err := pki.NewChain(root, 1, "client", pki.Options{Key: k})
		if err != nil {
			t.Fatal(err)
		}
		certFile := writeFile(t, "chain.pem", ch.ChainPEM())
		forms := map[string][]byte{"pkcs8": ch.Leaf.KeyPEM()}
		if b, err := ch.Leaf.EncryptedKeyPEM(testPassword); err == nil {
			forms["pkcs8 encrypted"] = b
		} else {
			t.Fatal(err)
		}
		if k != pki.Ed25519 {
			b, err := ch.Leaf.LegacyEncryptedKeyPEM(testPassword)
			if err != nil {
				t.Fatal(err)
			}
			forms["legacy encrypted"] = b
		}
		for form, data := range forms {
			t.Run(k.String()+" "+form, func(t *testing.T) {
				keyFile := writeFile(t, "key.pem", data)
				tc, err := loadClientCertificate(certFile, keyFile, passwordFile(t))
				if err != nil {
					t.Fatal(err)
				}
				if len(tc.Certificate) != 2 {
					t.Fatalf("chain of %d certificates, want leaf and intermediate", len(tc.Certificate))
				}
				if strings.Contains(form, "encrypted") {
					_, err := loadClientCertificate(certFile, keyFile, writeFile(t, "pw", []byte("nope\nnope either\n")))
					if err == nil || !strings.Contains(err.Error(), "no password in") {
						t.Fatalf("wrong passwords: %v", err)
					}
					_, err = loadClientCertificate(certFile, keyFile, "")
					if err == nil || !strings.Contains(err.Error(), "proxy_ssl_password_file is not set") {
						t.Fatalf("no password file: %v", err)
					}
				}
			})
		}
	}
}

func TestLoadKeyErrors(t *testing.T) {
	a := mustSet(t, pki.ECDSAP256, 0)
	b := mustSet(t, pki.ECDSAP256, 0)
	fa, fb := pkiFiles(t, a), pkiFiles(t, b)
	_, err := NewPolicy(PolicyConfig{Certificate: fa.ClientCert, CertificateKey: fb.ClientKey}, nil)
	if err == nil || !strings.Contains(err.Error(), "does not match certificate") {
		t.Fatalf("mismatched key: %v", err)
	}
	_, err = NewPolicy(PolicyConfig{Certificate: fa.ClientCert}, nil)
	if err == nil || !strings.Contains(err.Error(), "no proxy_ssl_certificate_key") {
		t.Fatalf("missing key: %v", err)
	}
	_, err = NewPolicy(PolicyConfig{Certificate: filepath.Join(t.TempDir(), "none.pem"), CertificateKey: fa.ClientKey}, nil)
	if err == nil || !strings.Contains(err.Error(), "loading certificate") {
		t.Fatalf("missing file: %v", err)
	}
	_, err = NewPolicy(PolicyConfig{Certificate: fa.ClientCert, CertificateKey: writeFile(t, "k", []byte("junk"))}, nil)
	if err == nil || !strings.Contains(err.Error(), "no PEM private key") {
		t.Fatalf("junk key: %v", err)
	}
}

// TestLoadKeysOpenSSLGenerated reads keys the real openssl wrote, in every
// form proxy_ssl_certificate_key meets in practice, and uses one in a
// handshake.
func TestLoadKeysOpenSSLGenerated(t *testing.T) {
	testutil.NeedProgram(t, "openssl", "openssl")
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	pass := "pass:" + testPassword
	type form struct {
		name     string
		make     [][]string // commands; the last writes key.pem
		badError string     // non-empty: loading must fail with this text
	}
	forms := []form{
		{"rsa genpkey -aes256 (PKCS#8 PBES2)", [][]string{{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-aes256", "-pass", pass, "-out", "key.pem"}}, ""},
		{"ec genpkey -aes256", [][]string{{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256", "-pass", pass, "-out", "key.pem"}}, ""},
		{"ed25519 genpkey -aes-128-cbc", [][]string{{"genpkey", "-algorithm", "ED25519", "-aes-128-cbc", "-pass", pass, "-out", "key.pem"}}, ""},
		{"ec plain PKCS#8", [][]string{{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", "key.pem"}}, ""},
		{"ec SEC1 plain", [][]string{{"ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "key.pem"}}, ""},
		{"ec legacy -aes256", [][]string{{"ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "plain.pem"}, {"ec", "-in", "plain.pem", "-aes256", "-passout", pass, "-out", "key.pem"}}, ""},
		{"rsa legacy -aes256", [][]string{{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "plain.pem"}, {"rsa", "-in", "plain.pem", "-traditional", "-aes256", "-passout", pass, "-out", "key.pem"}}, ""},
		{"rsa legacy -des3", [][]string{{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "plain.pem"}, {"rsa", "-in", "plain.pem", "-traditional", "-des3", "-passout", pass, "-out", "key.pem"}}, ""},
		{"pkcs8 -v2 aes256 -v2prf hmacWithSHA1", [][]string{{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "plain.pem"}, {"pkcs8", "-topk8", "-in", "plain.pem", "-v2", "aes256", "-v2prf", "hmacWithSHA1", "-passout", pass, "-out", "key.pem"}}, ""},
		{"pkcs8 -v2 aes128 -v2prf hmacWithSHA512", [][]string{{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "plain.pem"}, {"pkcs8", "-topk8", "-in", "plain.pem", "-v2", "aes128", "-v2prf", "hmacWithSHA512", "-passout", pass, "-out", "key.pem"}}, ""},
		{"pkcs8 -v2 des3", [][]string{{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "plain.pem"}, {"pkcs8", "-topk8", "-in", "plain.pem", "-v2", "des3", "-passout", pass, "-out", "key.pem"}}, ""},
		{"pkcs8 -scrypt", [][]string{{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "plain.pem"}, {"pkcs8", "-topk8", "-in", "plain.pem", "-scrypt", "-passout", pass, "-out", "key.pem"}}, "scrypt"},
	}
	pwFile := passwordFile(t)
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			for _, c := range f.make {
				run(c...)
			}
			run("req", "-new", "-x509", "-key", "key.pem", "-passin", pass, "-subj", "/CN=openssl client", "-days", "1", "-out", "cert.pem")
			tc, err := loadClientCertificate(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), pwFile)
			if f.badError != "" {
				if err == nil || !strings.Contains(err.Error(), f.badError) {
					t.Fatalf("want an error about %s, got %v", f.badError, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Present it to a real server that asks for any certificate.
			srv := startServer(t, &tls.Config{
				Certificates: []tls.Certificate{mustSet(t, pki.ECDSAP256, 0).Server.TLSCertificate()},
				ClientAuth:   tls.RequireAnyClientCert,
			})
			p := mustPolicy(t, PolicyConfig{Certificate: filepath.Join(dir, "cert.pem"), CertificateKey: filepath.Join(dir, "key.pem"), PasswordFile: pwFile}, nil)
			if _, err := dialOnce(t, p, Target{Addr: srv.addr}, Vars{}, nil); err != nil {
				t.Fatal(err)
			}
			sc := srv.next(t)
			if len(sc.state.PeerCertificates) == 0 || !bytes.Equal(sc.state.PeerCertificates[0].Raw, tc.Certificate[0]) {
				t.Fatal("server did not get our certificate")
			}
		})
	}
}

func TestConfigErrorDirectives(t *testing.T) {
	f := pkiFiles(t, mustSet(t, pki.ECDSAP256, 0))
	missing := filepath.Join(t.TempDir(), "missing.pem")
	enc, _ := mustSet(t, pki.ECDSAP256, 0).Client.Leaf.EncryptedKeyPEM("x")
	for _, tc := range []struct {
		pc   PolicyConfig
		want string
	}{
		{PolicyConfig{Certificate: missing, CertificateKey: f.ClientKey}, "proxy_ssl_certificate"},
		{PolicyConfig{Certificate: f.ClientCert, CertificateKey: missing}, "proxy_ssl_certificate_key"},
		{PolicyConfig{Certificate: f.ClientCert, CertificateKey: writeFile(t, "k.pem", enc), PasswordFile: missing}, "proxy_ssl_password_file"},
		{PolicyConfig{Verify: true, TrustedCertificate: missing}, "proxy_ssl_trusted_certificate"},
		{PolicyConfig{Verify: true, TrustedCertificate: f.CA, CRL: missing}, "proxy_ssl_crl"},
		{PolicyConfig{Verify: true}, "proxy_ssl_verify"},
		{PolicyConfig{Ciphers: "@BAD"}, "proxy_ssl_ciphers"},
		{PolicyConfig{Protocols: []string{"SSLv3"}}, "proxy_ssl_protocols"},
		{PolicyConfig{Name: "$nope"}, "proxy_ssl_name"},
		{PolicyConfig{ConfCommands: []ConfCommand{{"Foo", "x"}}}, "proxy_ssl_conf_command"},
	} {
		_, err := NewPolicy(tc.pc, nil)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Directive != tc.want {
			t.Errorf("%+v: error %v, want a ConfigError for %s", tc.pc, err, tc.want)
		}
	}
}

// TestLoadUnreadableFiles: a TLS file that is a device or a FIFO fails
// the load at once (no read of /dev/urandom until memory runs out, no wait
// for a FIFO's writer), at NewPolicy and at Reload, naming its directive.
func TestLoadUnreadableFiles(t *testing.T) {
	set := mustSet(t, pki.ECDSAP256, 0)
	f := pkiFiles(t, set)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	enc, err := set.Client.Leaf.EncryptedKeyPEM("x")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pc        PolicyConfig
		directive string
	}{
		{PolicyConfig{Certificate: "/dev/zero", CertificateKey: f.ClientKey}, "proxy_ssl_certificate"},
		{PolicyConfig{Certificate: f.ClientCert, CertificateKey: fifo}, "proxy_ssl_certificate_key"},
		{PolicyConfig{Certificate: f.ClientCert, CertificateKey: writeFile(t, "k.pem", enc), PasswordFile: "/dev/urandom"}, "proxy_ssl_password_file"},
		{PolicyConfig{Verify: true, TrustedCertificate: "/dev/urandom"}, "proxy_ssl_trusted_certificate"},
		{PolicyConfig{Verify: true, TrustedCertificate: f.CA, CRL: fifo}, "proxy_ssl_crl"},
	} {
		_, err := NewPolicy(tc.pc, nil)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Directive != tc.directive || !errors.Is(err, safefile.ErrNotRegular) {
			t.Errorf("%+v: error %v, want a ConfigError for %s saying not a regular file", tc.pc, err, tc.directive)
		}
	}

	// Reload reads through the same checks: the trust file swapped for a
	// FIFO is refused and the loaded material stays.
	dir := t.TempDir()
	ca := writeFileIn(t, dir, "ca.pem", set.Root.CertPEM())
	p := mustPolicy(t, PolicyConfig{Verify: true, TrustedCertificate: ca}, nil)
	if err := os.Remove(ca); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(ca, 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := p.Reload(); changed || !errors.Is(err, safefile.ErrNotRegular) {
		t.Errorf("Reload with the trust file a FIFO: changed %v, error %v; want unchanged, not a regular file", changed, err)
	}
}

// writeFileIn writes data to dir/name.
func writeFileIn(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
