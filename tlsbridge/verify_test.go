package tlsbridge

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

func pemOf(certs ...*pki.Cert) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.CertPEM()...)
	}
	return out
}

func x509s(certs ...*pki.Cert) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		out = append(out, c.Cert)
	}
	return out
}

// opensslVerify runs `openssl verify` as NGINX's OpenSSL would check an
// upstream: purpose sslserver, no partial chain, the given depth.
func opensslVerify(t *testing.T, trusted, untrusted, leaf string, depth int, extra ...string) bool {
	t.Helper()
	args := []string{"verify", "-purpose", "sslserver", "-verify_depth", fmt.Sprint(depth), "-CAfile", trusted}
	if untrusted != "" {
		args = append(args, "-untrusted", untrusted)
	}
	args = append(args, extra...)
	args = append(args, leaf)
	out, err := exec.Command("openssl", args...).CombinedOutput()
	ok := err == nil && strings.Contains(string(out), ": OK")
	return ok
}

// TestVerifyDepthDifferential checks proxy_ssl_verify_depth against
// `openssl verify -verify_depth N` for chains of 0 to 3 intermediates, with
// the intermediates sent by the upstream or only in the trusted file, with
// trusted intermediates and with a trusted file lacking the root.
func TestVerifyDepthDifferential(t *testing.T) {
	testutil.NeedProgram(t, "openssl", "openssl")
	root, err := pki.NewRoot("depth root", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	type variant struct {
		name      string
		trusted   []*pki.Cert
		sent      []*pki.Cert // intermediates the upstream sends
		leaf      *pki.Cert
		wantChain int // intermediates in the chain, -1 if none builds
	}
	var variants []variant
	self, err := pki.NewSelfSignedLeaf("localhost", pki.Options{DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	variants = append(variants, variant{"self-signed leaf trusted", []*pki.Cert{self}, nil, self, 0})
	for n := 0; n <= 3; n++ {
		ch, err := pki.NewChain(root, n, "localhost", pki.Options{DNSNames: []string{"localhost"}})
		if err != nil {
			t.Fatal(err)
		}
		ints := ch.Intermediates
		variants = append(variants,
			variant{fmt.Sprintf("%d ints, root trusted", n), []*pki.Cert{root}, ints, ch.Leaf, n},
			variant{fmt.Sprintf("%d ints, root and ints trusted", n), append([]*pki.Cert{root}, ints...), ints, ch.Leaf, n},
		)
		if n > 0 {
			variants = append(variants,
				variant{fmt.Sprintf("%d ints, only in trusted file", n), append([]*pki.Cert{root}, ints...), nil, ch.Leaf, n},
				variant{fmt.Sprintf("%d ints, trusted file without root", n), ints, ints, ch.Leaf, -1},
				variant{fmt.Sprintf("%d ints, trusted file = top int", n), []*pki.Cert{ints[n-1]}, ints, ch.Leaf, -1},
			)
		}
	}
	cases := 0
	for _, v := range variants {
		trusted := writeFile(t, "trusted.pem", pemOf(v.trusted...))
		untrusted := ""
		if len(v.sent) > 0 {
			untrusted = writeFile(t, "untrusted.pem", pemOf(v.sent...))
		}
		leafFile := writeFile(t, "leaf.pem", v.leaf.CertPEM())
		ts, err := loadTrust(trusted, "")
		if err != nil {
			t.Fatal(err)
		}
		for depth := 0; depth <= 3; depth++ {
			want := opensslVerify(t, trusted, untrusted, leafFile, depth)
			err := ts.verify(x509s(append([]*pki.Cert{v.leaf}, v.sent...)...), "localhost", depth)
			if got := err == nil; got != want {
				t.Errorf("%s, depth %d: ours ok=%v (%v), openssl ok=%v", v.name, depth, got, err, want)
			}
			if err != nil {
				var ve *VerifyError
				if !errors.As(err, &ve) {
					t.Fatalf("not a VerifyError: %v", err)
				}
				wantReason := ReasonDepth
				if v.wantChain < 0 {
					wantReason = ReasonUnknownCA
				}
				if ve.Reason != wantReason {
					t.Errorf("%s, depth %d: reason %s, want %s (%v)", v.name, depth, ve.Reason, wantReason, err)
				}
				if wantReason == ReasonDepth {
					want := fmt.Sprintf("upstream certificate chain has %d intermediate certificate%s, proxy_ssl_verify_depth is %d", v.wantChain, plural(v.wantChain), depth)
					if ve.Error() != want {
						t.Errorf("error %q, want %q", ve.Error(), want)
					}
				}
			}
			cases++
		}
	}
	t.Logf("%d chain/depth cases agree with %s", cases, opensslVersion())
}

func TestVerifyFailures(t *testing.T) {
	root, _ := pki.NewRoot("root", pki.Options{})
	other, _ := pki.NewRoot("other root", pki.Options{})
	ch, _ := pki.NewChain(root, 1, "backend1.example.com", pki.Options{
		DNSNames: []string{"backend1.example.com"}, IPs: []net.IP{net.ParseIP("10.0.0.7")}})
	past := time.Now().Add(-48 * time.Hour)
	expired, _ := pki.NewChain(root, 0, "old", pki.Options{DNSNames: []string{"old"}, NotBefore: past, NotAfter: past.Add(time.Hour)})
	trust := func(certs ...*pki.Cert) *trustStore {
		ts, err := loadTrust(writeFile(t, "ca.pem", pemOf(certs...)), "")
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	sent := x509s(ch.Leaf, ch.Intermediates[0])
	for _, tc := range []struct {
		name   string
		ts     *trustStore
		certs  []*x509.Certificate
		host   string
		depth  int
		reason Reason
		text   string
	}{
		{"ok by name", trust(root), sent, "backend1.example.com", 1, ReasonNone, ""},
		{"ok by IP SAN", trust(root), sent, "10.0.0.7", 1, ReasonNone, ""},
		{"name mismatch", trust(root), sent, "backend", 1, ReasonNameMismatch, `upstream certificate does not match "backend"`},
		{"IP mismatch", trust(root), sent, "10.0.0.8", 1, ReasonNameMismatch, `upstream certificate does not match "10.0.0.8"`},
		{"unknown CA", trust(other), sent, "backend1.example.com", 1, ReasonUnknownCA, "unable to get local issuer certificate"},
		{"missing intermediate", trust(root), sent[:1], "backend1.example.com", 1, ReasonUnknownCA, "unable to get local issuer certificate"},
		{"depth", trust(root), sent, "backend1.example.com", 0, ReasonDepth, "upstream certificate chain has 1 intermediate certificate, proxy_ssl_verify_depth is 0"},
		{"expired", trust(root), x509s(expired.Leaf), "old", 1, ReasonExpired, "upstream certificate has expired"},
		{"no certificate", trust(root), nil, "x", 1, ReasonBadCertificate, "upstream sent no certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.ts.verify(tc.certs, tc.host, tc.depth)
			if got := Classify(err); got != tc.reason {
				t.Fatalf("reason %s, want %s (%v)", got, tc.reason, err)
			}
			if tc.text != "" && !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("error %q lacks %q", err, tc.text)
			}
		})
	}
}

// TestCRL covers proxy_ssl_crl: CRLs for every CA in the chain
// (CRL_CHECK_ALL), checked against `openssl verify -crl_check_all` when
// openssl is installed.
func TestCRL(t *testing.T) {
	root, _ := pki.NewRoot("crl root", pki.Options{})
	ch, _ := pki.NewChain(root, 1, "localhost", pki.Options{DNSNames: []string{"localhost"}})
	inter := ch.Intermediates[0]
	crl := func(issuer *pki.Cert, revoked []*pki.Cert, this, next time.Time) []byte {
		b, err := issuer.CRL(revoked, this, next)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	now := time.Now()
	rootOK := crl(root, nil, time.Time{}, time.Time{})
	intOK := crl(inter, nil, time.Time{}, time.Time{})
	trusted := writeFile(t, "ca.pem", root.CertPEM())
	untrusted := writeFile(t, "int.pem", inter.CertPEM())
	leafFile := writeFile(t, "leaf.pem", ch.Leaf.CertPEM())
	haveOpenSSL := true
	if _, err := exec.LookPath("openssl"); err != nil {
		haveOpenSSL = false
	}
	for _, tc := range []struct {
		name   string
		crls   [][]byte
		reason Reason
		text   string
	}{
		{"all CRLs, nothing revoked", [][]byte{rootOK, intOK}, ReasonNone, ""},
		{"revoked leaf", [][]byte{rootOK, crl(inter, []*pki.Cert{ch.Leaf}, time.Time{}, time.Time{})}, ReasonRevoked, "upstream certificate is revoked (serial "},
		{"revoked intermediate", [][]byte{crl(root, []*pki.Cert{inter}, time.Time{}, time.Time{}), intOK}, ReasonRevoked, "upstream certificate is revoked (serial "},
		{"missing CRL of the root", [][]byte{intOK}, ReasonCRL, "unable to get certificate CRL"},
		{"missing CRL of the intermediate", [][]byte{rootOK}, ReasonCRL, "unable to get certificate CRL"},
		{"expired CRL", [][]byte{rootOK, crl(inter, nil, now.Add(-48*time.Hour), now.Add(-24*time.Hour))}, ReasonCRL, "CRL has expired"},
		{"CRL not yet valid", [][]byte{rootOK, crl(inter, nil, now.Add(24*time.Hour), now.Add(48*time.Hour))}, ReasonCRL, "CRL is not yet valid"},
		{"CRL signed by another CA", [][]byte{rootOK, crlSignedByImpostor(t, inter)}, ReasonCRL, "unable to get certificate CRL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var all []byte
			for _, c := range tc.crls {
				all = append(all, c...)
			}
			crlFile := writeFile(t, "crl.pem", all)
			ts, err := loadTrust(trusted, crlFile)
			if err != nil {
				t.Fatal(err)
			}
			err = ts.verify(x509s(ch.Leaf, inter), "localhost", 1)
			if got := Classify(err); got != tc.reason {
				t.Fatalf("reason %s, want %s (%v)", got, tc.reason, err)
			}
			if tc.text != "" && !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("error %q lacks %q", err, tc.text)
			}
			if haveOpenSSL {
				want := opensslVerify(t, trusted, untrusted, leafFile, 1, "-crl_check_all", "-CRLfile", crlFile)
				if (err == nil) != want {
					t.Errorf("openssl verify -crl_check_all ok=%v, ours %v", want, err)
				}
			}
		})
	}
}

// crlSignedByImpostor returns a CRL that names inter as issuer but is
// signed by another key.
func crlSignedByImpostor(t *testing.T, inter *pki.Cert) []byte {
	t.Helper()
	imp, err := pki.NewRoot(inter.Cert.Subject.CommonName, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	imp.Cert.RawSubject = inter.Cert.RawSubject
	b, err := imp.CRL(nil, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
