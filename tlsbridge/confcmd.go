package tlsbridge

import (
	"crypto/tls"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// confResult is what the proxy_ssl_conf_command directives change.
type confResult struct {
	// certificate and privateKey are the Certificate and PrivateKey
	// commands: files that replace proxy_ssl_certificate and its key, as
	// SSL_CONF_cmd loads them into the context after NGINX's own.
	certificate, privateKey string
	cipherString            string
	curves                  []tls.CurveID
	minProto, maxProto      uint16 // 0: open
	warnings                []string
}

// groupNames maps OpenSSL group names (case-insensitive) to crypto/tls.
var groupNames = map[string]tls.CurveID{
	"x25519":             tls.X25519,
	"x25519mlkem768":     tls.X25519MLKEM768,
	"secp256r1mlkem768":  tls.SecP256r1MLKEM768,
	"secp384r1mlkem1024": tls.SecP384r1MLKEM1024,
	"p-256":              tls.CurveP256,
	"prime256v1":         tls.CurveP256,
	"secp256r1":          tls.CurveP256,
	"p-384":              tls.CurveP384,
	"secp384r1":          tls.CurveP384,
	"p-521":              tls.CurveP521,
	"secp521r1":          tls.CurveP521,
}

// goTLS13Suites are the TLS 1.3 suites crypto/tls offers; it cannot offer
// fewer.
var goTLS13Suites = []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}

// knownTLS13Suites are the TLS 1.3 suite names OpenSSL accepts.
var knownTLS13Suites = []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"}

// goSigAlgs are the signature algorithms a crypto/tls client offers, in
// TLS 1.3 (IANA) spelling; it has no setting to offer fewer.
var goSigAlgs = []string{
	"rsa_pss_rsae_sha256", "ecdsa_secp256r1_sha256", "ed25519", "rsa_pss_rsae_sha384", "rsa_pss_rsae_sha512",
	"rsa_pkcs1_sha256", "rsa_pkcs1_sha384", "rsa_pkcs1_sha512", "ecdsa_secp384r1_sha384", "ecdsa_secp521r1_sha512",
}

// sigAlgAliases maps OpenSSL's "ALG+HASH" spelling to the IANA name.
var sigAlgAliases = map[string]string{
	"rsa-pss+sha256": "rsa_pss_rsae_sha256", "rsa-pss+sha384": "rsa_pss_rsae_sha384", "rsa-pss+sha512": "rsa_pss_rsae_sha512",
	"pss+sha256": "rsa_pss_rsae_sha256", "pss+sha384": "rsa_pss_rsae_sha384", "pss+sha512": "rsa_pss_rsae_sha512",
	"rsa+sha256": "rsa_pkcs1_sha256", "rsa+sha384": "rsa_pkcs1_sha384", "rsa+sha512": "rsa_pkcs1_sha512", "rsa+sha1": "rsa_pkcs1_sha1",
	"ecdsa+sha256": "ecdsa_secp256r1_sha256", "ecdsa+sha384": "ecdsa_secp384r1_sha384", "ecdsa+sha512": "ecdsa_secp521r1_sha512", "ecdsa+sha1": "ecdsa_sha1",
	"ed25519": "ed25519", "ed448": "ed448",
}

// harmlessOptions are Options values that change nothing for a crypto/tls
// client (it never compresses, never renegotiates, and server-side
// preferences do not apply to a client).
var harmlessOptions = map[string]string{
	"nocompression":       "",
	"-compression":        "",
	"norenegotiation":     "",
	"ignoreunexpectedeof": "",
	"serverpreference":    "server-side option, no effect on the upstream leg",
	"-serverpreference":   "",
	"prioritizechacha":    "server-side option, no effect on the upstream leg",
	"-prioritizechacha":   "",
}

// applyConfCommands interprets proxy_ssl_conf_command. crypto/tls exposes
// only some of OpenSSL's knobs; a command it cannot honour is an error, so
// `tlsrelay -t` fails instead of silently ignoring it. Names match
// case-insensitively, as SSL_CONF_cmd does for configuration files.
func applyConfCommands(cmds []ConfCommand, cipherString string) (confResult, error) {
	r := confResult{cipherString: cipherString}
	for _, c := range cmds {
		val := strings.TrimSpace(c.Value)
		fail := func(format string, args ...any) error {
			return fmt.Errorf("proxy_ssl_conf_command %s %q: %s", c.Name, c.Value, fmt.Sprintf(format, args...))
		}
		switch strings.ToLower(c.Name) {
		case "groups", "curves":
			r.curves = r.curves[:0]
			for _, g := range strings.Split(val, ":") {
				optional := strings.HasPrefix(g, "?")
				g = strings.TrimPrefix(g, "?")
				id, ok := groupNames[strings.ToLower(g)]
				if !ok {
					if optional {
						r.warnings = append(r.warnings, fmt.Sprintf("proxy_ssl_conf_command %s: group %q skipped: crypto/tls does not implement it", c.Name, g))
						continue
					}
					return r, fail("group %q is not implemented by crypto/tls (have X25519, X25519MLKEM768, SecP256r1MLKEM768, SecP384r1MLKEM1024, P-256, P-384, P-521)", g)
				}
				if !slices.Contains(r.curves, id) {
					r.curves = append(r.curves, id)
				}
			}
			if len(r.curves) == 0 {
				return r, fail("no group left")
			}
		case "minprotocol", "maxprotocol":
			var v uint16
			switch val {
			case "None", "none", "":
			case "SSLv3":
				return r, fail("SSLv3 is not supported by crypto/tls")
			default:
				var ok bool
				if v, ok = protocolNames[val]; !ok {
					return r, fail("unknown protocol (want TLSv1, TLSv1.1, TLSv1.2, TLSv1.3 or None)")
				}
			}
			if strings.EqualFold(c.Name, "minprotocol") {
				r.minProto = v
			} else {
				r.maxProto = v
			}
		case "cipherstring":
			r.cipherString = val
		case "ciphersuites":
			var list []string
			for _, s := range strings.Split(val, ":") {
				if s == "" {
					continue
				}
				if !slices.Contains(knownTLS13Suites, s) {
					return r, fail("unknown TLS 1.3 cipher suite %q", s)
				}
				list = append(list, s)
			}
			if missing := without(goTLS13Suites, list); len(missing) > 0 {
				if len(list) == 0 {
					return r, fail("an empty list disables TLS 1.3 in OpenSSL; use proxy_ssl_protocols without TLSv1.3 instead")
				}
				return r, fail("crypto/tls always offers the TLS 1.3 suites %s and cannot leave out %s; list all three (order is crypto/tls's own) or disable TLSv1.3",
					strings.Join(goTLS13Suites, ":"), strings.Join(missing, ":"))
			}
		case "signaturealgorithms", "sigalgs":
			var list []string
			for _, s := range strings.Split(val, ":") {
				if s == "" {
					continue
				}
				n := strings.ToLower(s)
				if a, ok := sigAlgAliases[n]; ok {
					n = a
				}
				list = append(list, n)
			}
			if missing := without(goSigAlgs, list); len(missing) > 0 {
				return r, fail("crypto/tls offers a fixed set of signature algorithms and cannot leave out %s (its set: %s)",
					strings.Join(missing, ":"), strings.Join(goSigAlgs, ":"))
			}
		case "certificate":
			if val == "" {
				return r, fail("no file")
			}
			r.certificate = val
		case "privatekey":
			if val == "" {
				return r, fail("no file")
			}
			r.privateKey = val
		case "options":
			for _, o := range strings.Split(val, ",") {
				o = strings.TrimSpace(o)
				note, ok := harmlessOptions[strings.ToLower(o)]
				if !ok {
					return r, fail("option %q is not supported (accepted: %s)", o, strings.Join(sortedKeys(harmlessOptions), ", "))
				}
				if note != "" {
					r.warnings = append(r.warnings, fmt.Sprintf("proxy_ssl_conf_command Options %s: %s", o, note))
				}
			}
		default:
			return r, fmt.Errorf("proxy_ssl_conf_command %q is not supported (supported: Groups, Curves, MinProtocol, MaxProtocol, CipherString, Ciphersuites, SignatureAlgorithms, Options, Certificate, PrivateKey)", c.Name)
		}
	}
	return r, nil
}

// without returns the elements of want that are not in have.
func without(want, have []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			out = append(out, w)
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
