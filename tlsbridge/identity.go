package tlsbridge

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/tlsrelay/tlsrelay/engine/conf"
)

// identityMatches reports whether leaf carries id (conf.Identity:
// proxy_ssl_verify_identity).
func identityMatches(id conf.Identity, leaf *x509.Certificate) bool {
	switch id.Kind {
	case "uri":
		for _, u := range leaf.URIs {
			if s := u.String(); s == id.Value || id.Prefix && strings.HasPrefix(s, id.Value) {
				return true
			}
		}
	case "dns":
		for _, n := range leaf.DNSNames {
			if strings.EqualFold(n, id.Value) {
				return true
			}
		}
	case "cn":
		return strings.EqualFold(leaf.Subject.CommonName, id.Value)
	}
	return false
}

// checkIdentities accepts a leaf that carries one of ids; the error names
// what it carries instead. It runs in crypto/tls's VerifyConnection.
func checkIdentities(leaf *x509.Certificate, ids []conf.Identity) error {
	for _, id := range ids {
		if identityMatches(id, leaf) {
			return nil
		}
	}
	var has []string
	for _, u := range leaf.URIs {
		has = append(has, "uri:"+u.String())
	}
	for _, n := range leaf.DNSNames {
		has = append(has, "dns:"+n)
	}
	if leaf.Subject.CommonName != "" {
		has = append(has, "cn:"+leaf.Subject.CommonName)
	}
	want := make([]string, len(ids))
	for i, id := range ids {
		want[i] = id.String()
	}
	carries := "none"
	if len(has) > 0 {
		carries = strings.Join(has, " ")
	}
	return &VerifyError{Reason: ReasonNameMismatch, Err: errNoIdentity, Detail: fmt.Sprintf(
		"upstream certificate carries none of the identities of proxy_ssl_verify_identity (%s); it carries: %s",
		strings.Join(want, " "), carries)}
}

// errNoIdentity is the cause of checkIdentities' errors.
var errNoIdentity = errors.New("no accepted identity")
