package conf

import (
	"fmt"
	"net/url"
	"strings"
)

// Identity is one identity an upstream's certificate may carry to be
// accepted (proxy_ssl_verify_identity): a URI SAN (a SPIFFE ID), a DNS
// SAN or the subject's CN. It replaces the proxy_ssl_name check, as
// Envoy's match_subject_alt_names and ghostunnel's --verify-uri do;
// NGINX has no such check.
type Identity struct {
	// Kind is "uri", "dns" or "cn".
	Kind string
	// Value is matched exactly (DNS names and CNs without regard to
	// case); with Prefix, Value ends before the "*" that ended it and a
	// URI matches when it starts with Value.
	Value  string
	Prefix bool
}

// String returns the identity as written: "uri:spiffe://example.org/x".
func (id Identity) String() string {
	if id.Prefix {
		return id.Kind + ":" + id.Value + "*"
	}
	return id.Kind + ":" + id.Value
}

// ParseIdentity parses "uri:VALUE", "dns:NAME" or "cn:NAME". A URI must be
// absolute with a host (a SPIFFE ID: spiffe://trust-domain/path) and may
// end in "*" to match every URI it starts (spiffe://example.org/ns/prod/*);
// a DNS name is one the certificate's SANs carry as written, compared
// without regard to case ("dns:*.example.org" matches a wildcard SAN,
// not a name under it).
func ParseIdentity(s string) (Identity, error) {
	kind, value, ok := strings.Cut(s, ":")
	if !ok || value == "" {
		return Identity{}, fmt.Errorf("identity %q: want uri:VALUE, dns:NAME or cn:NAME", s)
	}
	id := Identity{Kind: kind, Value: value}
	switch kind {
	case "uri":
		if strings.HasSuffix(value, "*") {
			id.Prefix, id.Value = true, strings.TrimSuffix(value, "*")
		}
		if strings.Contains(id.Value, "*") {
			return Identity{}, fmt.Errorf("identity %q: \"*\" only at the end of a URI", s)
		}
		u, err := url.Parse(id.Value)
		if err != nil || !u.IsAbs() || u.Host == "" {
			return Identity{}, fmt.Errorf("identity %q: not an absolute URI with a host (spiffe://trust-domain/path)", s)
		}
		if u.Scheme == "spiffe" && !id.Prefix && (u.Path == "" || u.Path == "/") {
			return Identity{}, fmt.Errorf("identity %q: a SPIFFE ID names a workload: spiffe://%s/path (or %s/* for every workload of the trust domain)", s, u.Host, id.Value)
		}
	case "dns":
		name := strings.TrimPrefix(value, "*.")
		if name == "" || strings.ContainsAny(name, "*/:@ ") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") {
			return Identity{}, fmt.Errorf("identity %q: not a DNS name", s)
		}
	case "cn":
	default:
		return Identity{}, fmt.Errorf("identity %q: unknown kind %q (uri, dns, cn)", s, kind)
	}
	return id, nil
}
