//go:build openssl && cgo && linux

package tlsbridge

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"strings"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// osslKey is fastSigner(k), which must be held by OpenSSL.
func osslKey(t testing.TB, k *rsa.PrivateKey) *osslRSAKey {
	t.Helper()
	if _, err := libcrypto(); err != nil {
		t.Fatalf("the openssl build needs OpenSSL 3's libcrypto.so.3 (Debian: openssl / libssl3): %v", err)
	}
	s, ok := fastSigner(k).(*osslRSAKey)
	if !ok {
		t.Fatalf("fastSigner kept %T", fastSigner(k))
	}
	return s
}

// TestOpenSSLSignaturesVerifyWithGo: every signature crypto/tls asks for,
// signed by libcrypto, verifies with Go's RSA, and the ones OpenSSL is not
// asked for are still signed (by Go).
func TestOpenSSLSignaturesVerifyWithGo(t *testing.T) {
	k := rsaKey(t)
	s := osslKey(t, k)
	if !strings.Contains(KeyBackend(), "OpenSSL 3") {
		t.Errorf("KeyBackend() = %q", KeyBackend())
	}
	msg := []byte("CertificateVerify content")
	d256 := sha256.Sum256(msg)
	d384 := sha512.Sum384(msg)
	d512 := sha512.Sum512(msg)
	for _, c := range []struct {
		name   string
		digest []byte
		opts   crypto.SignerOpts
	}{
		{"rsa_pss_rsae_sha256", d256[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}},
		{"rsa_pss_rsae_sha384", d384[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA384}},
		{"rsa_pss_rsae_sha512", d512[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA512}},
		{"rsa_pkcs1_sha256", d256[:], crypto.SHA256},
		{"rsa_pkcs1_sha512", d512[:], crypto.SHA512},
		{"PSS with the largest salt (signed by Go)", d256[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sig, err := s.Sign(rand.Reader, c.digest, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if pss, ok := c.opts.(*rsa.PSSOptions); ok {
				err = rsa.VerifyPSS(&k.PublicKey, c.opts.HashFunc(), c.digest, sig, &rsa.PSSOptions{SaltLength: pss.SaltLength})
			} else {
				err = rsa.VerifyPKCS1v15(&k.PublicKey, c.opts.HashFunc(), c.digest, sig)
			}
			if err != nil {
				t.Errorf("Go does not verify the signature: %v", err)
			}
		})
	}
	if _, err := s.Sign(rand.Reader, d256[:20], crypto.SHA256); err == nil {
		t.Error("a digest of the wrong length was signed")
	}
}

// TestOpenSSLSignConcurrently: dial workers sign with one key at once;
// each signature is whole and valid.
func TestOpenSSLSignConcurrently(t *testing.T) {
	k := rsaKey(t)
	s := osslKey(t, k)
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 20 {
				d := sha256.Sum256([]byte{byte(g), byte(i)})
				opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
				sig, err := s.Sign(rand.Reader, d[:], opts)
				if err == nil {
					err = rsa.VerifyPSS(&k.PublicKey, crypto.SHA256, d[:], sig, opts)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestOpenSSLKeyMutualTLS: an RSA client certificate loaded from files, as
// proxy_ssl_certificate_key does, signs through OpenSSL, and a Go server
// that requires client certificates accepts it in TLS 1.3 and 1.2.
func TestOpenSSLKeyMutualTLS(t *testing.T) {
	set := mustSet(t, pki.RSA2048, 1)
	f := pkiFiles(t, set)
	cert, err := loadClientCertificate(f.ClientCert, f.ClientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cert.PrivateKey.(*osslRSAKey); !ok {
		t.Fatalf("the loaded key is a %T", cert.PrivateKey)
	}
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		srv := startServer(t, set.ServerConfig())
		cfg := &tls.Config{
			RootCAs:      pki.Pool(set.Root),
			ServerName:   set.Server.Leaf.Cert.DNSNames[0],
			Certificates: []tls.Certificate{*cert},
			MinVersion:   v,
			MaxVersion:   v,
		}
		c, err := tls.Dial("tcp", srv.addr, cfg)
		if err != nil {
			t.Fatalf("%s: %v", tls.VersionName(v), err)
		}
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil {
			t.Errorf("%s: %v", tls.VersionName(v), err)
		}
		c.Close()
		sc := srv.next(t)
		if sc.err != nil || len(sc.state.PeerCertificates) == 0 {
			t.Errorf("%s: the server saw err %v, %d client certificates", tls.VersionName(v), sc.err, len(sc.state.PeerCertificates))
		}
	}
}

// BenchmarkRSA2048Sign compares the two signers of an RSA-PSS SHA-256
// CertificateVerify.
func BenchmarkRSA2048Sign(b *testing.B) {
	k := rsaKey(b)
	d := sha256.Sum256([]byte("x"))
	opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	for _, s := range []struct {
		name string
		s    crypto.Signer
	}{{"Go", k}, {"OpenSSL", osslKey(b, k)}} {
		b.Run(s.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.s.Sign(rand.Reader, d[:], opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
