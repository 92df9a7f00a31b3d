package tlsbridge

import (
	"crypto/tls"
	"fmt"
	"strings"
)

// protocolNames maps proxy_ssl_protocols (and MinProtocol/MaxProtocol)
// names to versions.
var protocolNames = map[string]uint16{
	"TLSv1":   tls.VersionTLS10,
	"TLSv1.1": tls.VersionTLS11,
	"TLSv1.2": tls.VersionTLS12,
	"TLSv1.3": tls.VersionTLS13,
}

// allVersions lists the versions crypto/tls can speak, lowest first.
var allVersions = []uint16{tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12, tls.VersionTLS13}

// parseProtocols turns proxy_ssl_protocols into the set of enabled
// versions; nil means the default TLSv1.2 TLSv1.3.
func parseProtocols(names []string) (map[uint16]bool, error) {
	if len(names) == 0 {
		return map[uint16]bool{tls.VersionTLS12: true, tls.VersionTLS13: true}, nil
	}
	set := make(map[uint16]bool)
	for _, n := range names {
		switch n {
		case "SSLv2", "SSLv3":
			return nil, fmt.Errorf("proxy_ssl_protocols: %s is not supported: crypto/tls implements TLSv1 to TLSv1.3 only", n)
		}
		v, ok := protocolNames[n]
		if !ok {
			return nil, fmt.Errorf("proxy_ssl_protocols: unknown protocol %q (want TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3)", n)
		}
		set[v] = true
	}
	return set, nil
}

// protocolSpan returns MinVersion and MaxVersion for the enabled set,
// clipped to [minProto, maxProto] (0 = open). crypto/tls takes a range, not
// a set: like OpenSSL's client (ssl_get_min_max_version), a hole disables
// every version below it, so {TLSv1, TLSv1.2} offers TLS 1.2 only; that is
// reported as a warning. TLSv1 and TLSv1.1 get a warning too.
func protocolSpan(enabled map[uint16]bool, minProto, maxProto uint16, warnings *[]string) (lo, hi uint16, err error) {
	for _, v := range allVersions {
		if (minProto != 0 && v < minProto) || (maxProto != 0 && v > maxProto) {
			delete(enabled, v)
		}
	}
	for i := len(allVersions) - 1; i >= 0; i-- {
		v := allVersions[i]
		if !enabled[v] {
			if hi != 0 {
				break
			}
			continue
		}
		if hi == 0 {
			hi = v
		}
		lo = v
	}
	if hi == 0 {
		return 0, 0, fmt.Errorf("no protocol version is left enabled (proxy_ssl_protocols with MinProtocol/MaxProtocol)")
	}
	var dropped []string
	for _, v := range allVersions {
		if enabled[v] && v < lo {
			dropped = append(dropped, versionName(v))
		}
	}
	if len(dropped) > 0 {
		*warnings = append(*warnings, fmt.Sprintf("proxy_ssl_protocols: %s not used: versions must be contiguous and, as in OpenSSL, a gap disables every version below it (offering %s to %s)",
			strings.Join(dropped, ", "), versionName(lo), versionName(hi)))
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		if v >= lo && v <= hi {
			*warnings = append(*warnings, fmt.Sprintf("%s is enabled: it is deprecated (RFC 8996)", versionName(v)))
		}
	}
	return lo, hi, nil
}

// versionName returns the NGINX spelling of a version.
func versionName(v uint16) string {
	for n, x := range protocolNames {
		if x == v {
			return n
		}
	}
	return tls.VersionName(v)
}
