package tlsbridge

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
)

// materialWarnings are the `-t` warnings about files that load but can
// never work: a trusted-certificate file with no self-signed root (every
// handshake fails with unknown_ca, since NGINX, and tlsrelay, do not take
// an intermediate as a trust anchor) and a client certificate whose
// extended key usage leaves out clientAuth (Go, etcd and HAProxy refuse
// it). Each names its directive first, for the engine's file:line.
func materialWarnings(pc PolicyConfig, m *material) []string {
	var out []string
	if ts := m.trust; ts != nil && ts.nroots == 0 {
		issuers := make([]string, 0, len(ts.inner))
		for _, c := range ts.inner {
			if is := c.Issuer.String(); !slices.Contains(issuers, is) {
				issuers = append(issuers, is)
			}
		}
		what := fmt.Sprintf("%d certificates", len(ts.inner))
		if len(ts.inner) == 1 {
			what = "one certificate"
		}
		out = append(out, fmt.Sprintf("proxy_ssl_trusted_certificate %q holds no self-signed root certificate (%s, issued by %s): "+
			"every upstream handshake will fail with unknown_ca; add the root CA certificate at the top of the chain to the file",
			pc.TrustedCertificate, what, quoteAll(issuers)))
	}
	if m.cert != nil && m.cert.Leaf != nil && !clientAuthUsage(m.cert.Leaf) {
		out = append(out, fmt.Sprintf("proxy_ssl_certificate %q has an extended key usage without clientAuth (%s): "+
			"upstreams that check it (Go, etcd, HAProxy, OpenSSL with purpose checks) refuse it; reissue it with extendedKeyUsage = clientAuth",
			pc.Certificate, ekuNames(m.cert.Leaf.ExtKeyUsage)))
	}
	return out
}

// clientAuthUsage reports whether c may authenticate a TLS client: no
// extended key usage at all (any use, RFC 5280), clientAuth, or any.
func clientAuthUsage(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	return slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny)
}

// ekuNames names extended key usages as OpenSSL's config does.
func ekuNames(us []x509.ExtKeyUsage) string {
	names := map[x509.ExtKeyUsage]string{
		x509.ExtKeyUsageServerAuth: "serverAuth", x509.ExtKeyUsageClientAuth: "clientAuth",
		x509.ExtKeyUsageCodeSigning: "codeSigning", x509.ExtKeyUsageEmailProtection: "emailProtection",
		x509.ExtKeyUsageTimeStamping: "timeStamping", x509.ExtKeyUsageOCSPSigning: "OCSPSigning",
	}
	parts := make([]string, 0, len(us))
	for _, u := range us {
		if n, ok := names[u]; ok {
			parts = append(parts, n)
		} else {
			parts = append(parts, fmt.Sprintf("usage %d", int(u)))
		}
	}
	if len(parts) == 0 {
		return "only unknown usages"
	}
	return strings.Join(parts, ", ")
}

// quoteAll quotes each string and joins them with commas.
func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
