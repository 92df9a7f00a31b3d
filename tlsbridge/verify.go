package tlsbridge

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/pemhint"
)

// trustStore is the loaded proxy_ssl_trusted_certificate and proxy_ssl_crl
// of one policy. Immutable after loadTrust.
type trustStore struct {
	// roots are the self-signed certificates of the trusted file: the only
	// trust anchors, since NGINX does not set X509_V_FLAG_PARTIAL_CHAIN.
	roots  *x509.CertPool
	nroots int
	// inner are the trusted file's other certificates; like OpenSSL, we use
	// them to build chains, and they count towards the depth.
	inner []*x509.Certificate
	// crls, when non-nil, turns on CRL checking of every certificate in the
	// chain (X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL).
	crls   []*x509.RevocationList
	digest [32]byte
	now    func() time.Time

	// chains caches the chain built for a certificate list (by hash of
	// the DER of every certificate sent): upstreams present the same
	// chain on every full handshake and resumed sessions carry it again,
	// and building it costs a signature check per link (two ECDSA
	// verifications for a leaf under one intermediate, ~40% of the CPU of
	// a resumed TLS 1.3 handshake). Only the signature-checked path is
	// cached; validity times, depth, CRLs and the name are checked on every
	// handshake.
	chainsMu sync.Mutex
	chains   map[[32]byte][]*x509.Certificate
}

// maxCachedChains bounds trustStore.chains; past it the cache starts over.
const maxCachedChains = 1024

// loadTrust reads the trusted-certificate file and, if crlFile is set, the
// CRL file.
func loadTrust(trustedFile, crlFile string) (*trustStore, error) {
	return loadTrustWith(plainReader, trustedFile, crlFile)
}

// loadTrustWith is loadTrust reading each file through reader(directive).
func loadTrustWith(reader func(directive string) readFunc, trustedFile, crlFile string) (*trustStore, error) {
	certs, err := readCertificatesWith(reader("proxy_ssl_trusted_certificate"), trustedFile)
	if err != nil {
		return nil, configError("proxy_ssl_trusted_certificate", fmt.Errorf("loading proxy_ssl_trusted_certificate %q: %w", trustedFile, err))
	}
	ts := &trustStore{roots: x509.NewCertPool(), now: time.Now}
	var rootDER, innerDER, crlDER [][]byte
	for _, c := range certs {
		if selfSigned(c) {
			ts.roots.AddCert(c)
			ts.nroots++
			rootDER = append(rootDER, c.Raw)
		} else {
			ts.inner = append(ts.inner, c)
			innerDER = append(innerDER, c.Raw)
		}
	}
	if crlFile != "" {
		if ts.crls, err = readCRLsWith(reader("proxy_ssl_crl"), crlFile); err != nil {
			return nil, configError("proxy_ssl_crl", fmt.Errorf("loading proxy_ssl_crl %q: %w", crlFile, err))
		}
		for _, l := range ts.crls {
			crlDER = append(crlDER, l.Raw)
		}
		if len(crlDER) == 0 {
			crlDER = [][]byte{{}}
		}
	}
	ts.digest = trustDigest(rootDER, innerDER, crlDER)
	return ts, nil
}

// readCertificatesWith parses every CERTIFICATE block of a PEM file.
func readCertificatesWith(read readFunc, path string) ([]*x509.Certificate, error) {
	data, err := read(path)
	if err != nil {
		return nil, err
	}
	all := data
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" && b.Type != "TRUSTED CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate #%d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found" + pemhint.DER(all, path, pemhint.Certificate))
	}
	return certs, nil
}

// readCRLsWith parses every X509 CRL block of a PEM file.
func readCRLsWith(read readFunc, path string) ([]*x509.RevocationList, error) {
	data, err := read(path)
	if err != nil {
		return nil, err
	}
	all := data
	var out []*x509.RevocationList
	for n := 1; ; n++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "X509 CRL" {
			continue
		}
		l, err := x509.ParseRevocationList(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing CRL #%d: %w", n, err)
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM X509 CRL found" + pemhint.DER(all, path, pemhint.CRL))
	}
	return out, nil
}

// selfSigned reports whether c is issued by itself and its signature checks
// out with its own key: OpenSSL's notion of a trust anchor.
func selfSigned(c *x509.Certificate) bool {
	if !bytes.Equal(c.RawIssuer, c.RawSubject) {
		return false
	}
	return c.CheckSignatureFrom(c) == nil || c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// verify checks the upstream's certificates (leaf first, as sent, or as
// stored in a resumed session) against the trust store, the depth limit,
// the CRLs and name. It runs in crypto/tls's VerifyConnection, on the
// handshaking goroutine.
func (ts *trustStore) verify(certs []*x509.Certificate, name string, depth int) error {
	if len(certs) == 0 {
		return &VerifyError{Reason: ReasonBadCertificate, Detail: "upstream sent no certificate"}
	}
	leaf := certs[0]
	now := ts.now()
	key := chainKey(certs)
	ts.chainsMu.Lock()
	best := ts.chains[key]
	ts.chainsMu.Unlock()
	// A path verified before can only have been changed by time.
	for _, c := range best {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			best = nil
			break
		}
	}
	if best == nil {
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		for _, c := range ts.inner {
			inter.AddCert(c)
		}
		chains, err := leaf.Verify(x509.VerifyOptions{
			Roots:         ts.roots,
			Intermediates: inter,
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return chainError(leaf, err)
		}
		best = chains[0]
		for _, ch := range chains[1:] {
			if len(ch) < len(best) {
				best = ch
			}
		}
		ts.chainsMu.Lock()
		if ts.chains == nil || len(ts.chains) >= maxCachedChains {
			ts.chains = make(map[[32]byte][]*x509.Certificate)
		}
		ts.chains[key] = best
		ts.chainsMu.Unlock()
	}
	if n := intermediates(best); n > depth {
		return &VerifyError{Reason: ReasonDepth, Detail: fmt.Sprintf(
			"upstream certificate chain has %d intermediate certificate%s, proxy_ssl_verify_depth is %d", n, plural(n), depth)}
	}
	if ts.crls != nil {
		if err := ts.checkCRLs(best, now); err != nil {
			return err
		}
	}
	if err := checkName(leaf, name); err != nil {
		return err
	}
	return nil
}

// chainKey hashes the DER of the certificates an upstream sent.
func chainKey(certs []*x509.Certificate) [32]byte {
	h := sha256.New()
	var n [4]byte
	for _, c := range certs {
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// intermediates counts the CA certificates between leaf and anchor.
func intermediates(chain []*x509.Certificate) int {
	if len(chain) <= 2 {
		return 0
	}
	return len(chain) - 2
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// chainError turns an x509 verification error into a VerifyError.
func chainError(leaf *x509.Certificate, err error) error {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		issuer := leaf.Issuer.String()
		if ua.Cert != nil {
			issuer = ua.Cert.Issuer.String()
		}
		return &VerifyError{Reason: ReasonUnknownCA, Err: err, Detail: fmt.Sprintf(
			"upstream certificate verify error: unable to get local issuer certificate: no chain from %q to a self-signed root in proxy_ssl_trusted_certificate (last issuer %q)",
			leaf.Subject.String(), issuer)}
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		c := ci.Cert
		what := "has expired"
		if time.Now().Before(c.NotBefore) {
			what = "is not yet valid"
		}
		return &VerifyError{Reason: ReasonExpired, Err: err, Detail: fmt.Sprintf(
			"upstream certificate %s: %q (valid %s to %s)", what, c.Subject.String(),
			c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))}
	}
	return &VerifyError{Reason: ReasonBadCertificate, Err: err, Detail: "upstream certificate verify error: " + err.Error()}
}

// checkName matches the leaf against the verify name: DNS SANs for host
// names, IP SANs for IP literals (NGINX matches DNS names only).
func checkName(leaf *x509.Certificate, name string) error {
	if name == "" {
		return nil
	}
	if ip := net.ParseIP(name); ip != nil {
		for _, a := range leaf.IPAddresses {
			if a.Equal(ip) {
				return nil
			}
		}
	} else if leaf.VerifyHostname(name) == nil {
		return nil
	}
	return &VerifyError{Reason: ReasonNameMismatch, Detail: fmt.Sprintf("upstream certificate does not match %q", name)}
}

// checkCRLs enforces CRL_CHECK_ALL on chain (leaf first, anchor last): every
// certificate below the anchor needs a current CRL from its issuer, signed
// by that issuer, that does not list it.
func (ts *trustStore) checkCRLs(chain []*x509.Certificate, now time.Time) error {
	for i := 0; i+1 < len(chain); i++ {
		c, issuer := chain[i], chain[i+1]
		var crl *x509.RevocationList
		for _, l := range ts.crls {
			if !bytes.Equal(l.RawIssuer, issuer.RawSubject) || l.CheckSignatureFrom(issuer) != nil {
				continue
			}
			if crl == nil || l.ThisUpdate.After(crl.ThisUpdate) {
				crl = l
			}
		}
		if crl == nil {
			return &VerifyError{Reason: ReasonCRL, Detail: fmt.Sprintf(
				"upstream certificate verify error: unable to get certificate CRL: proxy_ssl_crl has no CRL issued by %q", issuer.Subject.String())}
		}
		if now.Before(crl.ThisUpdate) {
			return &VerifyError{Reason: ReasonCRL, Detail: fmt.Sprintf(
				"upstream certificate verify error: CRL is not yet valid: CRL of %q is valid from %s", issuer.Subject.String(), crl.ThisUpdate.UTC().Format(time.RFC3339))}
		}
		if !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate) {
			return &VerifyError{Reason: ReasonCRL, Detail: fmt.Sprintf(
				"upstream certificate verify error: CRL has expired: CRL of %q was due for update at %s", issuer.Subject.String(), crl.NextUpdate.UTC().Format(time.RFC3339))}
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
				return &VerifyError{Reason: ReasonRevoked, Detail: fmt.Sprintf(
					"upstream certificate is revoked (serial %X, subject %q, revoked %s)", c.SerialNumber, c.Subject.String(), e.RevocationTime.UTC().Format(time.RFC3339))}
			}
		}
	}
	return nil
}
