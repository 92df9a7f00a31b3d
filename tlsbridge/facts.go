package tlsbridge

import (
	"crypto/tls"
	"fmt"
	"time"
)

// HandshakeFacts are what logs and metrics record about one upstream
// handshake. The zero value describes no handshake.
type HandshakeFacts struct {
	Version     uint16        // tls.VersionTLS12, ...; 0 when the handshake failed
	CipherSuite uint16        // IANA id; 0 when the handshake failed
	Resumed     bool          // an abbreviated (resumed) handshake
	ALPN        string        // the negotiated proxy_ssl_alpn protocol, if any
	Duration    time.Duration // the handshake's wall time, as the dialer measured it
	PeerSubject string        // the upstream leaf's subject, RFC 2253 form; "" if none
	Reason      Reason        // ReasonNone on success
	Err         error         // the handshake error, nil on success
}

// FactsOf collects the facts of a handshake that took d and ended with err
// (cs is ignored when err is not nil).
func FactsOf(cs tls.ConnectionState, d time.Duration, err error) HandshakeFacts {
	f := HandshakeFacts{Duration: d, Reason: Classify(err), Err: err}
	if err != nil {
		return f
	}
	f.Version = cs.Version
	f.CipherSuite = cs.CipherSuite
	f.Resumed = cs.DidResume
	f.ALPN = cs.NegotiatedProtocol
	if len(cs.PeerCertificates) > 0 {
		f.PeerSubject = cs.PeerCertificates[0].Subject.String()
	}
	return f
}

// VersionName returns the negotiated version as NGINX spells it
// ("TLSv1.3"), or "-" when there is none.
func (f HandshakeFacts) VersionName() string {
	if f.Version == 0 {
		return "-"
	}
	return versionName(f.Version)
}

// CipherName returns the IANA name of the negotiated suite, or "-".
func (f HandshakeFacts) CipherName() string {
	if f.CipherSuite == 0 {
		return "-"
	}
	return tls.CipherSuiteName(f.CipherSuite)
}

// String returns a one-line summary for debug logs, e.g.
// "TLSv1.3 TLS_AES_128_GCM_SHA256 resumed 412µs CN=backend".
func (f HandshakeFacts) String() string {
	if f.Err != nil {
		return fmt.Sprintf("failed (%s) after %s: %v", f.Reason, f.Duration.Round(time.Microsecond), f.Err)
	}
	mode := "full"
	if f.Resumed {
		mode = "resumed"
	}
	return fmt.Sprintf("%s %s %s %s %s", f.VersionName(), f.CipherName(), mode, f.Duration.Round(time.Microsecond), f.PeerSubject)
}

// GroupName returns the key exchange group as OpenSSL names it
// ("X25519", "X25519MLKEM768", "prime256v1", "secp384r1"), for
// $upstream_ssl_curve; "" for none (a TLS 1.2 resumption, a TLS 1.3 one
// without a key exchange), and crypto/tls's name for any other.
func GroupName(id tls.CurveID) string {
	switch id {
	case 0:
		return ""
	case tls.X25519:
		return "X25519"
	case tls.X25519MLKEM768:
		return "X25519MLKEM768"
	case tls.SecP256r1MLKEM768:
		return "SecP256r1MLKEM768"
	case tls.SecP384r1MLKEM1024:
		return "SecP384r1MLKEM1024"
	case tls.CurveP256:
		return "prime256v1"
	case tls.CurveP384:
		return "secp384r1"
	case tls.CurveP521:
		return "secp521r1"
	}
	return id.String()
}
